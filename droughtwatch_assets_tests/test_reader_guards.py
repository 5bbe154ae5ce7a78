"""The guards that send a record off a reader's fast path, each in a test where it alone keeps the result right.

Records are built here with a wire-format encoder of this module's own, so that they can take shapes the package
never writes. In each test the values put in come back, or the record is refused as the protobuf parser refuses it,
only while the guard under test stands.
"""

import numpy as np
import pytest
import tensorflow as tf

from droughtwatch_assets.model import train as training
from droughtwatch_assets.records import tfrecord as records
from droughtwatch_assets.records.writer import RecordWriter

BAND_NAMES = [f"B{i}" for i in range(1, 12)]
VALUES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110)  # B1..B11, each over its whole band
OTHER_VALUES = (11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111)
LATER_VALUES = (12, 22, 32, 42, 52, 62, 72, 82, 92, 102, 112)


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def field(tag: int, body: bytes) -> bytes:
    """A length-delimited field: tag, length varint, body."""
    return bytes([tag]) + varint(len(body)) + body


def bytes_feature(*values: bytes) -> bytes:
    return field(0x0A, b"".join(field(0x0A, value) for value in values))  # Feature.bytes_list.value


def int64_feature(*values: int) -> bytes:
    return field(0x1A, field(0x0A, b"".join(varint(value) for value in values)))  # Feature.int64_list, packed


def entry(key: str, feature: bytes) -> bytes:
    return field(0x0A, field(0x0A, key.encode()) + field(0x12, feature))  # Features.feature map entry


def band_entries(values=VALUES) -> list[bytes]:
    return [entry(name, bytes_feature(bytes([value]) * 4225)) for name, value in zip(BAND_NAMES, values)]


def example(entries: list[bytes]) -> bytes:
    return field(0x0A, b"".join(entries))  # Example.features


def raw_record(label: int | None = 1, values=VALUES, filename: str = "abc") -> bytes:
    entries = band_entries(values)
    if label is not None:
        entries.append(entry("label", int64_feature(label)))
    if filename:
        entries.append(entry("filename", bytes_feature(filename.encode())))
    return example(entries)


def write_shard(path, payloads: list[bytes]):
    with RecordWriter(path) as writer:
        for payload in payloads:
            writer.write([payload])
    return path


def bands_of(values) -> np.ndarray:
    return np.broadcast_to(np.array(values, np.uint8)[:, None, None], (11, 65, 65))


def read_skipping(path, block_size: int = 256):
    """(bands, labels, ids, indices, skipped rows) of a raw shard read with on_bad_record=skip."""
    bad = records.BadRecords("skip")
    blocks = [
        (b.bands.copy(), b.labels.copy(), list(b.ids), b.indices.copy())
        for b in records.iter_raw_blocks(path, block_size, bad=bad)
    ]
    bands, labels, ids, indices = zip(*blocks)
    return (
        np.concatenate(bands),
        np.concatenate(labels).tolist(),
        [i for block in ids for i in block],
        np.concatenate(indices).tolist(),
        [(row["record"], row["problem"]) for row in bad.as_rows()],
    )


# --- raw records: the slicing of records that share the first record's layout (wire_layout.RawLayout) ---


def test_a_label_equal_to_the_number_of_classes_is_refused_on_the_fast_path(tmp_path):
    path = write_shard(tmp_path / "shard", [raw_record(3), raw_record(0, OTHER_VALUES), raw_record(4)])
    bands, labels, ids, indices, skipped = read_skipping(path)
    assert (labels, ids, indices) == ([3, 0], ["abc", "abc"], [0, 1])
    np.testing.assert_array_equal(bands, [bands_of(VALUES), bands_of(OTHER_VALUES)])
    assert skipped == [(2, "label [4] is not one value in 0..3")]
    with pytest.raises(records.RecordError, match=r"shard: record 2: label \[4\] is not one value in 0\.\.3"):
        records.read_raw(path)


def test_a_present_label_of_minus_one_is_refused_even_where_labels_are_optional(tmp_path):
    path = write_shard(tmp_path / "shard", [raw_record(2), raw_record(2**64 - 1)])  # int64 -1: ten varint bytes
    for require_label in (True, False):
        with pytest.raises(records.RecordError, match=r"record 1: label \[-1\] is not one value in 0\.\.3"):
            records.read_raw(path, require_label=require_label)


def test_a_shard_without_labels_is_refused_where_labels_are_required_and_reads_minus_one_where_not(tmp_path):
    path = write_shard(tmp_path / "shard", [raw_record(None), raw_record(None, OTHER_VALUES)])
    with pytest.raises(records.RecordError, match=r"shard: record 0: missing 'label'"):
        records.read_raw(path)
    unlabelled = records.read_raw(path, require_label=False)
    assert unlabelled.labels.tolist() == [-1, -1] and unlabelled.ids == ["abc", "abc"]
    np.testing.assert_array_equal(unlabelled.bands, [bands_of(VALUES), bands_of(OTHER_VALUES)])


def test_a_record_without_a_label_among_labelled_ones_is_refused_or_reads_minus_one(tmp_path):
    payloads = [raw_record(1), raw_record(None, OTHER_VALUES), raw_record(3, LATER_VALUES)]
    path = write_shard(tmp_path / "shard", payloads)
    with pytest.raises(records.RecordError, match=r"shard: record 1: missing 'label'"):
        records.read_raw(path)
    read = records.read_raw(path, require_label=False)
    assert read.labels.tolist() == [1, -1, 3]
    np.testing.assert_array_equal(read.bands, [bands_of(VALUES), bands_of(OTHER_VALUES), bands_of(LATER_VALUES)])


def test_a_record_of_the_common_length_with_two_bands_swapped_reads_each_band_by_its_name(tmp_path):
    swapped = band_entries(OTHER_VALUES)
    swapped[0], swapped[1] = swapped[1], swapped[0]  # B2's entry, then B1's: only two key bytes move
    swapped = example([*swapped, entry("label", int64_feature(2)), entry("filename", bytes_feature(b"xyz"))])
    assert len(swapped) == len(raw_record(1))
    path = write_shard(tmp_path / "shard", [raw_record(1), swapped, raw_record(3, LATER_VALUES)])
    read = records.read_raw(path)
    assert read.labels.tolist() == [1, 2, 3] and read.ids == ["abc", "xyz", "abc"]
    np.testing.assert_array_equal(read.bands, [bands_of(VALUES), bands_of(OTHER_VALUES), bands_of(LATER_VALUES)])


def test_a_record_of_the_common_length_with_its_label_first_and_low_pixels_reads_its_own_label(tmp_path):
    low = (1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2)
    # at the first record's label offset this record holds B11's last byte, 2: a label in range
    filename = entry("filename", bytes_feature(b"xyz"))
    reordered = example([entry("label", int64_feature(1)), *band_entries(low), filename])
    assert len(reordered) == len(raw_record(3))
    path = write_shard(tmp_path / "shard", [raw_record(3), reordered])
    read = records.read_raw(path)
    assert read.labels.tolist() == [3, 1] and read.ids == ["abc", "xyz"]
    np.testing.assert_array_equal(read.bands, [bands_of(VALUES), bands_of(low)])


def test_a_record_of_another_length_is_not_read_from_the_row_an_earlier_block_left(tmp_path):
    path = write_shard(tmp_path / "shard", [raw_record(1), raw_record(2, OTHER_VALUES, filename="")])
    bands, labels, ids, indices, skipped = read_skipping(path, block_size=1)
    assert (labels, ids, indices, skipped) == ([1, 2], ["abc", ""], [0, 1], [])
    np.testing.assert_array_equal(bands, [bands_of(VALUES), bands_of(OTHER_VALUES)])


def test_a_skipped_record_is_dropped_from_its_block(tmp_path):
    payloads = [raw_record(0), raw_record(1, OTHER_VALUES), raw_record(9), raw_record(3, LATER_VALUES)]
    bands, labels, ids, indices, skipped = read_skipping(write_shard(tmp_path / "shard", payloads))
    assert (labels, ids, indices) == ([0, 1, 3], ["abc", "abc", "abc"], [0, 1, 3])
    assert skipped == [(2, "label [9] is not one value in 0..3")]
    np.testing.assert_array_equal(bands, [bands_of(VALUES), bands_of(OTHER_VALUES), bands_of(LATER_VALUES)])


# --- raw records: what makes the first record's layout one the fast path may take (RawLayout.of) ---


def test_a_first_record_with_a_short_band_is_refused_not_taken_as_the_layout(tmp_path):
    entries = band_entries()
    entries[2] = entry("B3", bytes_feature(bytes([30]) * 4000))
    short = example([*entries, entry("label", int64_feature(1))])
    with pytest.raises(records.RecordError, match=r"shard: record 0: band B3 has 4000 bytes, expected 4225"):
        records.read_raw(write_shard(tmp_path / "shard", [short, short]))


def test_a_first_record_missing_a_band_is_refused_not_taken_as_the_layout(tmp_path):
    entries = band_entries()
    del entries[3]
    missing = example([*entries, entry("label", int64_feature(1))])
    with pytest.raises(records.RecordError, match=r"shard: record 0: missing band B4"):
        records.read_raw(write_shard(tmp_path / "shard", [missing, missing]))


def test_a_first_record_whose_label_takes_two_bytes_leaves_a_record_with_two_labels_refused(tmp_path):
    # 200 is two varint bytes; so are the labels 2 and 1 packed together, in a record of the same skeleton
    two_labels = example([*band_entries(OTHER_VALUES), entry("label", int64_feature(2, 1))])
    wide = example([*band_entries(), entry("label", int64_feature(200))])
    assert len(two_labels) == len(wide)
    bands, labels, ids, indices, skipped = read_skipping(write_shard(tmp_path / "shard", [wide, two_labels]))
    assert (bands.shape, labels, ids, indices) == ((0, 11, 65, 65), [], [], [])
    assert skipped == [(0, "label [200] is not one value in 0..3"), (1, "label [2, 1] is not one value in 0..3")]


def test_a_record_with_a_second_features_field_reads_the_label_that_protobuf_merges_last(tmp_path):
    merged = raw_record(1) + field(0x0A, entry("label", int64_feature(3)))  # a second Example.features
    read = records.read_raw(write_shard(tmp_path / "shard", [merged, merged]))
    assert read.labels.tolist() == [3, 3] and read.ids == ["abc", "abc"]
    np.testing.assert_array_equal(read.bands, [bands_of(VALUES)] * 2)


SECOND_B1_VALUE = {
    # protobuf merges a repeated message field and concatenates repeated values: each of these holds two B1 values
    "in its bytes list": entry("B1", bytes_feature(bytes([10]) * 4225, b"x")),
    "in a second bytes list": entry("B1", bytes_feature(bytes([10]) * 4225) + bytes_feature(b"x")),
    "in a second feature": field(
        0x0A, field(0x0A, b"B1") + field(0x12, bytes_feature(bytes([10]) * 4225)) + field(0x12, bytes_feature(b"x"))
    ),
}


@pytest.mark.parametrize("where", SECOND_B1_VALUE)
def test_a_first_record_with_a_second_value_for_a_band_is_refused(tmp_path, where):
    payload = example([SECOND_B1_VALUE[where], *band_entries()[1:], entry("label", int64_feature(1))])
    with pytest.raises(records.RecordError, match=r"shard: record 0: band B1 has 2 values"):
        records.read_raw(write_shard(tmp_path / "shard", [payload, payload]))


B1_FEATURE = bytes_feature(bytes([10]) * 4225)
B1_UNDER_AN_UNKNOWN_FIELD = {
    # protobuf skips a field of a number its message does not have; a map entry holding one is dropped whole
    "Example.features": lambda rest: field(0x12, b"".join([entry("B1", B1_FEATURE), *rest])),
    "the feature entry": lambda rest: example([field(0x12, field(0x0A, b"B1") + field(0x12, B1_FEATURE)), *rest]),
    "the entry's key": lambda rest: example([field(0x0A, field(0x1A, b"B1") + field(0x12, B1_FEATURE)), *rest]),
    "the entry's value": lambda rest: example([field(0x0A, field(0x0A, b"B1") + field(0x1A, B1_FEATURE)), *rest]),
}


@pytest.mark.parametrize("where", B1_UNDER_AN_UNKNOWN_FIELD)
def test_a_first_record_holding_a_band_under_an_unknown_field_number_is_refused_as_missing_it(tmp_path, where):
    payload = B1_UNDER_AN_UNKNOWN_FIELD[where]([*band_entries()[1:], entry("label", int64_feature(1))])
    with pytest.raises(records.RecordError, match=r"shard: record 0: missing band B1"):
        records.read_raw(write_shard(tmp_path / "shard", [payload, payload]))


def test_a_label_entry_under_an_unknown_features_field_is_ignored(tmp_path):
    decoy = field(0x12, field(0x0A, b"label") + field(0x12, int64_feature(3)))  # Features field 2: not a feature
    payload = example([*band_entries(), entry("label", int64_feature(1)), decoy])
    read = records.read_raw(write_shard(tmp_path / "shard", [payload, payload]))
    assert read.labels.tolist() == [1, 1]
    np.testing.assert_array_equal(read.bands, [bands_of(VALUES)] * 2)


def test_a_first_record_whose_last_field_runs_past_its_end_is_refused(tmp_path):
    body = b"".join([*band_entries(), entry("label", int64_feature(1)), entry("filename", bytes_feature(b"abc"))])
    cut = field(0x0A, body[:-1])  # the filename entry still announces 3 bytes: 2 are left
    with pytest.raises(records.RecordError, match=r"shard: record 0: payload is not a tf.train.Example"):
        records.read_raw(write_shard(tmp_path / "shard", [cut, cut]))


def test_entries_holding_their_value_before_their_key_read_alike(tmp_path):
    def value_first(key: str, feature: bytes) -> bytes:
        return field(0x0A, field(0x12, feature) + field(0x0A, key.encode()))

    payload = example(
        [value_first(n, bytes_feature(bytes([v]) * 4225)) for n, v in zip(BAND_NAMES, VALUES)]
        + [value_first("label", int64_feature(2))]
    )
    read = records.read_raw(write_shard(tmp_path / "shard", [payload, payload]))
    assert read.labels.tolist() == [2, 2]
    np.testing.assert_array_equal(read.bands, [bands_of(VALUES)] * 2)


def test_a_first_record_whose_label_is_a_bytes_feature_is_refused(tmp_path):
    payload = example([*band_entries(), entry("label", bytes_feature(b"\x02"))])
    with pytest.raises(records.RecordError, match=r"shard: record 0: label \[\] is not one value in 0\.\.3"):
        records.read_raw(write_shard(tmp_path / "shard", [payload, payload]))


def test_a_filename_that_is_an_int64_feature_reads_as_no_filename(tmp_path):
    payload = example([*band_entries(), entry("label", int64_feature(1)), entry("filename", int64_feature(97))])
    read = records.read_raw(write_shard(tmp_path / "shard", [payload, payload]))
    assert read.ids == ["", ""] and read.labels.tolist() == [1, 1]  # not "a", chr(97)


# --- processed records: read_processed, and the training input's ProcessedParser ---


def processed_record(value: float, label: int, filename: bytes = b"f", image_values: int = 1) -> bytes:
    image = np.full((65, 65, 2), value, "<f4").tobytes()
    return example(
        [
            entry("image", bytes_feature(*[image] * image_values)),
            entry("label", int64_feature(label)),
            entry("filename", bytes_feature(filename)),
        ]
    )


def test_a_processed_record_with_two_images_is_refused(tmp_path):
    path = write_shard(tmp_path / "shard", [processed_record(0.5, 1), processed_record(0.75, 2, image_values=2)])
    with pytest.raises(records.RecordError, match=r"shard: record 1: 'image' is not 2 float32 channels of 65x65"):
        records.read_processed(path, 2)
    with pytest.raises(records.RecordError, match=r"shard: record 0: 'image' is not 1 float32 channels of 65x65"):
        records.read_processed(path, 1)


@pytest.mark.parametrize("label", [4, 2**64 - 1])
def test_a_processed_record_with_a_label_outside_0_to_3_is_refused(tmp_path, label):
    path = write_shard(tmp_path / "shard", [processed_record(0.5, 3), processed_record(0.5, label)])
    with pytest.raises(records.RecordError, match=r"shard: record 1: label \[(4|-1)\] is not one value in 0\.\.3"):
        records.read_processed(path, 2)
    assert records.read_processed(path, 2, limit=1).labels.tolist() == [3]


# TensorFlow refuses a record it cannot parse with InvalidArgumentError, or with UnicodeDecodeError where its message
# quotes the record's bytes.
REFUSED = (tf.errors.InvalidArgumentError, UnicodeDecodeError)


def parsed(batch: list[bytes]):
    parser = training.ProcessedParser(2)
    images, one_hot = parser(tf.constant(batch))
    return bool(parser.laid_out(tf.constant(batch))), images.numpy()[:, 0, 0, 0], one_hot.numpy()


def test_processed_records_as_written_are_cut_from_their_bytes():
    # 0.5 and 0.75 are exact in float32; labels 0 and 3, one-hot
    laid_out, pixels, one_hot = parsed([processed_record(0.5, 0), processed_record(0.75, 3)])
    assert laid_out and pixels.tolist() == [0.5, 0.75] and one_hot.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]


def altered(position: int, change) -> list[bytes]:
    record = bytearray(processed_record(0.5, 1))
    record[position] = change(record[position])
    return [bytes(record), processed_record(0.75, 2)]


LABEL_AT = 33842  # 27-byte head + 2 * 4225 * 4 image bytes + 15 bytes of the label entry before its varint
ALTERED = {
    # the byte altered, and how: each leaves every byte the parser compares with the layout's alike
    "Example.features under another field number": (0, lambda byte: 0x12),
    "a one-byte length": (1, lambda byte: byte & 0x7F),
    "a two-byte length": (2, lambda byte: byte & 0x7F),
    "a length running into a fourth byte": (3, lambda byte: byte | 0x80),
    "a label varint running past its list": (LABEL_AT, lambda byte: byte | 0x80),
    "the image under the key 'imagf'": (14, lambda byte: ord("f")),
}


@pytest.mark.parametrize("name", ALTERED)
def test_a_processed_record_off_the_layout_by_one_byte_is_refused_as_parse_example_refuses_it(name):
    position, change = ALTERED[name]
    assert processed_record(0.5, 1)[LABEL_AT] == 1 and processed_record(0.5, 1)[10:15] == b"image"
    with pytest.raises(REFUSED):
        parsed(altered(position, change))


def test_a_big_endian_machine_parses_processed_records_with_parse_example(monkeypatch):
    monkeypatch.setattr(training.sys, "byteorder", "big")
    laid_out, pixels, one_hot = parsed([processed_record(0.5, 0), processed_record(0.75, 3)])
    assert not laid_out and pixels.tolist() == [0.5, 0.75] and one_hot.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]


SECOND_LABEL = {
    "in a second features field": field(0x0A, entry("label", int64_feature(3))),
    "in a second entry": entry("label", int64_feature(3)),
}


@pytest.mark.parametrize("where", SECOND_LABEL)
def test_a_processed_record_with_a_second_label_after_its_filename_reads_the_last_as_parse_example_does(where):
    if where == "in a second features field":
        second = processed_record(0.5, 1) + SECOND_LABEL[where]
    else:
        first = processed_record(0.5, 1)
        second = field(0x0A, first[4:] + SECOND_LABEL[where])  # bytes 0..3: the tag and 3-byte length of the features
    laid_out, pixels, one_hot = parsed([second, processed_record(0.75, 2)])
    assert pixels.tolist() == [0.5, 0.75] and one_hot.tolist() == [[0, 0, 0, 1], [0, 0, 1, 0]], laid_out


def test_a_processed_record_whose_length_ends_its_features_at_the_label_is_refused_as_parse_example_refuses_it():
    # the features' length says they end with the label, so the filename entry after it is read as a top-level
    # field of the Example, which protobuf cannot parse: only the record-length check keeps the parser from cutting
    # an image and a label out of a record parse_example refuses
    record = processed_record(0.5, 1)
    head = LABEL_AT + 1
    short = bytes([0x0A]) + varint(head - 4 - (len(varint(head - 4)) - 3)) + record[4:]
    assert len(varint(head - 4)) == 3 and short[1:4] != record[1:4] and len(short) == len(record)
    with pytest.raises(REFUSED):
        parsed([short, processed_record(0.75, 2)])
