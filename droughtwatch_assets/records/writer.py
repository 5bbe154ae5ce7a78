"""Writing TFRecord shards: per-record framing, whole framed blocks, and writes behind the computation.

Processing computes a block of records straight into a frame buffer (`UniformBlock`), then hands the
buffer to the writer. With `write_behind`, a thread writes it to the file while the caller computes
the next block into a second buffer, so write time overlaps parse and maths time instead of adding
to it.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections.abc import Sequence

import crc32c
import numpy as np

from droughtwatch_assets.core.features import IMAGE_SIZE
from droughtwatch_assets.records.direct_io import ALIGNMENT, DirectFile, aligned_buffer
from droughtwatch_assets.records.tfrecord import (
    FILENAME_KEY,
    IMAGE_KEY,
    LABEL_KEY,
    ProcessedLayout,
    encode_example,
    mask_crc,
    masked_crc,
)


class _FrameSlot:
    def __init__(self):
        self.region = np.empty(0, dtype=np.uint8)
        self.held = self.nbytes = 0
        self.written = threading.Event()
        self.written.set()


class _WriteBehind:
    """A thread that writes handed-over buffers in order; each slot's buffer is reused once written.

    For a DirectFile, each block is laid out after room for the bytes the file holds back (see
    DirectFile.write_in_place), so the block goes to the device without another copy.
    """

    def __init__(self, file, slots: int = 2):
        self._file = file
        self._slots = [_FrameSlot() for _ in range(slots)]
        self._next = 0
        self._queue: queue.Queue[_FrameSlot | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()

    def _write(self, slot: _FrameSlot) -> None:
        if isinstance(self._file, DirectFile):
            self._file.write_in_place(slot.region, slot.held, slot.nbytes)
        else:
            self._file.write(slot.region[slot.held : slot.held + slot.nbytes])

    def _run(self) -> None:
        while (slot := self._queue.get()) is not None:
            try:
                if self._error is None:  # after a failed write, later blocks are dropped
                    self._write(slot)
            except BaseException as error:  # re-raised in the caller's thread
                self._error = error
            finally:
                slot.written.set()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def buffer(self, rows: int, width: int, written_so_far: int) -> np.ndarray:
        slot = self._slots[self._next]
        slot.written.wait()
        self._raise_error()
        slot.held = written_so_far % ALIGNMENT if isinstance(self._file, DirectFile) else 0
        slot.nbytes = rows * width
        if len(slot.region) < ALIGNMENT + slot.nbytes:
            slot.region = aligned_buffer(ALIGNMENT + slot.nbytes)
        return slot.region[slot.held : slot.held + slot.nbytes].reshape(rows, width)

    def submit(self) -> None:
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        slot.written.clear()
        self._queue.put(slot)

    def drain(self) -> None:
        for slot in self._slots:
            slot.written.wait()
        self._raise_error()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()


class RecordWriter:
    """Writes TFRecord framing; payloads may be given as parts to avoid joining large buffers.

    `write_behind=True` writes framed blocks on a background thread (see the module docstring). A
    write error there is raised by the next call, or by close(). `direct=True` bypasses the page cache
    where the filesystem allows (see direct_io.py).
    """

    def __init__(self, path: str | os.PathLike, write_behind: bool = False, direct: bool = False):
        self.path = os.fspath(path)
        self._file = DirectFile(self.path) if direct else open(self.path, "wb", buffering=1 << 20)
        self._behind = _WriteBehind(self._file) if write_behind else None
        self._frames = np.empty((0, 0), dtype=np.uint8)
        self.records = 0
        self.bytes = 0

    def write(self, parts: Sequence[bytes | memoryview]) -> None:
        if self._behind:
            self._behind.drain()  # keep record order with blocks still being written
        length = sum(len(p) for p in parts)
        length_bytes = struct.pack("<Q", length)
        crc = 0
        for part in parts:
            crc = crc32c.crc32c(part, crc)
        self._file.write(length_bytes + struct.pack("<I", masked_crc(length_bytes)))
        for part in parts:
            self._file.write(part)
        self._file.write(struct.pack("<I", mask_crc(crc)))
        self.records += 1
        self.bytes += length + 16

    def frame_buffer(self, rows: int, width: int) -> np.ndarray:
        """A uint8 [rows, width] buffer for the next write_framed(); reused between blocks."""
        if self._behind:
            return self._behind.buffer(rows, width, self.bytes)
        if self._frames.shape[0] < rows or self._frames.shape[1] != width:
            self._frames = np.empty((rows, width), dtype=np.uint8)
        return self._frames[:rows]

    def write_framed(self, frames: np.ndarray, count: int) -> None:
        """Already-framed records (length, checksums and payload): the buffer from frame_buffer()."""
        if self._behind:
            self._behind.submit()
        else:
            self._file.write(frames)
        self.records += count
        self.bytes += frames.nbytes

    @property
    def direct(self) -> bool:
        """Whether every byte so far went to the file with O_DIRECT (False once the filesystem refused it)."""
        return isinstance(self._file, DirectFile) and self._file.direct

    def close(self) -> None:
        try:
            if self._behind:
                self._behind.stop()
                self._behind.drain()
        finally:
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None and self._behind:
            self._behind.stop()  # the caller's error wins over a write error
            self._behind = None
        self.close()


class UniformBlock:
    """A block of processed records of one length (one filename length, labels 0..3), framed with numpy.

    Byte-for-byte what the per-record path writes. Only the image, the label byte, the filename and the
    data checksum differ between records, so the rest is a template copied into every row, and `images`
    is a float32 [n, 65, 65, C] view into the frame buffer that features can be computed straight into.
    """

    def __init__(self, writer: RecordWriter, n: int, channels: int, ids: list[bytes]):
        layout = ProcessedLayout.of(channels)
        size = layout.image_bytes
        first = {IMAGE_KEY: bytes(size), LABEL_KEY: 0}
        if ids[0]:
            first[FILENAME_KEY] = ids[0]
        payload = b"".join(bytes(p) for p in encode_example(first))
        image_at = 12 + layout.image_at  # after the frame's length and its CRC
        length = struct.pack("<Q", len(payload))
        template = np.frombuffer(length + struct.pack("<I", masked_crc(length)) + payload + bytes(4), np.uint8)
        self._writer, self._n = writer, n
        self._frames = frames = writer.frame_buffer(n, len(template))
        frames[:, :image_at] = template[:image_at]
        frames[:, image_at + size :] = template[image_at + size :]
        self._label_at = 12 + layout.label_at
        if ids[0]:
            frames[:, -4 - len(ids[0]) : -4] = np.frombuffer(b"".join(ids), dtype=np.uint8).reshape(n, -1)
        self.images = frames[:, image_at : image_at + size].view("<f4").reshape(n, IMAGE_SIZE, IMAGE_SIZE, channels)

    @classmethod
    def create(cls, writer: RecordWriter, n: int, channels: int, ids: Sequence[str]) -> UniformBlock | None:
        encoded = [i.encode() for i in ids]
        return cls(writer, n, channels, encoded) if n and len(set(map(len, encoded))) == 1 else None

    def write(self, labels: np.ndarray) -> None:
        frames = self._frames
        frames[:, self._label_at] = labels
        body = frames[:, 12:-4]
        crcs = np.fromiter((masked_crc(row) for row in body), dtype="<u4", count=self._n)
        frames[:, -4:] = crcs.view(np.uint8).reshape(self._n, 4)
        self._writer.write_framed(frames, self._n)


def write_processed(writer: RecordWriter, images: np.ndarray, labels: np.ndarray, ids: Sequence[str]) -> None:
    """Append processed records {image: float32 [65, 65, C] bytes, label, filename} for images [n, 65, 65, C]."""
    block = UniformBlock.create(writer, len(images), images.shape[-1], ids) if len(images) else None
    if block is not None:
        block.images[...] = images
        block.write(labels)
        return
    images = np.ascontiguousarray(images, dtype="<f4")
    size = images[0].nbytes if len(images) else 0
    flat = memoryview(images).cast("B")
    for i, (label, record_id) in enumerate(zip(labels.tolist(), ids)):
        features: dict[str, bytes | memoryview | int] = {IMAGE_KEY: flat[i * size : (i + 1) * size], LABEL_KEY: label}
        if record_id:
            features[FILENAME_KEY] = record_id.encode()
        writer.write(encode_example(features))
