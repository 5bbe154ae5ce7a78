"""Runs that the `droughtwatch` command executes in its own process (`run`, `experiments`). No run worker watches
them: if that process dies (killed, out of memory, a closed laptop), the run would stay STARTED for good and, through
the `dagster/partition` limit, hold up every queued run of its partition. So each such run is tagged with its
process, and a run whose process is gone is marked failed, naming it, and gives back the pool slots its steps held:
by the next `droughtwatch` command, and, where a daemon runs, by the `dead_cli_runs` sensor within a minute.

A process is named by its host, its pid and its start time (from /proc where there is one), so that a pid the system
has since given to another process does not pass for the run's.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

PROCESS_TAG = "droughtwatch/process"  # "<host>/<pid>/<start time in clock ticks since boot, or ->"
IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _start_ticks(pid: int) -> str | None:
    """The process's start time, field 22 of /proc/<pid>/stat; None when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "-"
    return stat.rsplit(")", 1)[1].split()[19]


def process_name(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{pid}/{_start_ticks(pid) or '-'}"


def process_tags() -> dict[str, str]:
    """The tags a run executed in this process carries."""
    return {PROCESS_TAG: process_name()}


def _alive(pid: int, ticks: str) -> bool:
    if Path("/proc").is_dir():
        now = _start_ticks(pid)
        return now is not None and (ticks == "-" or now == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_process(run: dg.DagsterRun) -> str | None:
    """The run's process if the run is tagged with one on this host that is no longer running; else None."""
    tag = run.tags.get(PROCESS_TAG)
    if not tag or tag.count("/") != 2:
        return None
    host, pid, ticks = tag.split("/")
    if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid), ticks):
        return None
    return f"pid {pid} on {host}"


def fail_runs_of_dead_processes(instance: dg.DagsterInstance, marked_by: str) -> list[str]:
    """Marks failed every in-flight run whose `droughtwatch` process on this host has died; returns their ids."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        process = dead_process(run)
        if process is None:
            continue
        instance.report_run_failed(
            run,
            message=f"the droughtwatch process that executed this run ({process}) is gone (killed, or out of "
            f"memory); marked failed by {marked_by}",
        )
        # a step killed while it held a pool slot (the champion's) never gave it back; the daemon's run monitoring
        # frees such slots, but a run executed in this process may have no daemon
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed
