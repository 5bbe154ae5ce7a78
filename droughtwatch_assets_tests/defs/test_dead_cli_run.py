"""A `droughtwatch run` killed mid-way blocks nothing, with the project's dagster.yaml: the next `droughtwatch`
command marks its run failed, naming the dead process; where a daemon runs, its `dead_cli_runs` sensor does within a
minute, and a queued run of the same partition then starts and succeeds. A `droughtwatch experiments` killed in its
champion step gives back the champion pool's slot, so the next command's champion step runs."""

import json
import os
import signal
import subprocess
import time

import dagster as dg
import pytest

from droughtwatch_assets_tests.conftest import (
    CHAMPION_DRAW,
    EXPERIMENT_SAMPLE,
    REPO_ROOT,
    TINY_SAMPLE,
    VENV_BIN,
    dagster_daemon,
    dagster_home,
    wait_for,
)


def env_for(tmp_path) -> dict:
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home(tmp_path / "home")),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }


def experiments_command() -> list:
    config = {
        "ops": {
            "raw_tfrecords": {"config": {**EXPERIMENT_SAMPLE, "sample_seed": CHAMPION_DRAW}},
            "trained_model": {"config": {"epochs": 1, "batch_size": 16, "seed": CHAMPION_DRAW}},
        }
    }
    return [VENV_BIN / "droughtwatch", "experiments", "--feature-sets", "baseline", "--config-json", json.dumps(config)]


def killed_in(
    step: str, env: dict, instance: dg.DagsterInstance, command: list | None = None
) -> tuple[dg.DagsterRun, int]:
    """`droughtwatch run` (or `command`) started, then SIGKILLed once its run has started `step`: (the run, the
    pid)."""
    cli = subprocess.Popen(
        command or [VENV_BIN / "droughtwatch", "run"],
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def in_step():
        runs = instance.get_runs()
        started = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START) if runs else []
        return runs[0] if any(e.step_key == step for e in started) else None

    deadline = time.monotonic() + 300
    while not (run := in_step()) and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the step's own process writes STEP_START; the kill follows within this poll
    assert run, f"the run did not reach {step} (the command exited with {cli.poll()})"
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    time.sleep(2)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # nothing else would fail it
    return run, cli.pid


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    [event] = [e for e in instance.all_logs(run_id) if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE]
    return event.message


@pytest.mark.integration
def test_the_next_droughtwatch_command_marks_a_killed_runs_run_failed_naming_its_process(tmp_path):
    env = env_for(tmp_path)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    dead, pid = killed_in("processed_tfrecords", env, instance)
    again = subprocess.run(
        [VENV_BIN / "droughtwatch", "run"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"run {dead.run_id} was left STARTED by a droughtwatch process that died; marked failed" in again.stdout
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert f"(pid {pid} on " in failure_message(instance, dead.run_id)
    assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


@pytest.mark.integration
def test_experiments_killed_in_the_champion_step_give_back_its_pool_slot_to_the_next_command(tmp_path):
    env = env_for(tmp_path)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    dead, _ = killed_in("champion", env, instance, experiments_command())
    pool = instance.event_log_storage.get_concurrency_info("champion")
    assert (pool.slot_count, pool.active_run_ids) == (1, {dead.run_id})  # the dead run holds the only slot
    again = subprocess.run(experiments_command(), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    champion = [e for e in instance.all_logs(instance.get_runs()[0].run_id) if e.step_key == "champion"]
    assert dg.DagsterEventType.STEP_SUCCESS in [e.dagster_event_type for e in champion]
    assert instance.event_log_storage.get_concurrency_info("champion").active_run_ids == set()


@pytest.mark.daemon
def test_with_a_daemon_a_killed_runs_run_is_failed_within_a_minute_and_its_partition_runs_again(tmp_path):
    env = env_for(tmp_path)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    dead, pid = killed_in("processed_tfrecords", env, instance)
    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}, "trained_model": {"config": {"epochs": 1}}}}
    launch = [VENV_BIN / "dagster", "job", "launch", "-w", "workspace.yaml", "-j", "baseline_job"]
    launch += ["--tags", json.dumps({"dagster/partition": "baseline"}), "--config-json", json.dumps(config)]
    subprocess.run(launch, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=300)
    [queued] = [r for r in instance.get_runs() if r.run_id != dead.run_id]
    with dagster_daemon(env):
        started = time.monotonic()
        wait_for(
            lambda: instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE,
            60,
            "the dead CLI run was marked FAILURE",
        )
        failed_after = time.monotonic() - started
        ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        wait_for(lambda: instance.get_run_by_id(queued.run_id).status in ended, 600, "the queued run ended")
    assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert f"(pid {pid} on " in failure_message(instance, dead.run_id)
    assert "dead_cli_runs sensor" in failure_message(instance, dead.run_id)
    print(f"the dead CLI run was marked FAILURE {failed_after:.0f} s after the daemon started")
