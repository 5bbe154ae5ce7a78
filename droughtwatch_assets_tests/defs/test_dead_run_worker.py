"""A run whose worker dies (an OOM kill, a lost machine) never blocks its partition: with the project's dagster.yaml
and a real daemon, the code server that started the run worker marks the run failed, and the partition's next run
starts and succeeds."""

import json
import os
import re
import signal
import subprocess
import time

import dagster as dg
import psutil
import pytest

from droughtwatch_assets_tests.conftest import REPO_ROOT, TINY_SAMPLE, VENV_BIN, dagster_daemon, dagster_home, wait_for

ENDED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def launch(epochs: int, env: dict) -> None:
    config = {
        "ops": {
            "raw_tfrecords": {"config": TINY_SAMPLE},
            "trained_model": {"config": {"epochs": epochs, "tracker": "none"}},
        }
    }
    command = [VENV_BIN / "dagster", "job", "launch", "-w", "workspace.yaml", "-j", "baseline_job"]
    command += ["--tags", json.dumps({"dagster/partition": "baseline"}), "--config-json", json.dumps(config)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the event it reports as it starts; once the run is in trained_model."""
    logs = instance.all_logs(run_id)
    if not any(e.step_key == "trained_model" and e.dagster_event_type == dg.DagsterEventType.STEP_START for e in logs):
        return None
    return next(int(m[1]) for e in logs if (m := re.search(r"Started process for run \(pid: (\d+)\)", e.message)))


@pytest.mark.daemon
def test_a_run_whose_worker_tree_is_killed_in_training_is_failed_and_the_partitions_next_run_succeeds(tmp_path):
    home = dagster_home(tmp_path / "home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }
    instance = dg.DagsterInstance.from_config(str(home))
    launch(epochs=500, env=env)  # training that would last many minutes
    [killed] = instance.get_runs()
    with dagster_daemon(env):
        pid = wait_for(lambda: run_worker_pid(instance, killed.run_id), 300, "the run reached trained_model")
        worker = psutil.Process(pid)
        tree = [worker, *worker.children(recursive=True)]
        assert len(tree) >= 2  # the run worker and at least the training step's process
        for process in tree:
            os.kill(process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(
            lambda: instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE,
            60,
            "the killed run was marked FAILURE",
        )
        failed_after = time.monotonic() - killed_at
        launch(epochs=1, env=env)
        [again] = [run for run in instance.get_runs() if run.run_id != killed.run_id]
        wait_for(lambda: instance.get_run_by_id(again.run_id).status in ENDED, 600, "the next run ended")
    statuses = {run.run_id: run.status for run in instance.get_runs()}
    assert statuses == {killed.run_id: dg.DagsterRunStatus.FAILURE, again.run_id: dg.DagsterRunStatus.SUCCESS}, (
        "\n".join(str(e.message) for e in instance.all_logs(again.run_id))[-3000:]
    )
    print(f"the killed run was marked FAILURE {failed_after:.0f} s after the kill")
