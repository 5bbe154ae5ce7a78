import pytest

from droughtwatch_assets.storage.local import LocalArtifactStore


def test_commit_swaps_the_current_version_and_keeps_the_previous_ones(tmp_path):
    store = LocalArtifactStore(tmp_path)
    versions = []
    for n in range(3):
        staging = store.new_staging_dir()
        (staging / "value.txt").write_text(str(n))
        store.commit(staging, ("asset", "p"))
        versions.append(store.current(("asset", "p")))
        assert (versions[-1] / "value.txt").read_text() == str(n)
    remaining = sorted(p.name for p in (tmp_path / "asset" / "p").iterdir() if p.name.startswith("v-"))
    assert remaining == sorted(v.name for v in versions)  # retention removes old ones, not the commit
    assert (tmp_path / "asset" / "p" / "current").is_symlink()


def test_a_missing_artifact_says_to_materialise_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialise it first"):
        LocalArtifactStore(tmp_path).current(("raw_tfrecords", "__all__"))
