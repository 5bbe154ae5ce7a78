"""Drift of the inputs (PSI per channel against a model's drift reference) and of the predictions (chi-square)."""

import json
import math
import shutil

import numpy as np
import pytest
from scipy.stats import chi2

from droughtwatch_assets.core.features import BAND_INDEX
from droughtwatch_assets.data.datasets import build_raw_dataset, find_split_shards
from droughtwatch_assets.data.processing import ProcessingOptions, process_dataset
from droughtwatch_assets.data.sample import CLASS_PRIOR, SampleSpec, write_sample
from droughtwatch_assets.model import drift
from droughtwatch_assets.model.artifacts import DRIFT_REFERENCE
from droughtwatch_assets.model.evaluate import EvaluationRecord, class_rates
from droughtwatch_assets.records.tfrecord import encode_raw_example, read_raw
from droughtwatch_assets.records.writer import RecordWriter
from droughtwatch_assets.wiring.resources import LocalStore  # the drift check's registry
from droughtwatch_assets_tests.conftest import model_config

BASELINE = ("B2", "B3", "B4", "B5")
TINY = SampleSpec(train_records=192, val_records=64, records_per_shard=128)


def processed(raw_folder, root, features=BASELINE):
    raw = build_raw_dataset(find_split_shards(raw_folder), root / "raw", {"type": "folder"})
    return process_dataset(raw, root / "processed", "test", features, ProcessingOptions(workers=1))


def scaled_copy(raw_folder, target, band: str, factor: float):
    """The raw shards with one band's uint8 values scaled, rounded and clipped to 0..255 (a sensor's gain change)."""
    for source in sorted(raw_folder.glob("*/part-*")):
        block = read_raw(source)
        bands = block.bands.copy()
        scaled = np.rint(bands[:, BAND_INDEX[band]].astype(np.float32) * factor)
        bands[:, BAND_INDEX[band]] = np.clip(scaled, 0, 255).astype(np.uint8)
        (target / source.parent.name).mkdir(parents=True, exist_ok=True)
        with RecordWriter(target / source.parent.name / source.name) as writer:
            for image, label, name in zip(bands, block.labels, block.ids):
                writer.write(encode_raw_example(image, int(label), name))
    return target


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The tiny generated sample as raw shards, and processed with the baseline features."""
    root = tmp_path_factory.mktemp("sample")
    write_sample(root / "raw_shards", TINY)
    return root / "raw_shards", processed(root / "raw_shards", root)


@pytest.fixture(scope="module")
def reference(sample):
    return drift.reference_from(sample[1])


def by_feature(report: drift.DriftReport) -> dict[str, drift.ChannelDrift]:
    return {row.feature: row for row in report.rows}


def test_the_reference_holds_decile_bins_of_a_seeded_pixel_sample(sample, reference):
    dataset = sample[1]
    assert reference.features == list(BASELINE) and reference.data_version == dataset.manifest.data_version
    assert reference.records == dataset.records("train") and reference.pixels >= 200_000
    assert reference.quantiles == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert all(len(edges) == 9 for edges in reference.edges)
    # bands take 256 values, so a decile edge sits on a value that many pixels share: bins are near-deciles
    assert all(0.05 < share < 0.15 for shares in reference.expected for share in shares)
    assert all(sum(shares) == pytest.approx(1) for shares in reference.expected)
    assert reference.vetoed_fraction == dataset.manifest.splits["train"].vetoed / 192
    assert reference.class_priors == [c / dataset.records("train") for c in dataset.class_counts("train")]
    assert drift.DriftReference.from_json(reference.to_json(), "here") == reference
    assert drift.reference_from(dataset) == reference  # the same seed draws the same pixels


def test_the_same_data_gives_a_psi_of_zero(sample, reference):
    report = drift.compare(reference, sample[1])
    assert [row.feature for row in report.rows] == [*BASELINE, drift.BLANK]
    assert report.max_psi < 1e-12 and report.status == "ok" and report.drifted == []


def test_one_band_scaled_by_1_2_is_flagged_on_that_channel_only(sample, reference, tmp_path):
    brighter = processed(scaled_copy(sample[0], tmp_path / "raw_shards", "B4", 1.2), tmp_path)
    rows = by_feature(drift.compare(reference, brighter))
    assert rows["B4"].psi >= 0.2 and rows["B4"].status == "fail"
    assert rows["B4"].mean_now > rows["B4"].reference_mean * 1.15
    assert all(rows[name].psi < 1e-12 and rows[name].status == "ok" for name in ("B2", "B3", "B5", drift.BLANK))


def test_records_from_another_region_and_season_are_flagged(real_folder, reference, tmp_path):
    """The real shard (another place and time than the generated sample's) against the sample's reference."""
    report = drift.compare(reference, processed(real_folder, tmp_path))
    assert report.status == "fail" and report.max_psi >= 0.2
    assert by_feature(report)[drift.BLANK].mean_now == pytest.approx(2 / 81)  # the shard's two blank records


def test_the_default_limits_warn_from_0_1_and_fail_from_0_2_inclusive():
    limits = drift.Limits()
    assert (limits.warn, limits.fail) == (0.1, 0.2)
    below_warn, below_fail = np.nextafter(0.1, 0), np.nextafter(0.2, 0)
    values = (0.0, below_warn, 0.1, 0.15, below_fail, 0.2, 3.0)
    assert [limits.status(v) for v in values] == ["ok", "ok", "warn", "warn", "warn", "fail", "fail"]


def test_other_limits_move_the_boundaries():
    limits = drift.Limits(warn=0.5, fail=1.0)
    assert [limits.status(v) for v in (0.3, 0.5, 0.99, 1.0)] == ["ok", "warn", "warn", "fail"]


def test_psi_of_known_shares():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # -0.1 * ln(0.4 / 0.5) + 0.1 * ln(0.4 / 0.3) + 0 = 0.1 * ln(5 / 3)
    assert drift.psi([0.5, 0.3, 0.2], [0.4, 0.4, 0.2]) == pytest.approx(0.0510826, abs=1e-7)


def test_an_empty_bin_counts_as_a_share_of_1e_4():
    # bins 2 and 3 trade places: 2 * (0.5 - 0.0001) * ln(0.5 / 0.0001) = 0.9998 * ln(5000)
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.0, 0.5]) == pytest.approx(8.5154898, abs=1e-7)


def test_shares_put_a_value_on_an_edge_into_the_bin_above_it():
    values = np.array([0.5, 1.0, 1.5, 2.0, 2.0, 2.999, 3.0, 7.0])
    # bins (-inf, 1), [1, 2), [2, 3), [3, inf): 0.5 | 1.0 1.5 | 2.0 2.0 2.999 | 3.0 7.0
    assert drift.shares(values, [1.0, 2.0, 3.0]).tolist() == [1 / 8, 2 / 8, 3 / 8, 2 / 8]
    assert drift.shares(np.array([5.0]), [1.0, 2.0]).tolist() == [0, 0, 1]


def test_data_with_other_features_is_not_compared(sample, reference, tmp_path):
    other = processed(sample[0], tmp_path, ("B4", "B3", "B2"))
    with pytest.raises(ValueError, match="holds features B4, B3, B2; the reference was made from B2, B3, B4, B5"):
        drift.compare(reference, other)


def test_a_model_without_a_reference_reads_as_none(tmp_path):
    assert drift.read_reference(tmp_path / "drift_reference.json") is None


def priors(shares) -> drift.ExpectedClasses:
    return drift.ExpectedClasses(shares, "training priors")


def val_rates(shares) -> drift.ExpectedClasses:
    return drift.ExpectedClasses(shares, "val predictions")


def test_uniform_predictions_against_skewed_priors_are_flagged():
    result = drift.class_drift([250, 250, 250, 250], priors(CLASS_PRIOR))
    assert result.dof == 3 and result.p_value < 0.01 and result.drifted
    assert "not distributed as in training (p < 0.01)" in result.line()


def test_predictions_matching_the_priors_are_not_flagged():
    counts = np.rint(1000 * CLASS_PRIOR).astype(int)
    result = drift.class_drift(counts, priors(CLASS_PRIOR * 86317))  # counts or shares: the same priors
    assert result.statistic < 0.1 and result.p_value > 0.9 and not result.drifted
    assert result.line().endswith("consistent with training")


def test_a_predicted_class_that_training_never_had_is_drift():
    result = drift.class_drift([5, 5, 0, 1], priors([0.5, 0.5, 0.0, 0.0]))
    assert result.statistic == np.inf and result.p_value == 0 and result.drifted


def test_the_chi_square_of_counts_against_priors_with_two_degrees_of_freedom():
    # n = 100, expected 50, 25, 25: (30 - 50)^2 / 50 + (50 - 25)^2 / 25 + (20 - 25)^2 / 25 = 8 + 25 + 1 = 34;
    # for 2 dof the tail is exp(-x / 2)
    result = drift.class_drift([30, 50, 20], priors([0.5, 0.25, 0.25]))
    assert result.statistic == pytest.approx(34) and result.dof == 2 and result.predictions == 100
    assert result.p_value == pytest.approx(math.exp(-17), rel=1e-12) and result.drifted


def test_priors_given_as_counts_are_normalised_and_a_class_training_never_had_is_left_out():
    # expected 100 * 2/4 and 100 * 2/4 = 50, 50; class 2 (prior 0) is dropped: (40 - 50)^2 / 50 * 2 = 4, 1 dof;
    # for 1 dof the tail is erfc(sqrt(x / 2))
    result = drift.class_drift([40, 60, 0], priors([2, 2, 0]))
    assert result.statistic == pytest.approx(4) and result.dof == 1
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(2)), rel=1e-12) and not result.drifted


def test_predictions_are_drifted_only_below_a_p_value_of_0_01():
    def drifted(p_value: float) -> bool:
        return drift.ClassDrift(statistic=1.0, dof=2, p_value=p_value, predictions=10, expected=priors([1, 1])).drifted

    assert [drifted(p) for p in (0.0, np.nextafter(0.01, 0), 0.01, 0.02, 0.5)] == [True, True, False, False, False]


@pytest.mark.parametrize(
    "dof, closed_form",
    [
        (1, lambda x: math.erfc(math.sqrt(x / 2))),
        (2, lambda x: math.exp(-x / 2)),
        (3, lambda x: math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)),
        (4, lambda x: math.exp(-x / 2) * (1 + x / 2)),
    ],
)
def test_the_chi_square_tail_matches_its_closed_forms(dof, closed_form):
    for statistic in (0.01, 0.5, 3.0, 11.34, 40.0):
        assert drift.chi_square_sf(statistic, dof) == pytest.approx(closed_form(statistic), rel=1e-9)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7])
def test_the_chi_square_tail_matches_scipy(dof):
    for statistic in (0.01, 0.5, 3.0, 11.34, 40.0, 400.0):
        assert drift.chi_square_sf(statistic, dof) == pytest.approx(chi2.sf(statistic, dof), rel=1e-9, abs=1e-300)


def test_pixels_come_from_every_shard_of_the_split(sample):
    dataset = sample[1]
    few = drift.pixel_sample(dataset, records=150, pixels=1500)
    assert few.records == 150 and few.values.shape == (1500, 4)
    first_shard = dataset.manifest.splits["train"].shards[0].records
    assert first_shard < 150  # so the draw reached the second shard


def test_an_empty_split_has_nothing_to_compare(sample, tmp_path):
    folder = tmp_path / "blank"
    shutil.copytree(sample[0], folder)
    for shard in (folder / "train").glob("part-*"):
        block = read_raw(shard)
        with RecordWriter(shard) as writer:
            for label in block.labels:
                writer.write(encode_raw_example(np.zeros((11, 65, 65), np.uint8), int(label)))
    with pytest.raises(drift.NothingToCompare, match="the train split has no records"):
        drift.pixel_sample(processed(folder, tmp_path))


def test_counts_in_the_models_own_val_proportions_give_a_chi_square_of_zero():
    # n = 60, expected 60 * (1/2, 1/6, 1/6, 1/6) = 30, 10, 10, 10: every term (observed - expected)^2 / expected is 0
    result = drift.class_drift([30, 10, 10, 10], val_rates([0.5, 1 / 6, 1 / 6, 1 / 6]))
    assert result.statistic == pytest.approx(0, abs=1e-12) and result.dof == 3 and result.predictions == 60
    assert result.p_value == pytest.approx(1) and not result.drifted
    # shares that are binary fractions leave no rounding: 80 * (1/2, 1/4, 1/8, 1/8) = 40, 20, 10, 10 exactly
    exact = drift.class_drift([40, 20, 10, 10], val_rates([0.5, 0.25, 0.125, 0.125]))
    assert exact.statistic == 0 and exact.p_value == 1
    assert exact.summary() == (
        "class drift against the model's predicted class rates on val: chi-square 0.00 (3 dof), p = 1: "
        "consistent with the predictions on val"
    )


def test_counts_away_from_the_models_val_proportions_are_drift_against_them():
    # n = 60 against rates (1/2, 1/6, 1/6, 1/6): expected 30, 10, 10, 10;
    # (15 - 30)^2 / 30 + (15 - 10)^2 / 10 * 3 = 7.5 + 7.5 = 15, 3 dof: erfc(sqrt(7.5)) + 2 * sqrt(7.5 / pi) e^-7.5
    result = drift.class_drift([15, 15, 15, 15], val_rates([0.5, 1 / 6, 1 / 6, 1 / 6]))
    assert result.statistic == pytest.approx(15) and result.dof == 3
    tail = math.erfc(math.sqrt(7.5)) + 2 * math.sqrt(7.5 / math.pi) * math.exp(-7.5)
    assert result.p_value == pytest.approx(tail, rel=1e-12) and result.p_value == pytest.approx(chi2.sf(15, 3))
    assert result.drifted and result.summary() == (
        f"class drift against the model's predicted class rates on val: chi-square 15.00 (3 dof), p = {tail:.3g}: "
        "the predicted classes are not distributed as on val (p < 0.01)"
    )


def test_the_predicted_class_rates_travel_with_the_reference_and_are_what_predictions_are_tested_against(
    reference,
):
    assert reference.predicted_class_rates is None  # made at training, before the model is evaluated
    published = reference.with_predicted_class_rates([0.5, 0.25, 0.125, 0.125])
    assert drift.DriftReference.from_json(published.to_json(), "here") == published
    assert published.predicted_class_rates == [0.5, 0.25, 0.125, 0.125]
    assert published.class_priors == reference.class_priors  # the label priors stay beside them
    assert published.expected_classes() == drift.ExpectedClasses([0.5, 0.25, 0.125, 0.125], "val predictions")
    with pytest.raises(ValueError, match="3 predicted class rates for 4 classes"):
        reference.with_predicted_class_rates([0.5, 0.25, 0.25])


def test_a_reference_published_before_the_predicted_class_rates_falls_back_to_the_priors_and_says_why(reference):
    older = json.loads(reference.to_json())
    del older["predicted_class_rates"]  # as published before the field existed
    read = drift.DriftReference.from_json(json.dumps(older), "here")
    expected = read.expected_classes()
    assert expected.shares == reference.class_priors and expected.basis == "training priors"
    result = drift.class_drift([250, 250, 250, 250], expected)
    assert result.summary().startswith(
        "class drift against the training priors (the model's drift reference predates its predicted class rates "
        "on val; publish the model again to record them): chi-square "
    )


def evaluation_record(md5: str, rates):
    return EvaluationRecord(md5, "v1", 8, 0.5, 0.5, [0.0] * 4, [0.0] * 4, [0.0] * 4, [[0] * 4] * 4, rates)


@pytest.mark.parametrize(
    "record, basis, note",
    [
        (evaluation_record("m1", [0.5, 0.5, 0, 0]), "val predictions", ""),
        (
            evaluation_record("other", [0.5, 0.5, 0, 0]),
            "training priors",
            "model_evaluation judged another model file; materialise model_evaluation again",
        ),
        (
            evaluation_record("m1", None),
            "training priors",
            "model_evaluation was materialised before it recorded predicted class rates; materialise it again",
        ),
    ],
    ids=["the model's own evaluation", "another model's evaluation", "an evaluation from before the rates"],
)
def test_the_predictions_asset_takes_the_rates_of_its_models_own_evaluation_only(record, basis, note):
    expected = drift.expected_from_evaluation(record, "m1", [6, 1, 1, 0])
    assert (expected.basis, expected.note) == (basis, note)
    assert expected.shares == ([0.5, 0.5, 0, 0] if basis == "val predictions" else [6, 1, 1, 0])


def test_the_predicted_class_rates_are_the_share_of_each_class_among_the_predictions():
    # 8 predictions: four 0s, two 1s, none 2, two 3s
    assert class_rates(np.array([0, 3, 0, 1, 0, 3, 1, 0])) == [0.5, 0.25, 0.0, 0.25]


def reference_of(data_version: str) -> str:
    """A drift reference told apart by its data version (its other figures do not matter here)."""
    return drift.DriftReference(
        features=list(BASELINE),
        data_version=data_version,
        split="train",
        seed=0,
        sample_records=1,
        sample_pixels=1,
        records=1,
        pixels=1,
        quantiles=[0.5],
        edges=[[0.5]] * 4,
        expected=[[0.5, 0.5]] * 4,
        means=[0.5] * 4,
        vetoed_fraction=0.0,
        class_priors=[0.25] * 4,
    ).to_json()


def test_the_published_reference_of_a_feature_set_is_the_newest_publication_trained_on_it(tmp_path):
    store = LocalStore(base_dir=str(tmp_path))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not a real model: the registry copies bytes")

    def publish(name: str, feature_set: str, data_version: str | None):
        attachments = {DRIFT_REFERENCE: reference_of(data_version)} if data_version else {}
        return store.publish(name, onnx, model_config(model_name=name, feature_set=feature_set), attachments)

    publish("baseline", "baseline", "d1")
    publish("rgb", "rgb", None)  # published before drift references were
    champion = publish("champion", "baseline", "d2")
    found = drift.published_reference(store, "baseline")
    assert (found.model_name, found.version, found.reference.data_version) == ("champion", champion.version, "d2")
    assert found.label == f"champion version {champion.version}"
    rgb = drift.published_reference(store, "rgb")
    assert rgb.model_name == "rgb" and rgb.reference is None
    assert drift.published_reference(store, "ndvi") is None

    again = publish("baseline", "baseline", "d3")  # newer than the champion's, though its name sorts first
    found = drift.published_reference(store, "baseline")
    assert (found.model_name, found.version, found.reference.data_version) == ("baseline", again.version, "d3")
