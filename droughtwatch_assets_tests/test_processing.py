import numpy as np
import pytest

from droughtwatch_assets.core.features import BAND_INDEX, BANDS, FEATURES
from droughtwatch_assets.data import processing
from droughtwatch_assets.records.tfrecord import read_processed, read_raw


def bands_with(values: dict[str, int], fill: int = 0, n: int = 1) -> np.ndarray:
    bands = np.full((n, len(BANDS), 65, 65), fill, dtype=np.uint8)
    for band, value in values.items():
        bands[:, BAND_INDEX[band]] = value
    return bands


def test_normalise_is_float32_division_by_255():
    values = np.arange(256, dtype=np.uint8)
    expected = values.astype(np.float32) / np.float32(255.0)
    assert processing.normalise(values).dtype == np.float32
    np.testing.assert_array_equal(processing.normalise(values), expected)


@pytest.mark.parametrize("maximum, kept", [(0, False), (1, False), (2, True)])
def test_veto_at_uint8_max(maximum, kept):
    bands = bands_with({})
    bands[0, 7, 10, 10] = maximum
    assert processing.keep_mask(bands).tolist() == [kept]
    # the original's rule on the normalised image
    assert bool(processing.normalise(bands).max() > np.float32(1 / 255)) == kept


def test_indices_match_their_formulas():
    rng = np.random.default_rng(1)
    bands = rng.integers(0, 256, size=(3, len(BANDS), 65, 65), dtype=np.uint8)
    out = processing.compute_features(bands, ("NDVI", "NDMI", "EVI", "B3"))
    b = {name: bands[:, BAND_INDEX[name]].astype(np.float32) / np.float32(255) for name in BANDS}
    ndvi = (b["B5"] - b["B4"]) / (b["B5"] + b["B4"] + np.float32(1e-7))
    ndmi = (b["B5"] - b["B6"]) / (b["B5"] + b["B6"] + np.float32(1e-7))
    with np.errstate(divide="ignore", invalid="ignore"):
        evi = 2.5 * (b["B5"] - b["B4"]) / (b["B5"] + 6 * b["B4"] - 7.5 * b["B2"] + 1)
    assert out.shape == (3, 65, 65, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], ndvi, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[..., 1], ndmi, rtol=1e-6, atol=1e-7)
    finite = np.isfinite(evi)
    np.testing.assert_allclose(out[..., 2][finite], evi[finite], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[..., 3], b["B3"])


def test_evi_is_finite_everywhere_and_equals_the_original_where_it_is_finite():
    # every (B2, B4, B5) uint8 triple, through the original float32 formula
    b2, b4, b5 = (v.ravel().astype(np.uint8) for v in np.meshgrid(*[np.arange(256)] * 3, indexing="ij"))
    n = b2.size
    bands = {"B2": processing.normalise(b2), "B4": processing.normalise(b4), "B5": processing.normalise(b5)}
    with np.errstate(divide="ignore", invalid="ignore"):
        original = (
            np.float32(2.5)
            * (bands["B5"] - bands["B4"])
            / (bands["B5"] + np.float32(6) * bands["B4"] - np.float32(7.5) * bands["B2"] + np.float32(1))
        )
    from droughtwatch_assets.core.features import evi

    ours = evi(bands)
    assert n == 256**3
    assert (~np.isfinite(original)).sum() > 0  # the unguarded formula does hit a zero denominator
    assert np.isfinite(ours).all()
    finite = np.isfinite(original)
    np.testing.assert_array_equal(ours[finite], original[finite])
    assert (ours[~finite] == 0).all()


def test_real_shard_keeps_79_of_81(real_shard, tmp_path):
    stats = processing.process_shard(real_shard, tmp_path / "out", ("B2", "B3", "B4", "B5"))
    assert (stats.records, stats.vetoed, stats.vetoed_indices) == (79, 2, [39, 46])
    assert stats.class_counts == [46, 14, 14, 5]
    processed = read_processed(tmp_path / "out", 4)
    raw = read_raw(real_shard)
    keep = np.ones(81, bool)
    keep[[39, 46]] = False
    expected = np.moveaxis(raw.bands[keep][:, [1, 2, 3, 4]], 1, -1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(processed.images, expected)
    np.testing.assert_array_equal(processed.labels, raw.labels[keep])
    assert processed.ids == [i for i, k in zip(raw.ids, keep) if k]


def test_small_blocks_give_the_same_output(real_shard, tmp_path):
    processing.process_shard(real_shard, tmp_path / "a", FEATURES, block_size=7)
    processing.process_shard(real_shard, tmp_path / "b", FEATURES, block_size=256)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_all_features_are_finite_on_the_real_shard(real_shard, tmp_path):
    stats = processing.process_shard(real_shard, tmp_path / "out", FEATURES)
    images = read_processed(tmp_path / "out", len(FEATURES)).images
    assert np.isfinite(images).all()
    assert images[..., :11].min() >= 0 and images[..., :11].max() <= 1
    assert stats.records == 79


def test_parallel_processing_writes_the_same_bytes_as_one_process(tmp_path):
    from droughtwatch_assets.data.datasets import build_raw_dataset, md5_of
    from droughtwatch_assets.data.sample import SampleSpec, write_sample

    shards = write_sample(tmp_path / "sample", SampleSpec(train_records=1200, val_records=400, records_per_shard=200))
    raw = build_raw_dataset(shards, tmp_path / "raw", {"type": "sample"})
    outputs = {}
    for workers in (1, 2):
        dataset = processing.process_dataset(
            raw, tmp_path / f"out-{workers}", "all", FEATURES, processing.ProcessingOptions(workers=workers)
        )
        outputs[workers] = (
            {f"{p.parent.name}/{p.name}": md5_of(p) for p in dataset.root.glob("*/part-*")},
            (dataset.root / "manifest.json").read_bytes(),
        )
    assert len(outputs[1][0]) == 8
    assert outputs[1] == outputs[2]


@pytest.mark.parametrize("cores, workers", [(None, 1), (1, 1), (2, 2), (8, 8), (64, 8)])
def test_processing_takes_one_worker_per_core_up_to_eight(cores, workers, monkeypatch):
    monkeypatch.setattr(processing.os, "cpu_count", lambda: cores)
    assert processing.default_workers() == workers
