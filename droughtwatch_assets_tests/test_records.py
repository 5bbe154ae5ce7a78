import collections
import struct

import numpy as np
import pytest

from droughtwatch_assets.core.features import BANDS
from droughtwatch_assets.records import tfrecord as records
from droughtwatch_assets.records.writer import RecordWriter


def test_real_shard_reads_as_81_records(real_shard):
    raw = records.read_raw(real_shard)
    assert raw.bands.shape == (81, 11, 65, 65)
    assert collections.Counter(raw.labels.tolist()) == {0: 46, 1: 16, 2: 14, 3: 5}
    assert all(len(i) == 36 for i in raw.ids)
    np.testing.assert_allclose(
        raw.bands.mean(axis=(0, 2, 3)), [37.7, 34.8, 36.3, 46.2, 73.2, 79.3, 62.4, 39.5, 1.2, 198.3, 195.0], atol=0.05
    )


def test_blocks_cover_every_record_in_order(real_shard):
    blocks = [(int(b.indices[0]), len(b), b.labels.copy()) for b in records.iter_raw_blocks(real_shard, block_size=32)]
    assert [(first, n) for first, n, _ in blocks] == [(0, 32), (32, 32), (64, 17)]
    np.testing.assert_array_equal(np.concatenate([labels for *_, labels in blocks]), records.read_labels(real_shard))


def test_written_records_are_readable_by_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    bands = np.random.default_rng(0).integers(0, 256, (11, 65, 65), dtype=np.uint8)
    with RecordWriter(tmp_path / "shard") as writer:
        writer.write(records.encode_raw_example(bands, 3, "abc"))
        writer.write(records.encode_raw_example(bands, 0))
    parsed = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(tmp_path / "shard"))]
    assert len(parsed) == 2
    feature = parsed[0].features.feature
    assert feature["label"].int64_list.value == [3]
    assert feature["filename"].bytes_list.value == [b"abc"]
    assert feature["B7"].bytes_list.value[0] == bands[6].tobytes()
    assert "filename" not in parsed[1].features.feature


def test_large_and_negative_varints_round_trip():
    example = records.Example()
    example.ParseFromString(b"".join(bytes(p) for p in records.encode_example({"label": -1, "big": 2**40})))
    assert example.features.feature["label"].int64_list.value == [-1]
    assert example.features.feature["big"].int64_list.value == [2**40]


def test_a_file_that_is_not_a_tfrecord_names_file_and_record(tmp_path):
    path = tmp_path / "part-r-00001"
    path.write_bytes(b"this is a text file, not a TFRecord shard\n" * 10)
    with pytest.raises(records.RecordError, match=r"part-r-00001: record 0: bad length checksum"):
        list(records.iter_raw_blocks(path))


def test_a_band_of_the_wrong_length_names_file_and_record(tmp_path):
    bands = np.zeros((11, 65, 65), np.uint8)
    with RecordWriter(tmp_path / "shard") as writer:
        writer.write(records.encode_raw_example(bands, 1))
        parts = records.encode_example({**{b: bytes(4225) for b in BANDS}, "B3": bytes(4000), "label": 1})
        writer.write(parts)
    with pytest.raises(records.RecordError, match=r"shard: record 1: band B3 has 4000 bytes, expected 4225"):
        list(records.iter_raw_blocks(tmp_path / "shard"))


def test_corrupted_payload_and_truncation_are_detected(real_shard, tmp_path):
    data = bytearray(real_shard.read_bytes())
    data[5000] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(data))
    with pytest.raises(records.RecordError, match="record 0: payload checksum mismatch"):
        records.read_labels(tmp_path / "corrupt")
    (tmp_path / "short").write_bytes(real_shard.read_bytes()[:100_000])
    (length,) = struct.unpack("<Q", real_shard.read_bytes()[:8])
    index = 100_000 // (length + 16)
    with pytest.raises(records.RecordError, match=f"record {index}: truncated"):
        records.read_labels(tmp_path / "short")


def test_records_off_the_common_layout_still_parse(real_shard, tmp_path):
    raw = records.read_raw(real_shard)
    with RecordWriter(tmp_path / "mixed") as writer:
        writer.write(records.encode_raw_example(raw.bands[0], int(raw.labels[0]), raw.ids[0]))
        writer.write(records.encode_raw_example(raw.bands[1], int(raw.labels[1])))  # no filename: other length
        fields = {
            "label": int(raw.labels[2]),
            **{b: raw.bands[2][i].tobytes() for i, b in enumerate(BANDS)},
            "filename": raw.ids[2].encode(),
        }  # other key order, same length
        writer.write(records.encode_example(fields))
        writer.write(records.encode_raw_example(raw.bands[3], int(raw.labels[3]), raw.ids[3]))
    back = records.read_raw(tmp_path / "mixed")
    np.testing.assert_array_equal(back.bands, raw.bands[:4])
    assert back.labels.tolist() == raw.labels[:4].tolist()
    assert back.ids == [raw.ids[0], "", raw.ids[2], raw.ids[3]]


def test_a_label_out_of_range_on_the_fast_path_names_file_and_record(tmp_path):
    bands = np.zeros((11, 65, 65), np.uint8)
    with RecordWriter(tmp_path / "shard") as writer:
        for label in (1, 2, 7):
            writer.write(records.encode_raw_example(bands, label, "abc"))
    with pytest.raises(records.RecordError, match=r"shard: record 2: label \[7\] is not one value in 0..3"):
        list(records.iter_raw_blocks(tmp_path / "shard"))


def test_a_record_error_survives_pickling_as_from_a_worker_process():
    import pickle

    from droughtwatch_assets.records.tfrecord import RecordError

    error = RecordError("/data/train/part-r-00099", 1, "missing band B4")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.path, copy.index, copy.problem) == (
        RecordError,
        str(error),
        error.path,
        error.index,
        error.problem,
    )
