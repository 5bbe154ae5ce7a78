"""Step processes forked from a preloaded server: the default executor's config, and the Dask worker's step server."""

import importlib.util
import os

import pytest

from droughtwatch_assets.defs.fork_server import PRELOADED, StepServer
from droughtwatch_assets.defs.local_executor import local_executor, with_preloading_fork_server


def test_every_preloaded_module_exists():
    # multiprocessing skips a preload module that fails to import, silently: a typo here would only be slow
    assert all(importlib.util.find_spec(name) for name in PRELOADED)


def test_the_default_executor_forks_steps_from_the_preloaded_server_unless_the_run_config_says_otherwise():
    forked = {"forkserver": {"preload_modules": list(PRELOADED)}}
    assert with_preloading_fork_server({"multiprocess": {"max_concurrent": 2}}) == {
        "multiprocess": {"max_concurrent": 2, "start_method": forked}
    }
    assert with_preloading_fork_server({"multiprocess": {"start_method": {"spawn": {}}}}) == {
        "multiprocess": {"start_method": {"spawn": {}}}
    }
    assert with_preloading_fork_server({"in_process": {}}) == {"in_process": {}}


def test_the_local_deployment_runs_its_jobs_with_that_executor():
    from droughtwatch_assets.definitions import defs

    for job in ("baseline_job", "experiments_job"):
        assert defs.resolve_job_def(job).executor_def is local_executor


@pytest.mark.integration
def test_the_step_server_forks_a_process_per_step_reports_its_exit_code_and_ends_with_its_client():
    server = StepServer()
    first_pid, first_code = server.run("not a step", cancelled=lambda: False)
    second_pid, second_code = server.run("not a step", cancelled=lambda: False)
    assert first_code == second_code != 0  # dagster api execute_step refused the arguments, in its own process
    assert len({first_pid, second_pid, os.getpid()}) == 3
    process = server._process
    assert process is not None and process.poll() is None
    process.stdin.close()  # what happens when the Dask worker process ends
    process.wait(timeout=30)
