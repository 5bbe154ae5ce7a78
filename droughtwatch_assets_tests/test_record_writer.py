import numpy as np
import pytest

from droughtwatch_assets.records import tfrecord as records
from droughtwatch_assets.records.writer import RecordWriter, write_processed


def _per_record(path, images, labels, ids) -> None:
    with RecordWriter(path) as writer:
        for image, label, record_id in zip(images, labels, ids):
            fields = {records.IMAGE_KEY: image.tobytes(), records.LABEL_KEY: int(label)}
            if record_id:
                fields[records.FILENAME_KEY] = record_id.encode()
            writer.write(records.encode_example(fields))


@pytest.mark.parametrize("ids", [["", "", ""], ["a-1", "b-2", "c-3"], ["x", "", "yy"]])
def test_block_writer_matches_the_per_record_encoding(tmp_path, ids):
    images = np.random.default_rng(0).random((3, 65, 65, 2), dtype=np.float32)
    labels = np.array([3, 0, 2])
    with RecordWriter(tmp_path / "block") as writer:
        write_processed(writer, images, labels, ids)
    _per_record(tmp_path / "single", images, labels, ids)
    assert (tmp_path / "block").read_bytes() == (tmp_path / "single").read_bytes()
    back = records.read_processed(tmp_path / "block", 2)
    np.testing.assert_array_equal(back.images, images)
    assert back.labels.tolist() == [3, 0, 2] and back.ids == ids


@pytest.mark.parametrize("direct", [False, True])
def test_write_behind_keeps_the_order_of_blocks_and_single_records(tmp_path, direct):
    rng = np.random.default_rng(1)
    blocks = []
    for n, ids in (
        (5, [f"id-{i}" for i in range(5)]),
        (3, ["a", "", "bbb"]),
        (4, [f"k{i}" for i in range(4)]),
        (2, ["long-id-0", "long-id-1"]),
        (6, [f"id-{i}" for i in range(6)]),
    ):
        blocks.append((rng.random((n, 65, 65, 3), dtype=np.float32), rng.integers(0, 4, n), ids))
    with RecordWriter(tmp_path / "behind", write_behind=True, direct=direct) as writer:
        for images, labels, ids in blocks:  # uniform blocks go to the thread; the mixed one is written inline
            write_processed(writer, images, labels, ids)
        assert writer.records == 20
    _per_record(
        tmp_path / "inline",
        *(
            np.concatenate(parts) if i < 2 else [item for part in parts for item in part]
            for i, parts in enumerate(zip(*blocks))
        ),
    )
    assert (tmp_path / "behind").read_bytes() == (tmp_path / "inline").read_bytes()


def test_a_failed_background_write_is_raised_to_the_caller():
    images = np.zeros((64, 65, 65, 4), dtype=np.float32)  # 4 MiB blocks: larger than the file buffer
    with pytest.raises(OSError, match="No space left on device"):
        with RecordWriter("/dev/full", write_behind=True) as writer:
            for _ in range(3):
                write_processed(writer, images, np.zeros(64, int), ["abc"] * 64)
