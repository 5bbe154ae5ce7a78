"""Step processes forked from a preloaded server: the default executor's config, and the Dask worker's step server."""

import importlib.util
import os

import pytest

from droughtwatch_assets.defs.fork_server import PRELOADED, RUN_PRELOADED, StepServer
from droughtwatch_assets.defs.local_executor import local_executor, with_preloading_fork_server


def test_every_preloaded_module_exists():
    # multiprocessing skips a preload module that fails to import, silently: a typo here would only be slow
    assert all(importlib.util.find_spec(name) for name in PRELOADED + RUN_PRELOADED)


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


STEP_PROCESS = """
import sys, tempfile
from alembic.script import base
import dagster as dg
from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION, get_alembic_config

if __name__ == "__main__":
    if sys.argv[1] == "preloaded":
        import droughtwatch_assets.defs.step_preload
    reads = []
    read = base.Script._from_path
    base.Script._from_path = classmethod(lambda cls, *args: reads.append(args) or read.__func__(cls, *args))
    for _ in range(2):  # two step processes' instances, each opening its SQLite databases
        with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
            instance.get_runs()
            instance.get_records_for_run("a run")
    config = get_alembic_config(dg.__file__, script_location=ALEMBIC_SCRIPTS_LOCATION)
    print(len(reads), base.ScriptDirectory.from_config(config).get_current_head())
"""


@pytest.mark.integration
def test_a_preloaded_step_process_checks_the_instances_schema_without_reading_dagsters_migrations_again():
    import subprocess
    import sys

    def step_process(preloaded: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", STEP_PROCESS, preloaded], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        reads, head = out.stdout.split()
        return int(reads), head

    cold_reads, head = step_process("cold")
    assert cold_reads > 4 * 80  # each database's check reads the ninety-odd scripts again
    assert step_process("preloaded") == (0, head)  # read once, before the fork; the same head revision


@pytest.mark.integration
def test_a_server_whose_preload_fails_says_which_import_to_fix_instead_of_waiting(tmp_path, monkeypatch):
    (tmp_path / "broken_definitions.py").write_text("raise ValueError('DROUGHTWATCH_DEPLOYMENT: no such deployment')")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    server = StepServer("run", ("broken_definitions",))
    with pytest.raises(RuntimeError, match=r"exited with \d+ while importing broken_definitions: its error is above"):
        server.launch("any run")
