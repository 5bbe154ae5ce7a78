from droughtwatch_assets.data import processing, sample
from droughtwatch_assets.records import tfrecord as records


def test_sample_is_deterministic_and_in_the_benchmark_layout(tmp_path):
    spec = sample.SampleSpec(train_records=300, val_records=100, records_per_shard=128, seed=7)
    a = sample.write_sample(tmp_path / "a", spec)
    b = sample.write_sample(tmp_path / "b", spec)
    assert [p.name for p in a["train"]] == ["part-r-00000", "part-r-00001", "part-r-00002"]
    assert [p.name for p in a["val"]] == ["part-r-00000"]
    for split in a:
        assert [p.read_bytes() for p in a[split]] == [p.read_bytes() for p in b[split]]
    raw = records.read_raw(a["train"][0])
    assert raw.bands.shape == (128, 11, 65, 65) and len(raw.ids[0]) == 36


def test_sample_carries_the_label_at_the_centre(tmp_path):
    shards = sample.write_sample(tmp_path, sample.SampleSpec(train_records=2000, val_records=10))
    raw = records.read_raw(shards["train"][0])
    keep = processing.keep_mask(raw.bands)
    ndvi = processing.compute_features(raw.bands[keep], ("NDVI",))[:, 28:37, 28:37, 0].mean(axis=(1, 2))
    labels = raw.labels[keep]
    means = [ndvi[labels == k].mean() for k in range(4)]
    assert means == sorted(means) and means[3] - means[0] > 0.2
    assert 0.5 < (raw.labels == 0).mean() < 0.7  # the real class prior, roughly
    assert (~keep).sum() > 0  # blank images are present and vetoed
