"""What killed runs leave on local disk (staging folders, partial publications, the registry's temporary files) is
listed and removed by retention of the whole store once older than the grace period; nothing younger, nothing
committed, and nothing when retention runs after one commit."""

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from droughtwatch_assets.storage import retention
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.storage.registry import LocalModelRegistry
from droughtwatch_assets.storage.retention import RetentionPolicy
from droughtwatch_assets_tests.conftest import model_config

KEY = ("processed_tfrecords", "baseline")
POLICY = RetentionPolicy(keep=5, grace=timedelta(hours=1))
OLD = time.time() - 2 * 3600  # two hours ago: past the grace period


def write(path: Path, size: int, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def age(folder: Path, mtime: float) -> None:
    """Every file and folder under folder, and folder itself, last changed at mtime."""
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


class KilledRuns:
    """Three committed versions and two publications, then what killed runs left beside them."""

    def __init__(self, tmp_path):
        self.root = tmp_path / "data"
        self.store = LocalArtifactStore(self.root)
        self.registry = LocalModelRegistry(self.root / "registry")
        for n in range(3):
            staging = self.store.new_staging_dir()
            write(staging / "train" / "part-r-00000", 100 + n)
            (staging / "manifest.json").write_text(f'{{"data_version": "d{n}"}}')
            self.store.commit(staging, KEY)
        for seed in range(2):
            onnx = write(tmp_path / f"model-{seed}.onnx", 200 + seed)
            self.registry.publish("baseline", onnx, model_config(seed=seed))
        self.committed = files(self.root)

        # a processing run killed two hours ago: 1234 bytes in its staging folder
        self.killed = self.store.new_staging_dir()
        write(self.killed / "train" / "part-r-00000", 1000)
        write(self.killed / "train" / "part-r-00001", 234)
        age(self.killed, OLD)
        # a running step's: written just now, and one that began long ago but wrote a file a minute ago
        self.running = self.store.new_staging_dir()
        write(self.running / "model.keras", 77)
        self.still_writing = self.store.new_staging_dir()
        write(self.still_writing / "train" / "part-r-00000", 500)
        age(self.still_writing, OLD)
        write(self.still_writing / "train" / "part-r-00001", 50, mtime=time.time() - 60)
        for folder in (self.still_writing / "train", self.still_writing):  # only that file says it is in use
            os.utime(folder, (OLD, OLD))
        # made by a step before a long download: holds nothing, so stays however old
        self.empty = self.store.new_staging_dir()
        age(self.empty, OLD)

        model = self.registry.root / "baseline"
        # a publication killed while copying its model, and while replacing the top-level model.onnx
        self.partial = model / "versions" / ".v-20240501T000000000000-a1b2c3.partial"
        write(self.partial / "model.onnx", 300)
        age(self.partial, OLD)
        self.tmp = write(model / ".model.onnx.d4e5f6.tmp", 40, mtime=OLD)
        # one being written now
        self.publishing = model / "versions" / ".v-20240501T000001000000-0a0b0c.partial"
        write(self.publishing / "model.onnx", 300)
        # the first publication of a model, killed before its CURRENT
        self.never_current = self.registry.root / "ghost" / "versions" / "v-20240501T000002000000-0d0e0f"
        write(self.never_current / "model.onnx", 60)
        write(self.never_current / "config.yaml", 6)
        age(self.never_current, OLD)

        self.orphans = {
            ("orphans: staging", self.killed.name, 1234): self.killed,
            ("orphans: registry baseline", self.tmp.name, 40): self.tmp,
            ("orphans: registry baseline", self.partial.name, 300): self.partial,
            ("orphans: registry ghost", self.never_current.name, 66): self.never_current,
        }


def test_the_plan_lists_exactly_the_old_orphans_and_remove_deletes_only_them(tmp_path):
    runs = KilledRuns(tmp_path)
    before = files(runs.root)

    dry = retention.plan(runs.store, runs.registry, POLICY)
    assert files(runs.root) == before  # planning deletes nothing
    assert [(r.location, r.version, r.size) for r in dry.removals] == list(runs.orphans)
    assert [r.targets for r in dry.removals] == [(str(path),) for path in runs.orphans.values()]
    assert dry.lines(dry_run=True) == [
        f"would remove orphans: staging {runs.killed.name}: 1234 bytes",
        "would remove orphans: registry baseline .model.onnx.d4e5f6.tmp: 40 bytes",
        "would remove orphans: registry baseline .v-20240501T000000000000-a1b2c3.partial: 300 bytes",
        "would remove orphans: registry ghost v-20240501T000002000000-0d0e0f: 66 bytes",
        "total: 0 versions, 4 orphans, 1640 bytes would be freed (dry run: nothing removed)",
    ]

    runs.store.remove(dry)
    removed = {name for name in before if any((runs.root / name).is_relative_to(p) for p in runs.orphans.values())}
    assert sum(len(before[name]) for name in removed) == 1640
    assert files(runs.root) == {name: body for name, body in before.items() if name not in removed}
    assert not any(path.exists() for path in runs.orphans.values())
    assert runs.running.is_dir() and runs.still_writing.is_dir() and runs.empty.is_dir() and runs.publishing.is_dir()
    # every committed version and publication is whole
    assert {name: files(runs.root)[name] for name in runs.committed} == runs.committed
    versions, current = runs.store.versions(KEY)
    assert len(versions) == 3 and runs.store.current(KEY).name == current == versions[-1]
    model, config = runs.registry.current("baseline")
    assert model.read_bytes() == b"x" * 201 and config.seed == 1
    assert retention.plan(runs.store, runs.registry, POLICY).removals == ()


def test_orphans_go_only_once_older_than_the_grace_period(tmp_path):
    runs = KilledRuns(tmp_path)
    three_hours = RetentionPolicy(keep=5, grace=timedelta(hours=3))
    assert retention.plan(runs.store, runs.registry, three_hours).removals == ()
    later = datetime.now(UTC) + timedelta(hours=2)  # the running step's folder is two hours old by then
    found = {(r.location, r.version) for r in retention.plan(runs.store, runs.registry, POLICY, now=later).removals}
    assert found == {(location, name) for location, name, _ in runs.orphans} | {
        ("orphans: staging", runs.running.name),
        ("orphans: staging", runs.still_writing.name),
        ("orphans: registry baseline", runs.publishing.name),
    }


def test_retention_after_one_commit_leaves_the_orphans_to_gc(tmp_path):
    runs = KilledRuns(tmp_path)
    no_grace = RetentionPolicy(keep=1, grace=timedelta(0))
    after_commit = retention.plan(runs.store, runs.registry, no_grace, keys=[KEY], models=["baseline"])
    assert {r.location for r in after_commit.removals} == {"processed_tfrecords/baseline", "registry baseline"}
    assert not any(r.orphan for r in after_commit.removals)


@pytest.mark.integration
def test_droughtwatch_gc_lists_then_removes_what_a_killed_run_left(tmp_path):
    runs = KilledRuns(tmp_path)
    before = files(runs.root)

    def gc(*options) -> list[str]:
        result = subprocess.run(
            [Path(sys.executable).parent / "droughtwatch", "gc", *options],
            env={**os.environ, "DROUGHTWATCH_DATA_DIR": str(runs.root), "DROUGHTWATCH_GRACE_MINUTES": "90"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    dry = gc("--dry-run")
    assert files(runs.root) == before
    expected = [f"would remove {location} {name}: {size} bytes" for location, name, size in runs.orphans]
    assert dry == [*expected, "total: 0 versions, 4 orphans, 1640 bytes would be freed (dry run: nothing removed)"]
    assert gc("--dry-run", "--grace-minutes", "180")[-1].startswith("total: 0 versions, 0 bytes")

    assert gc() == [re.sub("^would remove", "removed", line) for line in expected] + [
        "total: 0 versions, 4 orphans, 1640 bytes freed"
    ]
    assert not any(path.exists() for path in runs.orphans.values())
    assert runs.running.is_dir() and runs.still_writing.is_dir() and runs.publishing.is_dir()
    assert {name: files(runs.root)[name] for name in runs.committed} == runs.committed
