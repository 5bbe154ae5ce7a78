"""What killed runs leave in S3 (moto's server on loopback): objects that no committed version's index names,
incomplete multipart uploads, a partial publication. `droughtwatch gc` on the S3 deployment lists and removes
exactly those; every committed version still reads back whole; others' uploads in the bucket stay. An object
that a commit reuses, or that an expired version names but a running commit has just uploaded again, is young
and stays."""

import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.storage import s3_client as s3
from droughtwatch_assets.storage.registry import S3ModelRegistry
from droughtwatch_assets.storage.retention import RetentionPolicy
from droughtwatch_assets.storage.s3 import S3ArtifactStore
from droughtwatch_assets_tests.conftest import model_config

pytestmark = pytest.mark.integration

RAW = ("raw_tfrecords", "__all__")
VAL = b"the same val shard in every version " * 20


def commit(store: S3ArtifactStore, key, files: dict[str, bytes]) -> str:
    staging = store.new_staging_dir()
    for relative, body in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(body)
    return store.commit(staging, key).rsplit("/", 1)[-1].removesuffix(".json")


def object_key(store: S3ArtifactStore, key, relative: str, body: bytes) -> str:
    return store.key(*key, "objects", relative, hashlib.md5(body).hexdigest())


def uploads(client, bucket: str) -> set[tuple[str, str]]:
    return {(u["Key"], u["UploadId"]) for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


def test_gc_lists_then_removes_exactly_what_killed_runs_left(tmp_path, s3_env):
    client = s3.client(s3_env["AWS_ENDPOINT_URL"], "us-east-1")
    bucket = f"dw-orphans-{uuid.uuid4().hex[:8]}"
    store = S3ArtifactStore(client, bucket, "droughtwatch", tmp_path / "writer", create_bucket=True)
    versions = {}
    for n in range(3):
        files = {"train/part-r-00000": f"train shard {n} ".encode() * 30, "val/part-r-00000": VAL}
        versions[commit(store, RAW, {**files, "manifest.json": json.dumps({"data_version": f"d{n}"}).encode()})] = files
    registry = S3ModelRegistry(S3ArtifactStore(client, bucket, "", tmp_path / "writer"))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an older model" * 10)
    registry.publish("baseline", onnx, model_config(seed=0))  # whole, no longer current: retention's, not gc's
    onnx.write_bytes(b"a published model" * 10)
    registry.publish("baseline", onnx, model_config(seed=1))

    # a processing run killed while uploading: one shard of a version never committed (321 bytes) ...
    stray = object_key(store, RAW, "train/part-r-00001", b"s" * 321)
    store.put_bytes(stray, b"s" * 321)
    # ... and the first commit of a partition, killed before its index: no CURRENT, no versions/ (456 bytes)
    first = object_key(store, ("processed_tfrecords", "baseline"), "train/part-r-00000", b"p" * 456)
    store.put_bytes(first, b"p" * 456)
    # a shard over the multipart threshold, killed after its first part (1000 bytes)
    big = object_key(store, RAW, "train/part-r-00002", b"big")
    big_upload = client.create_multipart_upload(Bucket=bucket, Key=big)["UploadId"]
    client.upload_part(Bucket=bucket, Key=big, UploadId=big_upload, PartNumber=1, Body=b"b" * 1000)
    # a publication killed after its model (170 bytes), and its model's multipart upload (600 bytes)
    partial = "baseline/versions/v-20240501T000000000000-a1b2c3"
    client.put_object(Bucket=bucket, Key=f"{partial}/model.onnx", Body=b"m" * 170)
    model_upload = client.create_multipart_upload(Bucket=bucket, Key=f"{partial}/model.onnx")["UploadId"]
    client.upload_part(Bucket=bucket, Key=f"{partial}/model.onnx", UploadId=model_upload, PartNumber=1, Body=b"n" * 600)
    # another program's upload in the same bucket: not ours
    foreign = client.create_multipart_upload(Bucket=bucket, Key="other-tool/backup.tar")["UploadId"]
    client.upload_part(Bucket=bucket, Key="other-tool/backup.tar", UploadId=foreign, PartNumber=1, Body=b"o" * 10)
    # a killed step's staging folder in gc's own cache (data dir): 88 bytes
    killed = tmp_path / "data" / ".staging" / "0123456789abcdef"
    (killed / "train").mkdir(parents=True)
    (killed / "train" / "part-r-00000").write_bytes(b"k" * 88)
    for path in (killed / "train" / "part-r-00000", killed / "train", killed):
        os.utime(path, (1e9, 1e9))

    def listing() -> dict[str, int]:
        return {o["Key"]: o["Size"] for o in store.listing("")}

    before, open_uploads = listing(), uploads(client, bucket)
    env = {
        **os.environ,
        "DROUGHTWATCH_DEPLOYMENT": "s3",
        "DROUGHTWATCH_S3_BUCKET": bucket,
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
    }

    def gc(*options) -> list[str]:
        command = [Path(sys.executable).parent / "droughtwatch", "gc", "--grace-minutes", "0", *options]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    expected = [
        "processed_tfrecords/baseline unreferenced objects: 456 bytes",
        "raw_tfrecords/__all__ unreferenced objects: 321 bytes",
        f"orphans: staging {killed.name}: 88 bytes",
        f"orphans: s3 multipart uploads s3://{bucket}/{big} (upload {big_upload}): 1000 bytes",
        "orphans: registry baseline v-20240501T000000000000-a1b2c3: 170 bytes",
        f"orphans: s3 multipart uploads s3://{bucket}/{partial}/model.onnx (upload {model_upload}): 600 bytes",
    ]
    total = "total: 0 versions, 6 orphans, 2635 bytes"
    assert gc("--dry-run") == [f"would remove {line}" for line in expected] + [
        f"{total} would be freed (dry run: nothing removed)"
    ]
    assert listing() == before and uploads(client, bucket) == open_uploads and killed.is_dir()
    # with an hour's grace only the staging folder, unchanged since 2001, is old enough
    assert gc("--dry-run", "--grace-minutes", "60")[:-1] == [f"would remove {expected[2]}"]

    assert gc() == [f"removed {line}" for line in expected] + [f"{total} freed"]
    gone = {stray, first, f"{partial}/model.onnx"}
    assert listing() == {k: size for k, size in before.items() if k not in gone}
    assert uploads(client, bucket) == {("other-tool/backup.tar", foreign)}
    assert not killed.exists()
    reader = S3ArtifactStore(client, bucket, "droughtwatch", tmp_path / "reader")
    for version, files in versions.items():
        folder = reader.version(RAW, version)
        assert {p: (folder / p).read_bytes() for p in files} == files
    model, config = registry.current("baseline", tmp_path / "published")
    assert model.read_bytes() == b"a published model" * 10 and config.model_md5 == md5_of(onnx)
    assert config.seed == 1
    assert gc() == ["total: 0 versions, 0 bytes freed"]


def test_a_commit_uploads_again_what_it_finds_but_the_current_version_does_not_name(tmp_path, s3_endpoint):
    client = s3.client(s3_endpoint, "us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    store = S3ArtifactStore(client, f"dw-{uuid.uuid4().hex[:8]}", "pre", tmp_path / "cache", create_bucket=True)
    a, b = {"x": b"a" * 100, "y": b"same" * 25}, {"x": b"b" * 100, "y": b"same" * 25}
    commit(store, RAW, a)
    commit(store, RAW, b)
    store.put_bytes(object_key(store, RAW, "x", b"c" * 100), b"c" * 100)  # a killed run's, old enough for gc
    done = len(store.uploaded)
    commit(store, RAW, {"x": b"c" * 100, "y": b"same" * 25})  # the current version names y, not x
    assert store.uploaded[done:-2] == [object_key(store, RAW, "x", b"c" * 100)]
    done = len(store.uploaded)
    commit(store, RAW, a)  # a's x: named by the first version only
    assert store.uploaded[done:-2] == [object_key(store, RAW, "x", b"a" * 100)]


def test_an_expired_versions_object_that_was_just_uploaded_again_stays(tmp_path, s3_endpoint):
    client = s3.client(s3_endpoint, "us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    store = S3ArtifactStore(client, f"dw-{uuid.uuid4().hex[:8]}", "pre", tmp_path / "cache", create_bucket=True)
    store.ensure_bucket()
    old, new = "v-20200101T000000000000-aaaaaa", "v-20200102T000000000000-bbbbbb"  # retired years ago
    shard, other = object_key(store, RAW, "x", b"old shard"), object_key(store, RAW, "x", b"new shard")
    for version, key in ((old, shard), (new, other)):
        store.put_bytes(key, b"written now")
        index = {"version": version, "files": {"x": {"key": key, "md5": "0" * 32, "size": 11, "etag": "e"}}}
        store.put_bytes(store.key(*RAW, "versions", f"{version}.json"), json.dumps(index).encode())
    store.put_bytes(store.key(*RAW, "CURRENT"), new.encode())
    index_key = store.key(*RAW, "versions", f"{old}.json")

    plan = store.plan_retention(RetentionPolicy(keep=1, grace=timedelta(hours=1)), [], datetime.now(UTC))
    # the old version goes, but its object was written (by a commit reusing it) within the hour: it stays
    assert [(r.version, r.targets[:-1]) for r in plan.removals] == [(old, (f"s3://{store.bucket}/{index_key}",))]
    no_grace = store.plan_retention(RetentionPolicy(keep=1, grace=timedelta(0)), [], datetime.now(UTC))
    assert [r.targets[:-1] for r in no_grace.removals] == [
        (f"s3://{store.bucket}/{index_key}", f"s3://{store.bucket}/{shard}")
    ]
