"""A write-only file that bypasses the page cache (O_DIRECT) where the system allows it.

Processed shards are written once, in large sequential blocks. Through the page cache, every block
first needs fresh cache pages, and how fast the kernel hands those out swings about 10x on virtual
machines. O_DIRECT moves the bytes from reused, page-aligned buffers straight to the device.
O_DIRECT needs aligned addresses, lengths and offsets, so bytes are written in whole 4 KiB units,
the few bytes after the last whole unit are held back for the next write, and the file is cut to
its real length on close. Where O_DIRECT is not available (macOS, older tmpfs, some network
filesystems) the file is an ordinary one.
"""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np

ALIGNMENT = 4096  # a multiple of every common logical block size
BUFFER_BYTES = 8 << 20


def aligned_buffer(size: int) -> np.ndarray:
    """A uint8 buffer whose first byte sits on an ALIGNMENT boundary."""
    raw = np.empty(size + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size]


class DirectFile:
    def __init__(self, path: str | os.PathLike, buffer_bytes: int = BUFFER_BYTES):
        self.path = os.fspath(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        direct = getattr(os, "O_DIRECT", 0)
        self.direct = bool(direct)
        try:
            self._fd = os.open(self.path, flags | direct, 0o644)
        except OSError as error:
            if not direct or error.errno != errno.EINVAL:
                raise
            self._fd, self.direct = os.open(self.path, flags, 0o644), False
        self._map = mmap.mmap(-1, buffer_bytes)  # anonymous maps are page-aligned
        self._buffer = memoryview(self._map)
        self._array = np.frombuffer(self._map, dtype=np.uint8)  # numpy copies release the GIL; memoryview's don't
        self._fill = 0
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        data = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        n = len(data)
        while len(data):
            take = min(len(data), len(self._array) - self._fill)
            self._array[self._fill : self._fill + take] = data[:take]
            self._fill += take
            data = data[take:]
            if self._fill == len(self._buffer):
                self._flush_whole_units()
        self.size += n
        return n

    def write_in_place(self, region: np.ndarray, held: int, length: int) -> None:
        """Write region[held:held + length] without copying it through the buffer.

        `region` comes from aligned_buffer(), and `held` is the number of bytes this file holds back
        (its size so far modulo ALIGNMENT). Those bytes are copied into region[:held], so whole units
        go from the region to the device, and only the new remainder is kept back.
        """
        self._flush_whole_units()
        if not self.direct or self._fill != held:
            self.write(region[held : held + length])
            return
        region[:held] = self._array[:held]
        end = held + length
        whole = end - end % ALIGNMENT
        self._write_all(memoryview(region[:whole]))
        self._array[: end - whole] = region[whole:end]
        self._fill = end - whole
        self.size += length

    def _flush_whole_units(self) -> None:
        whole = self._fill - self._fill % ALIGNMENT
        self._write_all(self._buffer[:whole])
        rest = self._fill - whole
        self._array[:rest] = self._array[whole : self._fill]
        self._fill = rest

    def _write_all(self, view: memoryview) -> None:
        while len(view):
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                if error.errno != errno.EINVAL or not self.direct:
                    raise
                self._stop_direct()  # the filesystem took O_DIRECT at open but refuses its writes
                continue
            view = view[written:]

    def _stop_direct(self) -> None:
        import fcntl  # only reached where O_DIRECT exists (Linux); Windows has no fcntl

        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._fill:
                padded = -(-self._fill // ALIGNMENT) * ALIGNMENT if self.direct else self._fill
                self._array[self._fill : padded] = 0
                self._write_all(self._buffer[:padded])
                os.ftruncate(self._fd, self.size)
        finally:
            os.close(self._fd)
            del self._array
            self._buffer.release()
            self._map.close()

    def __enter__(self) -> DirectFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
