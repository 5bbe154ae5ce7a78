import os

import numpy as np
import pytest

from droughtwatch_assets.direct_io import ALIGNMENT, DirectFile, aligned_buffer


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
        assert open(path, "rb").read() == b"abc" * 5000
    finally:
        os.remove(path)
