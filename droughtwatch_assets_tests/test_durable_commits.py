"""A commit reaches the disk in order: a version's files and folders are synced before the rename that makes them
current, and the folder holding the rename is synced after it. Recorded from the real system calls, in order."""

import os
from pathlib import Path

import pytest

from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.storage.registry import LocalModelRegistry
from droughtwatch_assets_tests.conftest import model_config


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """Every fsync (with the path its descriptor names) and every rename, as they happen."""
    recorded: list[tuple] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(descriptor):
        recorded.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    def recording_replace(source, target, **kwargs):
        recorded.append(("replace", str(source), str(target)))
        replace(source, target, **kwargs)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return recorded


def synced_before(calls: list[tuple], path: Path, index: int) -> bool:
    return ("fsync", str(path)) in calls[:index]


def test_a_version_is_synced_before_it_becomes_current_and_the_rename_after(tmp_path, calls):
    store = LocalArtifactStore(tmp_path / "store")
    staging = store.new_staging_dir()
    (staging / "train").mkdir()
    for name, size in (("train/part-r-00000", 4096), ("manifest.json", 100)):
        (staging / name).write_bytes(os.urandom(size))
    store.commit(staging, ("processed_tfrecords", "baseline"))

    location = tmp_path / "store" / "processed_tfrecords" / "baseline"
    [move] = [i for i, c in enumerate(calls) if c[0] == "replace" and c[1] == str(staging)]
    for path in (staging / "train" / "part-r-00000", staging / "manifest.json", staging / "train", staging):
        assert synced_before(calls, path, move), f"{path} not synced before the rename that publishes it"
    [swap] = [i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(location / "current")]
    assert move < swap
    assert ("fsync", str(location)) in calls[move + 1 : swap]  # the version's rename is durable ...
    assert calls[swap + 1 :] == [("fsync", str(location))]  # ... and so is the swap of `current`


def test_a_publication_is_synced_before_it_becomes_current(tmp_path, calls):
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(2048))
    registry = LocalModelRegistry(tmp_path / "registry")
    publication = registry.publish("baseline", model, model_config(), {"MODEL_CARD.md": "---\na: 1\n---\n"})

    folder = tmp_path / "registry" / "baseline"
    version = folder / "versions" / publication.version
    [move] = [i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(version)]
    staging = Path(calls[move][1])
    for name in ("model.onnx", "config.yaml", "MODEL_CARD.md"):
        assert synced_before(calls, staging / name, move), name
    assert synced_before(calls, staging, move)
    [current] = [i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(folder / "CURRENT")]
    assert synced_before(calls, Path(calls[current][1]), current)  # CURRENT's new text, before its rename
    assert calls[current + 1] == ("fsync", str(folder))
    assert (folder / "CURRENT").read_text() == publication.version
