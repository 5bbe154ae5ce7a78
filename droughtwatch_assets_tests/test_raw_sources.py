"""Listing the folder and S3 raw sources, and the S3 source's ETag cache (moto's server on loopback)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from droughtwatch_assets.records.tfrecord import RecordError
from droughtwatch_assets.sources.raw import (
    RawSource,
    ShardStamp,
    gather_shards,
    list_shards,
    locate_error,
    split_prefix_uri,
)
from droughtwatch_assets.storage.s3_client import S3Error


@pytest.fixture
def bucket(s3_env):
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    name = f"raw-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name


def test_folder_listing_names_split_and_shard_with_size_and_mtime(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "droughtwatch_data" / split).mkdir(parents=True)
    (tmp_path / "droughtwatch_data/train/part-r-00001").write_bytes(b"12345")
    (tmp_path / "droughtwatch_data/val/part-r-00000").write_bytes(b"1")
    (tmp_path / "droughtwatch_data/train/README.txt").write_text("not a shard")
    (tmp_path / "droughtwatch_data/train/part-r-dir").mkdir()

    listing = list_shards(RawSource("folder", str(tmp_path)))  # the parent of droughtwatch_data, as the archive

    assert list(listing) == ["train/part-r-00001", "val/part-r-00000"]
    stat = (tmp_path / "droughtwatch_data/train/part-r-00001").stat()
    assert listing["train/part-r-00001"] == ShardStamp(5, mtime_ns=stat.st_mtime_ns)
    assert ShardStamp.from_json(listing["train/part-r-00001"].to_json()) == listing["train/part-r-00001"]


def test_listing_a_missing_folder_or_an_unlistable_source_says_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist does not exist"):
        list_shards(RawSource("folder", str(tmp_path / "does-not-exist")))
    with pytest.raises(ValueError, match="'sample' cannot be listed; only folder and s3 can"):
        list_shards(RawSource("sample"))
    with pytest.raises(ValueError, match="needs a URI"):
        list_shards(RawSource("s3"))
    with pytest.raises(ValueError, match="not an s3://bucket/prefix URI"):
        split_prefix_uri("https://example.com/shards")


def test_s3_listing_keeps_direct_part_children_of_each_split_with_their_etag(bucket):
    client, name = bucket
    for key, body in {
        "drought/train/part-r-00000": b"a",
        "drought/train/part-r-00001": b"bb",
        "drought/train/old/part-r-00009": b"nested: not a shard of train/",
        "drought/train/_SUCCESS": b"",
        "drought/val/part-r-00000": b"ccc",
        "drought-other/train/part-r-00005": b"another prefix",
    }.items():
        client.put_object(Bucket=name, Key=key, Body=body)

    listing = list_shards(RawSource("s3", uri=f"s3://{name}/drought/"), client)

    assert {shard: stamp.size for shard, stamp in listing.items()} == {
        "train/part-r-00000": 1,
        "train/part-r-00001": 2,
        "val/part-r-00000": 3,
    }
    etag = client.head_object(Bucket=name, Key="drought/val/part-r-00000")["ETag"].strip('"')
    assert listing["val/part-r-00000"].etag == etag and listing["val/part-r-00000"].mtime_ns is None
    assert list_shards(RawSource("s3", uri=f"s3://{name}"), client) == {}


def test_s3_listing_of_a_missing_bucket_names_it(s3_env):
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    with pytest.raises(S3Error, match=r"'no-such-raw-bucket'.*NoSuchBucket"):
        list_shards(RawSource("s3", uri="s3://no-such-raw-bucket/x"), client)


def test_the_s3_source_downloads_only_new_or_changed_shards(bucket, tmp_path, real_shard):
    client, name = bucket
    data = real_shard.read_bytes()
    for key in ("in/train/part-r-00000", "in/train/part-r-00001", "in/val/part-r-00000"):
        client.put_object(Bucket=name, Key=key, Body=data)
    source = RawSource("s3", uri=f"s3://{name}/in")
    logs = []

    def gather():
        logs.clear()
        return gather_shards(source, tmp_path / "scratch", tmp_path / "downloads", logs.append, s3_client=client)

    shards, description = gather()
    assert description == {"type": "s3", "uri": f"s3://{name}/in"}
    assert [p.name for p in shards["train"]] == ["part-r-00000", "part-r-00001"]
    assert all(p.read_bytes() == data for paths in shards.values() for p in paths)
    assert logs == [f"s3://{name}/in: 3 shards, 3 downloaded, 0 unchanged (ETag) from the cache"]
    stats = {p: p.stat() for paths in shards.values() for p in paths}

    again, _ = gather()
    assert again == shards
    assert logs == [f"s3://{name}/in: 3 shards, 0 downloaded, 3 unchanged (ETag) from the cache"]
    assert all(p.stat().st_mtime_ns == s.st_mtime_ns and p.stat().st_ino == s.st_ino for p, s in stats.items())

    client.put_object(Bucket=name, Key="in/train/part-r-00001", Body=data[: len(data) // 2])
    changed, _ = gather()
    assert logs == [f"s3://{name}/in: 3 shards, 1 downloaded, 2 unchanged (ETag) from the cache"]
    assert changed["train"][1].read_bytes() == data[: len(data) // 2]
    assert not shards["train"][1].exists(), "the copy of the earlier version is dropped"
    assert changed["train"][0] == shards["train"][0] and changed["val"] == shards["val"]
    assert not list((tmp_path / "downloads").rglob("*.partial"))


def test_the_s3_source_needs_shards_in_both_splits(bucket, tmp_path):
    client, name = bucket
    client.put_object(Bucket=name, Key="in/train/part-r-00000", Body=b"x")
    with pytest.raises(FileNotFoundError, match=rf"s3://{name}/in: no part-\* shards under val/"):
        gather_shards(RawSource("s3", uri=f"s3://{name}/in"), tmp_path, tmp_path / "downloads", s3_client=client)


def test_an_error_about_a_copy_of_an_s3_shard_names_its_s3_key(tmp_path):
    error = RecordError(tmp_path / "staging" / "val" / "part-r-00000", 3, "truncated")
    located = locate_error(error, tmp_path / "staging", {"type": "s3", "uri": "s3://raw/in"})
    assert str(located).startswith("s3://raw/in/val/part-r-00000: record 3: truncated.")
    assert (located.index, located.problem) == (3, "truncated")
    assert locate_error(error, tmp_path / "staging", {"type": "folder", "folder": "/x"}) is error
    assert locate_error(error, tmp_path / "elsewhere", {"type": "s3", "uri": "s3://raw/in"}) is error
