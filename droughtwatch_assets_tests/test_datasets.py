import hashlib

import pytest

from droughtwatch_assets.data import datasets


def test_build_raw_dataset_counts_and_hashes(real_folder, tmp_path):
    shards = datasets.find_split_shards(real_folder)
    dataset = datasets.build_raw_dataset(shards, tmp_path / "raw", {"type": "folder"})
    reopened = datasets.ShardedDataset.open(tmp_path / "raw")
    assert reopened.manifest == dataset.manifest
    assert dataset.records("train") == 81 and dataset.class_counts("val") == [46, 16, 14, 5]
    shard = dataset.manifest.splits["train"].shards[0]
    assert shard.md5 == hashlib.md5((real_folder / "train" / "part-r-00012").read_bytes()).hexdigest()
    assert len(dataset.manifest.data_version) == 16


def test_find_split_shards_accepts_the_extracted_archive_parent(real_folder):
    (real_folder.parent / "archive").mkdir()
    real_folder.rename(real_folder.parent / "archive" / "droughtwatch_data")
    found = datasets.find_split_shards(real_folder.parent / "archive")
    assert [p.name for p in found["val"]] == ["part-r-00012"]


def test_a_folder_without_shards_says_what_layout_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/part-r-NNNNN"):
        datasets.find_split_shards(tmp_path)


def test_an_incomplete_dataset_cannot_be_opened(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete dataset"):
        datasets.ShardedDataset.open(tmp_path)


def test_a_manifest_that_does_not_parse_names_its_file_and_the_problem(real_folder, tmp_path):
    datasets.build_raw_dataset(datasets.find_split_shards(real_folder), tmp_path / "raw", {"type": "folder"})
    path = tmp_path / "raw" / "manifest.json"
    path.write_text(path.read_text().replace('"records"', '"recs"', 1))
    with pytest.raises(ValueError, match=r"manifest.json is not a dataset manifest .*records.*materialise the dataset"):
        datasets.ShardedDataset.open(tmp_path / "raw")
