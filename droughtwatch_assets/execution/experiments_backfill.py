"""Experiments as one asset backfill: the daemon materialises `raw_tfrecords` once, each chosen feature set's chain
up to `model_evaluation` once, then `leaderboard` and `champion` once, after every partition's evaluation. It is
what selecting those assets and partitions in the UI and launching a backfill does, asked for through the same
GraphQL mutation, by Dagster's own `dagster-graphql` command."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
# BulkActionStatus values of a backfill that will change no more
ENDED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
SUCCEEDED = {"COMPLETED", "COMPLETED_SUCCESS"}


def experiment_assets(defs: dg.Definitions) -> list[dg.AssetKey]:
    """champion and everything upstream of it: what experiments_job materialises."""
    return sorted(dg.AssetSelection.assets("champion").upstream().resolve(defs.resolve_asset_graph()))


def backfill_params(defs: dg.Definitions, feature_sets: list[str], run_config: dict | None = None) -> dict:
    """The mutation's parameters: every experiment asset, the partitioned ones for these feature sets."""
    graph = defs.resolve_asset_graph()
    selection = []
    for key in experiment_assets(defs):
        entry: dict = {"assetKey": {"path": key.path}}
        if graph.get(key).partitions_def is not None:
            entry["partitions"] = {"ranges": [{"start": name, "end": name} for name in feature_sets]}
        selection.append(entry)
    params = {"partitionsByAssets": selection, "title": f"experiments: {', '.join(feature_sets)}"}
    if run_config:
        params["runConfigData"] = run_config
    return params


def request_backfill(defs: dg.Definitions, feature_sets: list[str], run_config: dict | None = None) -> str:
    """Asks the instance of DAGSTER_HOME for the backfill; returns its id. The daemon runs it."""
    variables = json.dumps({"params": backfill_params(defs, feature_sets, run_config)})
    with tempfile.TemporaryDirectory() as scratch:
        response = Path(scratch, "response.json")
        command = [Path(sys.executable).parent / "dagster-graphql", "-m", "droughtwatch_assets.definitions"]
        command += ["-t", LAUNCH_BACKFILL, "-v", variables]
        completed = subprocess.run([*command, "-o", str(response)], capture_output=True, text=True)
        if completed.returncode != 0 or not response.exists():
            raise RuntimeError(f"dagster-graphql failed: {completed.stderr.strip()[-2000:]}")
        answer = json.loads(response.read_text())
    result = (answer.get("data") or {}).get("launchPartitionBackfill") or {}
    if result.get("__typename") != "LaunchBackfillSuccess":
        problem = result.get("message") or answer.get("errors") or answer
        raise RuntimeError(f"the backfill was refused ({result.get('__typename', 'no answer')}): {problem}")
    return result["backfillId"]


def wait_for_backfill(instance: dg.DagsterInstance, backfill_id: str, poll: float = 2.0) -> str:
    """Waits until the backfill has ended; returns its status (BulkActionStatus's value)."""
    while True:
        backfill = instance.get_backfill(backfill_id)
        if backfill is None:
            raise RuntimeError(f"no backfill {backfill_id} in the instance of DAGSTER_HOME")
        if backfill.status.value in ENDED:
            return backfill.status.value
        time.sleep(poll)
