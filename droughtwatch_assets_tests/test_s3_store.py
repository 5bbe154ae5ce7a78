"""The S3 artifact store against moto's S3 server on loopback."""

import time
import uuid

import pytest

from droughtwatch_assets.storage import s3_client as s3
from droughtwatch_assets.storage.s3 import S3ArtifactStore
from droughtwatch_assets_tests.conftest import free_port, moto_server


def new_store(tmp_path, endpoint, bucket=None, create=True, **credentials) -> S3ArtifactStore:
    credentials = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = s3.client(endpoint, "us-east-1", **credentials)
    return S3ArtifactStore(client, bucket or f"dw-{uuid.uuid4().hex[:8]}", "pre", tmp_path / "cache", create)


def staged(store, files: dict[str, bytes]):
    staging = store.new_staging_dir()
    for name, body in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(body)
    return staging


def test_commit_then_read_back_through_a_fresh_cache(tmp_path, s3_endpoint):
    store = new_store(tmp_path, s3_endpoint)
    store.commit(staged(store, {"train/part-r-00000": b"a" * 1000, "manifest.json": b"{}"}), ("raw", "__all__"))
    assert store.uploaded[-2].endswith("versions/" + store.uploaded[-2].split("/")[-1])
    assert store.uploaded[-1] == "pre/raw/__all__/CURRENT"
    assert store.uploaded[-3].startswith("pre/raw/__all__/objects/manifest.json/")  # the manifest goes up last

    reader = S3ArtifactStore(store.client, store.bucket, "pre", tmp_path / "other-cache")
    local = reader.current(("raw", "__all__"))
    assert (local / "train" / "part-r-00000").read_bytes() == b"a" * 1000
    assert reader.current(("raw", "__all__")) == local


def test_unchanged_files_are_not_uploaded_again(tmp_path, s3_endpoint):
    store = new_store(tmp_path, s3_endpoint)
    files = {"train/part-r-00000": b"x" * 5000, "val/part-r-00000": b"y" * 5000, "manifest.json": b"{}"}
    store.commit(staged(store, files), ("raw", "__all__"))
    first = len(store.uploaded)
    store.commit(staged(store, {**files, "val/part-r-00000": b"z" * 5000}), ("raw", "__all__"))
    second = store.uploaded[first:]
    assert [k.split("/")[3:5] for k in second[:-2]] == [["objects", "val"]]  # only the changed shard
    assert len(second) == 3  # the changed shard, the version index, CURRENT


def test_a_cached_object_is_not_downloaded_twice(tmp_path, s3_endpoint):
    store = new_store(tmp_path, s3_endpoint)
    store.commit(staged(store, {"a": b"1" * 100, "b": b"2" * 100}), ("m", "p"))
    reader = S3ArtifactStore(store.client, store.bucket, "pre", tmp_path / "reader")
    reader.current(("m", "p"))
    downloads = []
    store.client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda **kw: downloads.append(kw["params"]["Key"])
    )
    store.commit(staged(store, {"a": b"1" * 100, "b": b"3" * 100}), ("m", "p"))
    reader.current(("m", "p"))
    objects = [k for k in downloads if "/objects/" in k]
    assert len(objects) == 1 and "/objects/b/" in objects[0]


def test_an_interrupted_commit_leaves_the_previous_version_readable(tmp_path, s3_endpoint):
    store = new_store(tmp_path, s3_endpoint)
    store.commit(staged(store, {"value": b"old"}), ("m", "p"))

    class Crash(Exception):
        pass

    def crash_before_current(**kwargs):
        if kwargs["params"]["Key"].endswith("CURRENT"):
            raise Crash()

    store.client.meta.events.register("before-parameter-build.s3.PutObject", crash_before_current)
    with pytest.raises(Crash):
        store.commit(staged(store, {"value": b"new"}), ("m", "p"))
    reader = S3ArtifactStore(store.client, store.bucket, "pre", tmp_path / "reader")
    assert (reader.current(("m", "p")) / "value").read_bytes() == b"old"


def test_a_missing_bucket_is_created_only_when_allowed(tmp_path, s3_endpoint):
    store = new_store(tmp_path, s3_endpoint, bucket="dw-missing", create=False)
    with pytest.raises(s3.S3Error, match=r"bucket 'dw-missing' at http://127\.0\.0\.1:\d+: .*create the bucket"):
        store.ensure_bucket()
    new_store(tmp_path, s3_endpoint, bucket="dw-created", create=True).ensure_bucket()


def test_an_unreachable_endpoint_fails_fast_naming_endpoint_and_bucket(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = new_store(tmp_path, endpoint, bucket="dw-nowhere")
    started = time.monotonic()
    with pytest.raises(s3.S3Error, match=rf"bucket 'dw-nowhere' at {endpoint}: .*reachable"):
        store.ensure_bucket()
    assert time.monotonic() - started < 30


@pytest.mark.s3
def test_wrong_credentials_are_named(tmp_path):
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:
        store = new_store(
            tmp_path, endpoint, bucket="dw-auth", aws_access_key_id="AKIAWRONG", aws_secret_access_key="wrong"
        )
        with pytest.raises(s3.S3Error, match=rf"bucket 'dw-auth' at {endpoint}: .*AWS_ACCESS_KEY_ID"):
            store.ensure_bucket()
