"""Vectorised parsing of raw records that share one byte layout.

Benchmark shards are written by one writer, so every record has the same keys in the same order and
the same value lengths: only the band bytes, the label's varint byte and the filename characters
differ. We walk the first record's wire format once to find where those values sit. A later record of
the same length whose every other byte (its "skeleton": tags, lengths, keys) equals the template's has
its values at exactly the same offsets, so a whole block is sliced with numpy. Records that differ in
any structural byte go through the protobuf parser instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from droughtwatch_assets.core.features import BANDS, PIXELS


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _expect_len_field(buf: bytes, pos: int, tag: int) -> tuple[int, int]:
    if pos >= len(buf) or buf[pos] != tag:
        raise ValueError("unexpected field")
    length, pos = _varint(buf, pos + 1)
    if pos + length > len(buf):
        raise ValueError("field runs past the end")
    return pos, pos + length


BYTES_LIST, INT64_LIST = 0x0A, 0x1A  # the tags of Feature.bytes_list and Feature.int64_list


def feature_values(payload: bytes) -> dict[str, tuple[int, int, int]]:
    """key -> (kind, start, end) of each feature's single value: the bytes of a one-value bytes_list (kind
    BYTES_LIST), or the varint of a one-value packed int64_list (kind INT64_LIST). Raises ValueError for any
    other shape."""
    pos, end = _expect_len_field(payload, 0, 0x0A)  # Example.features
    if end != len(payload):
        raise ValueError("trailing fields")
    values = {}
    while pos < end:
        pos, entry_end = _expect_len_field(payload, pos, 0x0A)  # Features.feature map entry
        key_start, key_end = _expect_len_field(payload, pos, 0x0A)
        key = payload[key_start:key_end].decode()
        pos, feature_end = _expect_len_field(payload, key_end, 0x12)
        kind = payload[pos]
        if kind == BYTES_LIST:
            pos, list_end = _expect_len_field(payload, pos, BYTES_LIST)
            start, stop = _expect_len_field(payload, pos, 0x0A)
        elif kind == INT64_LIST:  # packed
            pos, list_end = _expect_len_field(payload, pos, INT64_LIST)
            start, stop = _expect_len_field(payload, pos, 0x0A)
            if _varint(payload, start)[1] != stop:
                raise ValueError("more than one int64 value")
        else:
            raise ValueError("unsupported feature kind")
        if not stop == list_end == feature_end == entry_end:
            raise ValueError("more than one value")
        values[key] = (kind, start, stop)
        pos = entry_end
    return values


@dataclass(frozen=True)
class RawLayout:
    length: int
    band_offsets: np.ndarray  # start of each band's 4,225 bytes, in registry order
    label_offset: int | None  # the label's single varint byte
    filename_span: tuple[int, int] | None
    skeleton_index: np.ndarray
    skeleton: np.ndarray

    @classmethod
    def of(cls, payload: bytes) -> RawLayout | None:
        """The layout of a raw record, or None when it is not one the fast path handles."""
        try:
            found = feature_values(payload)
        except (ValueError, UnicodeDecodeError, IndexError):
            return None
        # the protobuf path reads bands and the filename from a bytes_list only, and the label from an int64_list
        kinds = {band: BYTES_LIST for band in BANDS} | {"label": INT64_LIST, "filename": BYTES_LIST}
        if any(found[key][0] != kind for key, kind in kinds.items() if key in found):
            return None
        values = {key: (start, stop) for key, (_, start, stop) in found.items()}
        if any(band not in values or values[band][1] - values[band][0] != PIXELS for band in BANDS):
            return None
        label = values.get("label")
        if label is not None and label[1] - label[0] != 1:
            return None
        variable = np.zeros(len(payload), dtype=bool)
        for start, stop in values.values():
            variable[start:stop] = True
        skeleton_index = np.flatnonzero(~variable)
        raw = np.frombuffer(payload, dtype=np.uint8)
        return cls(
            len(payload),
            np.array([values[b][0] for b in BANDS]),
            label[0] if label else None,
            values.get("filename"),
            skeleton_index,
            raw[skeleton_index],
        )

    def matches(self, rows: np.ndarray) -> np.ndarray:
        """Which rows (uint8 [n, length]) share this layout's skeleton."""
        return (rows[:, self.skeleton_index] == self.skeleton).all(axis=1)

    def extract(self, rows: np.ndarray, bands: np.ndarray, labels: np.ndarray) -> list[str]:
        """Fill bands [n, 11, 4225] and labels [n] from matching rows; return the filenames."""
        for b, offset in enumerate(self.band_offsets):
            bands[:, b] = rows[:, offset : offset + PIXELS]
        labels[:] = rows[:, self.label_offset] if self.label_offset is not None else -1
        if self.filename_span is None:
            return [""] * len(rows)
        start, stop = self.filename_span
        return [bytes(row).decode(errors="replace") for row in rows[:, start:stop]]
