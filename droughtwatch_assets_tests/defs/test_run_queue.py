"""Runs as a deployment runs them: `dagster job launch` into a real instance with the run queue of the project's
dagster.yaml, the daemon dequeuing, the multiprocess executor (a process per step), and a real MLflow server."""

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from droughtwatch_assets_tests.conftest import (
    REPO_ROOT,
    TINY_SAMPLE,
    daemon_until_runs_end,
    dagster_home,
    write_blank_shard,
)

BIN = Path(sys.executable).parent
PASSWORD = "mlflow-password-not-for-logs"


def launch(job: str, partition: str, config: dict, env: dict) -> None:
    command = [
        BIN / "dagster",
        "job",
        "launch",
        "-w",
        "workspace.yaml",
        "-j",
        job,
        "--tags",
        json.dumps({"dagster/partition": partition}),
        "--config-json",
        json.dumps(config),
    ]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


@pytest.mark.daemon
def test_runs_of_one_partition_queue_run_one_after_the_other_and_each_is_one_ended_mlflow_run(
    tmp_path, mlflow_server, real_folder
):
    home = dagster_home(tmp_path / "home")
    experiment = f"queue-{time.time_ns()}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "mlflow",
        "MLFLOW_TRACKING_URI": mlflow_server,
        "DROUGHTWATCH_MLFLOW_EXPERIMENT": experiment,
        "MLFLOW_TRACKING_USERNAME": "droughtwatch",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
    }
    config = {
        "ops": {
            "raw_tfrecords": {"config": TINY_SAMPLE},
            "trained_model": {"config": {"model_name": "baseline", "register_model": True, "epochs": 1}},
        }
    }
    launch("baseline_job", "baseline", config, env)
    launch("baseline_job", "baseline", config, env)
    (real_folder / "val" / "part-r-00012").unlink()  # a third run fails in training: no val records
    write_blank_shard(real_folder / "val" / "part-r-00000")
    launch(
        "baseline_job",
        "baseline",
        {"ops": {**config["ops"], "raw_tfrecords": {"config": {"source": "folder", "folder": str(real_folder)}}}},
        env,
    )
    instance = dg.DagsterInstance.from_config(str(home))
    assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.QUEUED] * 3

    most_in_flight = 0

    def count_in_flight(statuses):
        nonlocal most_in_flight
        in_flight = [s for s in statuses if s in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)]
        most_in_flight = max(most_in_flight, len(in_flight))

    daemon_until_runs_end(env, instance, count_in_flight)

    records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
    assert [r.dagster_run.status for r in records] == [dg.DagsterRunStatus.SUCCESS] * 2 + [
        dg.DagsterRunStatus.FAILURE
    ], "\n".join(str(e.message) for r in records for e in instance.all_logs(r.dagster_run.run_id) if e.message)[-4000:]
    assert most_in_flight == 1
    by_start = sorted(records, key=lambda r: r.start_time)
    for earlier, later in itertools.pairwise(by_start):
        assert earlier.end_time <= later.start_time  # one after the other, as dagster.yaml's queue says
    failed, records = records[2], records[:2]

    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    for record in records:
        run_id = record.dagster_run.run_id
        runs = client.search_runs([experiment_id], filter_string=f"tags.dagster_run_id = '{run_id}'")
        assert len(runs) == 1, f"Dagster run {run_id} made {len(runs)} MLflow runs"
        run = runs[0]
        assert run.info.status == "FINISHED"  # every step that tracked closed its part
        assert {"loss", "val_accuracy", "pr_0_at_0.50"} <= set(run.data.metrics)
        assert "keras/model.keras" in {a.path for a in client.list_artifacts(run.info.run_id, "keras")}
        logged = [
            m.name
            for m in client.search_logged_models(experiment_ids=[experiment_id])
            if m.source_run_id == run.info.run_id
        ]
        assert "onnx" in logged and "registered_onnx" in logged
        texts = [str(run.data.params), str(run.data.tags), "\n".join(str(e) for e in instance.all_logs(run_id))]
        assert all(PASSWORD not in text for text in texts)
    failed_runs = client.search_runs(
        [experiment_id], filter_string=f"tags.dagster_run_id = '{failed.dagster_run.run_id}'"
    )
    assert [r.info.status for r in failed_runs] == ["FAILED"]  # ended by the training step that failed
    versions = client.search_model_versions("name='baseline'")
    assert {v.run_id for v in versions} >= {
        client.search_runs([experiment_id], filter_string=f"tags.dagster_run_id = '{r.dagster_run.run_id}'")[
            0
        ].info.run_id
        for r in records
    }
    files = b"\n".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file() and not p.is_symlink())
    assert PASSWORD.encode() not in files
