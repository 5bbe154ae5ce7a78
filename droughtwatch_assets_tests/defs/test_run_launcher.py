"""The instance's run launcher (defs/run_launcher.py): run workers forked from a preloaded run server, run by the
daemon with the project's dagster.yaml, and terminated as Dagster terminates a run."""

import json
import os
import sys
import time

import dagster as dg
import psutil
import pytest

from droughtwatch_assets.defs import run_launcher
from droughtwatch_assets.defs.fork_server import StepServer
from droughtwatch_assets.defs.run_launcher import PID_TAG, PreloadedRunLauncher
from droughtwatch_assets_tests.conftest import TINY_SAMPLE, dagster_cli, dagster_daemon, dagster_home


def test_the_run_server_is_started_anew_once_a_file_of_the_package_changes(tmp_path, monkeypatch):
    module = tmp_path / "package" / "definitions.py"
    module.parent.mkdir()
    module.write_text("x = 1\n")
    monkeypatch.setattr(run_launcher, "PACKAGE", module.parent)
    monkeypatch.setattr(StepServer, "start", lambda server: None)  # no process: this is about which server
    stopped = []
    monkeypatch.setattr(StepServer, "stop", lambda server: stopped.append(server))
    launcher = PreloadedRunLauncher()
    first = launcher._run_server()
    assert launcher._run_server() is first
    module.write_text("x = 22\n")
    second = launcher._run_server()
    assert second is not first and stopped == [first]  # the old one ended, so no run forks from old code
    assert launcher._run_server() is second


def run_of(module: str, executable: str, working_directory: str | None) -> dg.DagsterRun:
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

    pointer = ModuleCodePointer(module, "defs", working_directory)
    origin = JobPythonOrigin("baseline_job", RepositoryPythonOrigin(executable, pointer))
    return dg.DagsterRun(job_name="baseline_job", run_id="r", job_code_origin=origin)


def test_only_runs_of_this_package_with_this_python_fork_from_the_run_server(tmp_path):
    here = str(run_launcher.PACKAGE.parent)
    other_checkout = tmp_path / "checkout"
    (other_checkout / "droughtwatch_assets").mkdir(parents=True)
    forked = PreloadedRunLauncher._preloaded
    assert forked(run_of("droughtwatch_assets.definitions", sys.executable, here))
    assert forked(run_of("droughtwatch_assets.definitions", sys.executable, None))
    assert forked(run_of("droughtwatch_assets.definitions", sys.executable, str(tmp_path)))  # the installed package
    # what Dagster's own path runs: another code location, another Python, another checkout of the project
    assert not forked(run_of("other_project.definitions", sys.executable, here))
    assert not forked(run_of("droughtwatch_assets.definitions", "/opt/other-venv/bin/python", here))
    assert not forked(run_of("droughtwatch_assets.definitions", sys.executable, str(other_checkout)))


def run_worker_ancestry(pid: int) -> list[str]:
    return [" ".join(p.cmdline()) for p in psutil.Process(pid).parents()]


@pytest.mark.daemon
def test_the_daemons_run_worker_is_forked_from_the_preloaded_run_server_and_terminating_the_run_cancels_it(
    tmp_path,
):
    home = dagster_home(tmp_path / "home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }
    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}, "trained_model": {"config": {"epochs": 50}}}}
    launch = ["job", "launch", "-w", "workspace.yaml", "-j", "baseline_job"]
    dagster_cli(
        *launch, "--tags", json.dumps({"dagster/partition": "baseline"}), "--config-json", json.dumps(config), env=env
    )
    with dg.DagsterInstance.from_config(str(home)) as instance, dagster_daemon(env):
        [run] = instance.get_runs()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run.run_id)
            steps = {s.step_key for s in instance.get_run_step_stats(run.run_id)}
            if "trained_model" in steps or run.is_finished:
                break
            time.sleep(0.5)
        errors = [e.message for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_failure]
        assert "trained_model" in steps, (run.status, errors)  # training its 50 epochs

        pid = int(run.tags[PID_TAG])
        ancestry = run_worker_ancestry(pid)
        assert "multiprocessing.forkserver" in ancestry[0]  # forked, not spawned
        assert "droughtwatch_assets.defs.fork_server" in ancestry[1] and ancestry[1].split()[-2] == "run"
        assert "dagster-daemon" in ancestry[2]

        assert instance.run_launcher.terminate(run.run_id)
        while time.monotonic() < deadline and not instance.get_run_by_id(run.run_id).is_finished:
            time.sleep(0.5)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
        while time.monotonic() < deadline and psutil.pid_exists(pid):
            time.sleep(0.5)
        assert not psutil.pid_exists(pid)  # the run worker ended, and its server reaped it
