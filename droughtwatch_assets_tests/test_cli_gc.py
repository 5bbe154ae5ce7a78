"""`droughtwatch gc` as a user runs it, on the local store and on S3 (moto's server on loopback)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from droughtwatch_assets.storage import s3_client as s3
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.storage.s3 import S3ArtifactStore

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
KEY = ("raw_tfrecords", "__all__")


def eight_versions(store) -> None:
    for n in range(8):
        staging = store.new_staging_dir()
        (staging / "train").mkdir()
        (staging / "train" / "part-r-00000").write_bytes(f"run {n} ".encode() * 100)
        (staging / "manifest.json").write_text("{}")
        store.commit(staging, KEY)


def gc(tmp_path, env: dict, *options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "droughtwatch", "gc", *options],
        cwd=tmp_path,
        env={**os.environ, "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_gc_dry_run_lists_what_would_go_then_gc_removes_it(tmp_path):
    store = LocalArtifactStore(tmp_path / "data")
    eight_versions(store)
    versions, current = store.versions(KEY)
    before = tree(tmp_path / "data")

    dry = gc(tmp_path, {}, "--dry-run", "--grace-minutes", "0")
    assert dry.returncode == 0, dry.stderr
    assert tree(tmp_path / "data") == before  # nothing deleted
    lines = dry.stdout.splitlines()
    assert [re.sub(r": \d+ bytes$", "", line) for line in lines[:-1]] == [
        f"would remove raw_tfrecords/__all__ {v}" for v in versions[:3]
    ]
    assert re.fullmatch(r"total: 3 versions, \d+ bytes would be freed \(dry run: nothing removed\)", lines[-1])

    within_grace = gc(tmp_path, {})  # every version was superseded seconds ago: the default hour protects them
    assert within_grace.returncode == 0 and within_grace.stdout.splitlines() == ["total: 0 versions, 0 bytes freed"]

    real = gc(tmp_path, {}, "--grace-minutes", "0")
    assert real.returncode == 0, real.stderr
    assert real.stdout.replace("removed", "would remove", 3).splitlines()[:-1] == lines[:-1]
    assert store.versions(KEY) == (versions[3:], current)
    assert store.current(KEY).name == versions[-1]


def test_gc_in_s3_mode_follows_the_deployment_and_its_keep_setting(tmp_path, s3_env):
    client = s3.client(s3_env["AWS_ENDPOINT_URL"], "us-east-1")
    store = S3ArtifactStore(client, "dw-cli-gc", "droughtwatch", tmp_path / "writer", create_bucket=True)
    eight_versions(store)
    env = {"DROUGHTWATCH_DEPLOYMENT": "s3", "DROUGHTWATCH_S3_BUCKET": "dw-cli-gc", "DROUGHTWATCH_KEEP_VERSIONS": "6"}

    result = gc(tmp_path, env, "--grace-minutes", "0")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 and "total: 2 versions" in result.stdout
    indexes = [o["Key"] for o in store.listing("droughtwatch/raw_tfrecords/__all__/versions/")]
    assert len(indexes) == 6
    objects = [o["Key"] for o in store.listing("droughtwatch/raw_tfrecords/__all__/objects/train/")]
    assert len(objects) == 6  # each removed version's own shard went with it


def test_gc_refuses_to_keep_nothing(tmp_path):
    result = gc(tmp_path, {}, "--keep", "0")
    assert result.returncode == 2 and "must keep at least 1 version" in result.stderr, result.stderr
