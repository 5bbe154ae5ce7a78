"""Retention after each commit: a run that materialises an asset removes that partition's versions beyond the
deployment's keep_versions, through real Dagster materialisations on the local store."""

import dagster as dg

from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.wiring.deployment import Deployment, local_resources
from droughtwatch_assets_tests.conftest import TINY_SAMPLE, assets_named

RAW = ("raw_tfrecords", "__all__")


def materialize_raw(data_dir, seed: int, **settings) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets_named("raw_tfrecords"),
        resources=local_resources(data_dir, **settings),
        run_config=dg.RunConfig(ops={"raw_tfrecords": {"config": {**TINY_SAMPLE, "sample_seed": seed}}}),
    )
    assert result.success
    return result


def removed_by(result: dg.ExecuteInProcessResult) -> int:
    return result.asset_materializations_for_node("raw_tfrecords")[0].metadata["old_versions_removed"].value


def test_each_materialisation_keeps_the_newest_versions(tmp_path):
    store = LocalArtifactStore(tmp_path)
    results = [materialize_raw(tmp_path, seed, keep_versions=3, grace_minutes=0) for seed in range(5)]
    assert [removed_by(r) for r in results] == [0, 0, 0, 1, 1]
    versions, current = store.versions(RAW)
    assert len(versions) == 3 and current == versions[-1]
    manifests = [store.location(RAW) / v / "manifest.json" for v in versions]
    assert len({m.read_text() for m in manifests}) == 3  # three different samples, each still whole


def test_within_the_grace_period_or_with_keep_0_nothing_is_removed(tmp_path):
    for seed in range(3):
        materialize_raw(tmp_path, seed, keep_versions=1)  # the default grace period: superseded seconds ago
    result = materialize_raw(tmp_path, 3, keep_versions=0, grace_minutes=0)
    assert "old_versions_removed" not in result.asset_materializations_for_node("raw_tfrecords")[0].metadata
    assert len(LocalArtifactStore(tmp_path).versions(RAW)[0]) == 4


def test_the_environment_sets_keep_versions_and_the_grace_period():
    deployment = Deployment.from_env({"DROUGHTWATCH_KEEP_VERSIONS": "7", "DROUGHTWATCH_GRACE_MINUTES": "2.5"})
    assert (deployment.keep_versions, deployment.grace_minutes) == (7, 2.5)
    assert (Deployment.from_env({}).keep_versions, Deployment.from_env({}).grace_minutes) == (5, 60)
    try:
        Deployment.from_env({"DROUGHTWATCH_KEEP_VERSIONS": "five"})
    except ValueError as exc:
        assert "DROUGHTWATCH_KEEP_VERSIONS='five' is not a whole number of 0 or more" in str(exc)
    else:
        raise AssertionError("a bad DROUGHTWATCH_KEEP_VERSIONS was accepted")
