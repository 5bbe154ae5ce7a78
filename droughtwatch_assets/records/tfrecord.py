"""The DroughtWatch record format: TFRecord framing and tf.train.Example payloads, without TensorFlow.

Raw records hold B1..B11 as 65x65 uint8 bytes, an int64 `label` and an optional `filename`.
Processed records hold one float32 HWC tensor under `image`, plus `label` and `filename`; the
feature (channel) order lives in the dataset manifest.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from droughtwatch_assets.core.features import BANDS, IMAGE_SIZE, NUM_CLASSES, PIXELS
from droughtwatch_assets.records.wire_layout import RawLayout

IMAGE_KEY = "image"
LABEL_KEY = "label"
FILENAME_KEY = "filename"
NO_LABEL = -1

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class RecordError(ValueError):
    """A record that cannot be read, naming the file and the 0-based record index."""

    def __init__(self, path: str | os.PathLike, index: int, problem: str, hint: str = ""):
        self.path, self.index, self.problem = os.fspath(path), index, problem
        self.hint = hint or "Check that the file is an uncompressed DroughtWatch TFRecord shard."
        super().__init__(f"{self.path}: record {index}: {problem}. {self.hint}")

    def __reduce__(self):
        # Raised in a worker process, the error is pickled back to the parent; the default reduction
        # would call __init__ with the message alone and break the process pool.
        return type(self), (self.path, self.index, self.problem, self.hint)


BadRecordPolicy = Literal["fail", "skip"]


class BadRecords:
    """The on_bad_record policy: 'fail' raises the first RecordError; 'skip' collects them and goes on.

    A skipped record whose framing is intact is dropped alone; after a broken frame (bad length
    checksum, truncation) the rest of the file cannot be found and is dropped too.
    """

    POLICIES: tuple[str, ...] = get_args(BadRecordPolicy)

    def __init__(self, policy: BadRecordPolicy = "fail"):
        if policy not in self.POLICIES:
            raise ValueError(f"on_bad_record must be one of {self.POLICIES}, not {policy!r}")
        self.policy = policy
        self.errors: list[RecordError] = []

    def handle(self, error: RecordError) -> None:
        if self.policy == "fail":
            raise error
        self.errors.append(error)

    def as_rows(self) -> list[dict]:
        return [{"file": e.path, "record": e.index, "problem": e.problem} for e in self.errors]


def mask_crc(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc(data: bytes | memoryview) -> int:
    return mask_crc(crc32c.crc32c(data))


READ_CHUNK = 8 << 20


def iter_records(path: str | os.PathLike, bad: BadRecords | None = None) -> Iterator[tuple[int, memoryview]]:
    """Yield (record index, payload) for each record, checking lengths and CRCs.

    The file is read in chunks of READ_CHUNK bytes (more for a larger record) into one reused buffer,
    so memory stays bounded whatever the file size. Payloads are views into that buffer, valid until
    the next record is asked for: copy what you keep.
    """
    bad = bad or BadRecords()
    size = os.path.getsize(path)
    if size == 0:
        bad.handle(RecordError(path, 0, "empty file (0 bytes)", "Remove it, or fetch the shard again."))
        return
    unpack_header, unpack_crc = _HEADER.unpack_from, _CRC.unpack_from
    buffer = np.empty(READ_CHUNK, dtype=np.uint8)
    view = memoryview(buffer)
    filled = 0  # the buffer holds the file bytes [base, base + filled)
    with open(path, "rb", buffering=0) as f:

        def refill(pos: int, need: int) -> int:
            """Keep the bytes from pos on, read more after them; returns how many bytes the buffer holds."""
            nonlocal buffer, view
            kept = filled - pos
            if need > len(buffer):
                grown = np.empty(need, dtype=np.uint8)
                grown[:kept] = buffer[pos:filled]
                buffer, view = grown, memoryview(grown)
            else:
                buffer[:kept] = buffer[pos:filled]  # numpy handles the overlap
            while kept < len(buffer) and (n := f.readinto(view[kept:])):
                kept += n
            return kept

        base = index = offset = 0
        while offset < size:
            pos = offset - base
            if pos + 12 > filled:
                filled, base, pos = refill(pos, 12), offset, 0
                if filled < 12:
                    return bad.handle(RecordError(path, index, f"truncated header at byte {offset}"))
            length, length_crc = unpack_header(view, pos)
            if masked_crc(view[pos : pos + 8]) != length_crc:
                return bad.handle(
                    RecordError(
                        path, index, f"bad length checksum at byte {offset} (not a TFRecord file, or corrupted)"
                    )
                )
            end = pos + 12 + length
            if end + 4 > filled:
                if offset + 16 + length > size:
                    return bad.handle(
                        RecordError(
                            path,
                            index,
                            f"truncated: {length} payload bytes announced at byte {offset}, file ends at {size}",
                        )
                    )
                filled, base, pos, end = refill(pos, 16 + length), offset, 0, 12 + length
            payload = view[pos + 12 : end]
            if masked_crc(payload) == unpack_crc(view, end)[0]:
                yield index, payload
            else:
                bad.handle(RecordError(path, index, f"payload checksum mismatch at byte {offset} (corrupted data)"))
            index, offset = index + 1, offset + 16 + length


# --- tf.train.Example encoding (hand-written wire format: fields are fixed and known) ---


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 is encoded as its two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_prefix(tag: int, length: int) -> bytes:
    return bytes([tag]) + _varint(length)


def _bytes_feature(value_len: int) -> list[bytes]:
    """Header parts of Feature{bytes_list{value}}; the value itself follows."""
    value_header = _len_prefix(0x0A, value_len)
    return [_len_prefix(0x0A, len(value_header) + value_len), value_header]


def _int64_feature(value: int) -> bytes:
    packed = _varint(value)
    int64_list = _len_prefix(0x0A, len(packed)) + packed
    return _len_prefix(0x1A, len(int64_list)) + int64_list


def encode_example(features: dict[str, bytes | memoryview | int]) -> list[bytes | memoryview]:
    """Serialised tf.train.Example as a list of parts (bytes values are not copied)."""
    entries: list[list[bytes | memoryview]] = []
    for key, value in features.items():
        key_bytes = key.encode()
        key_field = _len_prefix(0x0A, len(key_bytes)) + key_bytes
        if isinstance(value, int):
            feature = [_int64_feature(value)]
        else:
            feature = _bytes_feature(len(value)) + [value]
        feature_len = sum(len(p) for p in feature)
        entry_body = [key_field, _len_prefix(0x12, feature_len)] + feature
        entry_len = sum(len(p) for p in entry_body)
        entries.append([_len_prefix(0x0A, entry_len)] + entry_body)
    features_len = sum(len(p) for entry in entries for p in entry)
    parts: list[bytes | memoryview] = [_len_prefix(0x0A, features_len)]
    for entry in entries:
        parts.extend(entry)
    return parts


@dataclass(frozen=True)
class ProcessedLayout:
    """Where a processed record's image and label sit in its payload, as write_processed writes it.

    The image comes first and the label second, so both have the same offsets in every record of a channel count,
    whatever filename follows. `head` is the payload up to and including the label's varint (zero image, label 0):
    bytes 1..3 hold the length of the whole, which the filename changes; every other byte but the image's and the
    label's is the same in each record.
    """

    head: bytes
    image_at: int
    image_bytes: int

    @property
    def label_at(self) -> int:
        return len(self.head) - 1

    @classmethod
    def of(cls, channels: int) -> ProcessedLayout:
        image_bytes = PIXELS * channels * 4
        head = b"".join(bytes(p) for p in encode_example({IMAGE_KEY: bytes(image_bytes), LABEL_KEY: 0}))
        label_entry = b"".join(bytes(p) for p in encode_example({LABEL_KEY: 0})[1:])  # without the whole's length
        if len(_varint(len(head) - 4)) != 3:  # bytes 1..3: a 3-byte varint for payloads of 16 KiB to 2 MiB
            raise ValueError(f"no fixed layout for {channels} channels")
        return cls(head=head, image_at=len(head) - len(label_entry) - image_bytes, image_bytes=image_bytes)


# --- tf.train.Example decoding (upb protobuf with a private copy of TensorFlow's example.proto) ---


def _build_example_class():
    file = descriptor_pb2.FileDescriptorProto(
        name="droughtwatch/example.proto", package="droughtwatch", syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", f.TYPE_BYTES), ("FloatList", f.TYPE_FLOAT), ("Int64List", f.TYPE_INT64)):
        file.message_type.add(name=name).field.add(name="value", number=1, type=kind, label=f.LABEL_REPEATED)
    feature = file.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in ((1, "bytes_list"), (2, "float_list"), (3, "int64_list")):
        type_name = ".droughtwatch." + "".join(w.capitalize() for w in name.split("_")).replace("list", "List")
        feature.field.add(
            name=name, number=number, type=f.TYPE_MESSAGE, type_name=type_name, label=f.LABEL_OPTIONAL, oneof_index=0
        )
    features = file.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    entry.field.add(
        name="value", number=2, type=f.TYPE_MESSAGE, type_name=".droughtwatch.Feature", label=f.LABEL_OPTIONAL
    )
    features.field.add(
        name="feature",
        number=1,
        type=f.TYPE_MESSAGE,
        type_name=".droughtwatch.Features.FeatureEntry",
        label=f.LABEL_REPEATED,
    )
    file.message_type.add(name="Example").field.add(
        name="features", number=1, type=f.TYPE_MESSAGE, type_name=".droughtwatch.Features", label=f.LABEL_OPTIONAL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("droughtwatch.Example"))


Example = _build_example_class()


def _parse(path, index: int, payload: bytes):
    example = Example()
    try:
        example.ParseFromString(payload)
    except Exception as exc:  # the protobuf runtime raises its own DecodeError
        raise RecordError(path, index, f"payload is not a tf.train.Example ({exc})") from None
    return example.features.feature


def _label(path, index: int, feature_map, required: bool) -> int:
    if LABEL_KEY not in feature_map:
        if required:
            raise RecordError(path, index, "missing 'label'")
        return NO_LABEL
    values = feature_map[LABEL_KEY].int64_list.value
    if len(values) != 1 or not 0 <= values[0] < NUM_CLASSES:
        raise RecordError(path, index, f"label {list(values)} is not one value in 0..{NUM_CLASSES - 1}")
    return int(values[0])


def _filename(feature_map) -> str:
    if FILENAME_KEY not in feature_map:
        return ""
    values = feature_map[FILENAME_KEY].bytes_list.value
    return values[0].decode(errors="replace") if values else ""


@dataclass
class RawBlock:
    """A block of raw records. `bands` is uint8 [n, 11, 65, 65] in registry band order; `indices` are
    the records' 0-based positions in their file (consecutive unless bad records were skipped)."""

    bands: np.ndarray
    labels: np.ndarray
    ids: list[str]
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _parse_raw_into(
    path, index: int, payload: bytes, bands: np.ndarray, labels: np.ndarray, row: int, require_label: bool
) -> str:
    """The protobuf path for one raw record: fills bands[row] and labels[row], returns the filename."""
    feature_map = _parse(path, index, payload)
    for b, band in enumerate(BANDS):
        if band not in feature_map:
            raise RecordError(path, index, f"missing band {band}")
        values = feature_map[band].bytes_list.value
        if len(values) != 1 or len(values[0]) != PIXELS:
            got = len(values[0]) if len(values) == 1 else f"{len(values)} values"
            raise RecordError(path, index, f"band {band} has {got} bytes, expected {PIXELS} (65x65 uint8)")
        bands[row, b] = np.frombuffer(values[0], dtype=np.uint8)
    labels[row] = _label(path, index, feature_map, require_label)
    return _filename(feature_map)


def iter_raw_blocks(
    path: str | os.PathLike, block_size: int = 256, require_label: bool = True, bad: BadRecords | None = None
) -> Iterator[RawBlock]:
    """Parse a raw shard in blocks. The arrays are reused between blocks: copy what you keep.

    Records that share the first record's byte layout are sliced out with numpy (see wire_layout.py);
    any other record goes through the protobuf parser, which also produces every error message.
    """
    bad = bad or BadRecords()
    bands = np.empty((block_size, len(BANDS), PIXELS), dtype=np.uint8)
    labels = np.empty(block_size, dtype=np.int64)
    layout: RawLayout | None = None
    rows = np.empty((0, 0), dtype=np.uint8)
    payloads: list[bytes | None] = []  # None: the record's bytes are in rows
    indices: list[int] = []

    def parse_block() -> RawBlock:
        n = len(payloads)
        ids = [""] * n
        fast = np.zeros(n, dtype=bool)
        good = np.ones(n, dtype=bool)
        if layout is not None:
            fast = np.array([p is None for p in payloads]) & layout.matches(rows[:n])
            ids = layout.extract(rows[:n], bands[:n], labels[:n])
            fast &= (labels[:n] < NUM_CLASSES) & ((labels[:n] >= 0) | (not require_label))
        for row in np.flatnonzero(~fast):
            payload = payloads[row] if payloads[row] is not None else rows[row].tobytes()
            try:
                ids[row] = _parse_raw_into(path, indices[row], payload, bands, labels, row, require_label)
            except RecordError as error:
                bad.handle(error)
                good[row] = False
        shaped = bands[:n].reshape(n, len(BANDS), IMAGE_SIZE, IMAGE_SIZE)
        if good.all():
            return RawBlock(shaped, labels[:n], ids, np.asarray(indices))
        return RawBlock(shaped[good], labels[:n][good], [i for i, g in zip(ids, good) if g], np.asarray(indices)[good])

    for index, payload in iter_records(path, bad):
        if layout is None and not indices and index == 0:
            layout = RawLayout.of(bytes(payload))
            if layout is not None:
                rows = np.empty((block_size, layout.length), dtype=np.uint8)
        if layout is not None and len(payload) == layout.length:
            rows[len(payloads)] = np.frombuffer(payload, dtype=np.uint8)
            payloads.append(None)
        else:
            payloads.append(bytes(payload))
        indices.append(index)
        if len(payloads) == block_size:
            yield parse_block()
            payloads, indices = [], []
    if payloads:
        yield parse_block()


def read_raw(path: str | os.PathLike, require_label: bool = True) -> RawBlock:
    """A whole raw shard in memory (copies)."""
    blocks = [
        RawBlock(b.bands.copy(), b.labels.copy(), b.ids, b.indices)
        for b in iter_raw_blocks(path, require_label=require_label)
    ]
    if not blocks:
        return RawBlock(
            np.empty((0, len(BANDS), IMAGE_SIZE, IMAGE_SIZE), np.uint8),
            np.empty(0, np.int64),
            [],
            np.empty(0, np.int64),
        )
    return RawBlock(
        np.concatenate([b.bands for b in blocks]),
        np.concatenate([b.labels for b in blocks]),
        [i for b in blocks for i in b.ids],
        np.concatenate([b.indices for b in blocks]),
    )


def read_labels(path: str | os.PathLike, bad: BadRecords | None = None) -> np.ndarray:
    """Labels only: checks every record's framing and label; the bands are checked by processing."""
    bad = bad or BadRecords()
    labels = []
    for index, payload in iter_records(path, bad):
        try:
            labels.append(_label(path, index, _parse(path, index, payload), True))
        except RecordError as error:
            bad.handle(error)
    return np.asarray(labels, dtype=np.int64)


def encode_raw_example(bands: np.ndarray, label: int | None, filename: str = "") -> list[bytes | memoryview]:
    """One raw record from uint8 [11, 65, 65] bands."""
    features: dict[str, bytes | memoryview | int] = {
        band: memoryview(np.ascontiguousarray(bands[b], dtype=np.uint8)).cast("B") for b, band in enumerate(BANDS)
    }
    if label is not None:
        features[LABEL_KEY] = int(label)
    if filename:
        features[FILENAME_KEY] = filename.encode()
    return encode_example(features)


@dataclass
class ProcessedRecords:
    images: np.ndarray  # float32 [n, 65, 65, C]
    labels: np.ndarray
    ids: list[str]


def read_processed(
    path: str | os.PathLike, channels: int, limit: int | None = None, indices: Collection[int] | None = None
) -> ProcessedRecords:
    """The shard's records, the first `limit` of them, or those at `indices` (the others are not parsed)."""
    images, labels, ids = [], [], []
    expected = PIXELS * channels * 4
    wanted = None if indices is None else set(indices)
    last = max(wanted, default=-1) if wanted is not None else None
    # a processed shard whose records were all vetoed or skipped is an empty file, and valid
    for index, payload in iter_records(path) if os.path.getsize(path) else ():
        if index == limit or (last is not None and index > last):
            break
        if wanted is not None and index not in wanted:
            continue
        feature_map = _parse(path, index, payload)
        values = feature_map[IMAGE_KEY].bytes_list.value if IMAGE_KEY in feature_map else []
        if len(values) != 1 or len(values[0]) != expected:
            raise RecordError(
                path,
                index,
                f"'{IMAGE_KEY}' is not {channels} float32 channels of 65x65",
                "Check that the dataset manifest matches its shards.",
            )
        images.append(np.frombuffer(values[0], dtype="<f4").reshape(IMAGE_SIZE, IMAGE_SIZE, channels))
        labels.append(_label(path, index, feature_map, required=False))
        ids.append(_filename(feature_map))
    shape = (0, IMAGE_SIZE, IMAGE_SIZE, channels)
    return ProcessedRecords(
        np.stack(images) if images else np.empty(shape, np.float32), np.asarray(labels, dtype=np.int64), ids
    )


def read_processed_records(shards: list, channels: int, limit: int) -> ProcessedRecords:
    """Up to `limit` processed records from the first shards that hold any (a shard may be empty)."""
    images, labels, ids = [], [], []
    for shard in shards:
        records = read_processed(shard, channels, limit=limit - len(ids))
        images.append(records.images)
        labels.append(records.labels)
        ids += records.ids
        if len(ids) >= limit:
            break
    if not images:
        return ProcessedRecords(np.empty((0, IMAGE_SIZE, IMAGE_SIZE, channels), np.float32), np.empty(0, np.int64), [])
    return ProcessedRecords(np.concatenate(images), np.concatenate(labels), ids)
