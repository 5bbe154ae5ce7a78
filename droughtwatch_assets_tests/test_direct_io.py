import os
from pathlib import Path

import numpy as np
import pytest

from droughtwatch_assets.records.direct_io import ALIGNMENT, DirectFile, aligned_buffer


def _pieces(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = [1, 7, ALIGNMENT - 1, ALIGNMENT, 3 * ALIGNMENT + 5, 70_000, 100_001, 12]
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in sizes]


@pytest.mark.parametrize("buffer_bytes", [2 * ALIGNMENT, 64 * ALIGNMENT])
def test_bytes_and_length_are_exact_whatever_the_write_sizes(tmp_path, buffer_bytes):
    pieces = _pieces(0)
    with DirectFile(tmp_path / "out", buffer_bytes=buffer_bytes) as file:
        for piece in pieces:
            assert file.write(piece) == len(piece)
    assert (tmp_path / "out").read_bytes() == b"".join(pieces)


def test_blocks_written_in_place_interleave_with_ordinary_writes(tmp_path):
    pieces = _pieces(1)
    with DirectFile(tmp_path / "out", buffer_bytes=4 * ALIGNMENT) as file:
        for i, piece in enumerate(pieces):
            if i % 2:
                file.write(piece)
            else:  # as RecordWriter lays a block out: after room for the bytes the file holds back
                held = file.size % ALIGNMENT
                region = aligned_buffer(ALIGNMENT + len(piece))
                region[held : held + len(piece)] = np.frombuffer(piece, np.uint8)
                file.write_in_place(region, held, len(piece))
    assert (tmp_path / "out").read_bytes() == b"".join(pieces)


def test_numpy_frames_are_written_as_their_bytes(tmp_path):
    frames = np.arange(3 * 5000, dtype=np.uint32).reshape(3, 5000)
    with DirectFile(tmp_path / "out") as file:
        file.write(frames[:2])
    assert (tmp_path / "out").read_bytes() == frames[:2].tobytes()


def test_an_empty_file_stays_empty(tmp_path):
    DirectFile(tmp_path / "out").close()
    assert (tmp_path / "out").stat().st_size == 0


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm")
def test_tmpfs_files_are_exact_too():
    path = f"/dev/shm/droughtwatch-direct-{os.getpid()}"
    try:
        with DirectFile(path) as file:
            file.write(b"abc" * 5000)
        assert Path(path).read_bytes() == b"abc" * 5000
    finally:
        os.remove(path)


def o_direct_works(folder) -> bool:
    """An independent probe: the kernel opens a file here with O_DIRECT and takes an aligned write."""
    import mmap

    if not hasattr(os, "O_DIRECT"):
        return False
    path = os.path.join(folder, "o-direct-probe")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    try:
        os.write(fd, mmap.mmap(-1, ALIGNMENT))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.remove(path)


def kernel_flags(fd: int) -> int:
    """The open flags the kernel holds for a file descriptor (Linux: /proc/self/fdinfo)."""
    line = next(line for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if line.startswith("flags:"))
    return int(line.split()[1], 8)


@pytest.fixture
def direct_folder(tmp_path):
    if not os.path.isdir("/proc/self/fdinfo") or not o_direct_works(tmp_path):
        pytest.skip(f"{tmp_path} refuses O_DIRECT: the plain fall-back is what runs here")
    return tmp_path


def test_where_the_filesystem_takes_o_direct_the_bytes_go_out_with_it(direct_folder):
    data = np.arange(5 * ALIGNMENT + 7, dtype=np.uint32).tobytes()
    with DirectFile(direct_folder / "out", buffer_bytes=2 * ALIGNMENT) as file:
        file.write(data)  # more than the buffer: whole units have reached the device
        assert kernel_flags(file._fd) & os.O_DIRECT, "the file is not open with O_DIRECT"
    assert file.direct, "the writes fell back to the page cache"
    assert (direct_folder / "out").read_bytes() == data


def test_processing_writes_its_shards_with_o_direct_where_the_filesystem_takes_it(direct_folder, real_shard):
    from droughtwatch_assets.data.processing import process_shard

    stats = process_shard(real_shard, direct_folder / "shard", ("B2", "B3", "B4", "B5"))
    assert stats.records == 79 and stats.direct_io
