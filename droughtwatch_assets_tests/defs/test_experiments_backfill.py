"""Experiments as one asset backfill through a real daemon: `droughtwatch experiments --backfill --wait` with the
project's dagster.yaml. Each asset partition is materialised once, and the champion is the best evaluated model."""

import json
import os
import re
import subprocess

import dagster as dg
import pytest

from droughtwatch_assets_tests.conftest import REPO_ROOT, TINY_SAMPLE, VENV_BIN, dagster_daemon, dagster_home


def materialisations(instance: dg.DagsterInstance, asset: str) -> list:
    return instance.fetch_materializations(dg.AssetKey(asset), limit=100).records


def per_partition(records) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.partition_key] = counts.get(record.partition_key, 0) + 1
    return counts


@pytest.mark.daemon
def test_an_experiments_backfill_materialises_raw_leaderboard_and_champion_once_and_each_chain_once(tmp_path):
    home = dagster_home(tmp_path / "home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }
    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}, "trained_model": {"config": {"epochs": 2}}}}
    command = [VENV_BIN / "droughtwatch", "experiments", "--backfill", "--wait", "--feature-sets", "baseline,rgb"]
    with dagster_daemon(env):
        completed = subprocess.run(
            [*command, "--config-json", json.dumps(config)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    backfill_id = re.search(r"^backfill (\w+): baseline, rgb", completed.stdout, re.MULTILINE)[1]
    assert f"http://127.0.0.1:3000/runs/b/{backfill_id}" in completed.stdout

    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    for asset in ("raw_tfrecords", "leaderboard", "champion"):
        assert len(materialisations(instance, asset)) == 1, asset
    for asset in ("processed_tfrecords", "trained_model", "onnx_model", "model_evaluation"):
        assert per_partition(materialisations(instance, asset)) == {"baseline": 1, "rgb": 1}, asset
    assert materialisations(instance, "published_model") == []  # not part of the comparison

    evaluations = {
        r.partition_key: r.asset_materialization.metadata for r in materialisations(instance, "model_evaluation")
    }
    [leaderboard] = materialisations(instance, "leaderboard")
    assert leaderboard.timestamp > max(r.timestamp for r in materialisations(instance, "model_evaluation"))
    beating = {
        name: m["val_accuracy"].value
        for name, m in evaluations.items()
        if m["val_accuracy"].value > m["majority_class_rate"].value
    }
    [champion] = materialisations(instance, "champion")
    expected = max(beating, key=beating.get) if beating else "none"
    assert champion.asset_materialization.metadata["champion"].value == expected, beating
    assert f"champion: {champion.asset_materialization.metadata['decision'].value}" in completed.stdout
