"""Which runs count as left behind by a dead `droughtwatch` process: only runs tagged with a process on this host
that no longer runs, the same pid given to another process included."""

import socket
import subprocess

import dagster as dg

from droughtwatch_assets.execution.cli_runs import PROCESS_TAG, dead_process, process_name, process_tags


def run_tagged(process: str) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="baseline_job", run_id="r", tags={PROCESS_TAG: process})


def test_a_run_of_this_living_process_is_not_dead():
    assert process_tags() == {PROCESS_TAG: process_name()}
    assert dead_process(run_tagged(process_name())) is None


def test_a_run_of_a_process_that_exited_is_dead_and_named():
    process = subprocess.Popen(["true"])
    process.wait()
    name = process_name(process.pid)
    host, pid, _ = name.split("/")
    assert pid == str(process.pid)
    assert dead_process(run_tagged(name)) == f"pid {process.pid} on {host}"


def test_a_pid_given_to_another_process_since_does_not_pass_for_the_runs():
    host, pid, ticks = process_name().split("/")
    assert ticks != "-"  # Linux: /proc gives the start time
    assert dead_process(run_tagged(f"{host}/{pid}/{int(ticks) - 1}")) == f"pid {pid} on {host}"


def test_runs_of_other_hosts_and_untagged_runs_are_left_alone():
    ticks = process_name().split("/")[2]
    assert dead_process(run_tagged(f"not-{socket.gethostname()}/999999/{ticks}")) is None
    assert dead_process(dg.DagsterRun(job_name="baseline_job", run_id="r", tags={})) is None
    assert dead_process(run_tagged("garbage")) is None
