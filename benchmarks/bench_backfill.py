"""experiments_job over the four feature sets (default sample, the job's defaults), three ways on one machine:

- in process: `droughtwatch experiments`, one process running the runs one after the other;
- as a backfill through the daemon: `dagster job backfill`, `dagster-daemon run`, the project's dagster.yaml, the
  default executor (a process per step);
- as a backfill on a Dask cluster in a box: a scheduler and two workers on loopback, started as the guide starts
  them (docs/beyond-one-machine.md), the dask deployment (storage in S3: moto's server).

Backfill times run from `dagster job backfill` to the last run's end, with the daemon already up. Tracking is off.
Prints each time and its ratio to the in-process time, and writes each backfill's timeline (every run's and step's
start and end, in seconds from the first run's creation, and on Dask the worker that ran each step, from the workers'
logs) as a CSV file under the bench folder, so that a slow run can be compared with a fast one.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import REPO, SCRATCH, header

sys.path.insert(0, str(REPO))
from droughtwatch_assets_tests.conftest import free_port, moto_server

BIN = Path(sys.executable).parent
FEATURE_SETS = ("baseline", "ndvi", "rgb", "all")
WORKER_OPTIONS = shlex.split(  # as docs/beyond-one-machine.md starts a worker
    re.search(r"^dask worker \S+ (.*)$", (REPO / "docs" / "beyond-one-machine.md").read_text(), re.MULTILINE)[1]
)


@contextlib.contextmanager
def running(command: list, env: dict, cwd: str, log: Path | None = None):
    with open(log or os.devnull, "w") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=output, start_new_session=True
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


def placement(logs: tuple[Path, ...]) -> dict[tuple[str, str], str]:
    """Which worker ran each (run id, step key), from the workers' logs."""
    from droughtwatch_assets.defs.dask_executor import TASK_STARTED

    return {
        (match["run"], match["step"]): match["worker"]
        for log in logs
        for match in TASK_STARTED.finditer(log.read_text())
    }


def base_env(folder: str, **extra: str) -> dict:
    home = Path(folder, "home")
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(Path(folder, "data")),
        "DROUGHTWATCH_TRACKER": "none",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **extra,
    }


def in_process_seconds() -> float:
    with tempfile.TemporaryDirectory() as folder:
        env = base_env(folder)
        started = time.perf_counter()
        subprocess.run(
            [BIN / "droughtwatch", "experiments", "--feature-sets", ",".join(FEATURE_SETS)],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started


def write_timeline(instance, label: str, workers: dict[tuple[str, str], str]) -> Path:
    """Every run's and step's start and end, in seconds from the first run's creation, and the Dask worker that
    ran each step (when known), one row each."""
    runs = instance.get_runs()
    created = {run.run_id: instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp() for run in runs}
    origin = min(created.values())
    rows = []
    for run in runs:
        partition = run.tags.get("dagster/partition", "")
        stats = instance.get_run_stats(run.run_id)
        rows.append((partition, "(run)", "", created[run.run_id], stats.start_time, stats.end_time))
        for step in instance.get_run_step_stats(run.run_id):
            worker = workers.get((run.run_id, step.step_key), "")
            rows.append((partition, step.step_key, worker, None, step.start_time, step.end_time))
    path = SCRATCH / "backfill-timelines" / f"{time.strftime('%Y%m%dT%H%M%S')}-{label}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["partition", "step", "worker", "created_s", "start_s", "end_s"])
        for partition, step, worker, made, start, end in sorted(rows, key=lambda row: row[4] or 0):
            seconds = [None if value is None else round(value - origin, 2) for value in (made, start, end)]
            writer.writerow([partition, step, worker, *seconds])
    return path


def backfill_seconds(env: dict, label: str, worker_logs: tuple[Path, ...] = ()) -> tuple[float, int, Path]:
    """Wall time of a backfill over the four feature sets with a daemon; how many step processes it started; and
    where its timeline went."""
    import dagster as dg

    with running([BIN / "dagster-daemon", "run", "-w", "workspace.yaml"], env, str(REPO)):
        time.sleep(10)  # the daemon up before the clock starts
        started = time.perf_counter()
        subprocess.run(
            [BIN / "dagster", "job", "backfill", "-w", "workspace.yaml", "-j", "experiments_job"]
            + ["--partitions", ",".join(FEATURE_SETS), "--noprompt"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        while not all(r.status in ended for r in instance.get_runs()):
            time.sleep(0.5)
        wall = time.perf_counter() - started
    failed = [r.run_id for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise RuntimeError(f"backfill runs failed: {failed}")
    steps = sum(len(instance.get_run_step_stats(run.run_id)) for run in instance.get_runs())
    return wall, steps, write_timeline(instance, label, placement(worker_logs))


def daemon_seconds() -> tuple[float, int, Path]:
    with tempfile.TemporaryDirectory() as folder:
        return backfill_seconds(base_env(folder), "daemon")


def dask_seconds() -> tuple[float, int, Path]:
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = base_env(
            folder,
            DROUGHTWATCH_DEPLOYMENT="dask",
            DROUGHTWATCH_DASK_SCHEDULER=f"tcp://127.0.0.1:{port}",
            DROUGHTWATCH_S3_BUCKET=f"bench-{time.time_ns()}",
            DROUGHTWATCH_S3_CREATE_BUCKET="true",
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
        )
        logs = tuple(Path(folder, f"worker-{number}.log") for number in (1, 2))
        with contextlib.ExitStack() as cluster:
            scheduler = [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
            cluster.enter_context(running(scheduler, env, folder))
            for log in logs:
                name = log.stem
                worker_env = {**env, "DROUGHTWATCH_DATA_DIR": str(Path(folder, name))}
                worker = [BIN / "dask", "worker", env["DROUGHTWATCH_DASK_SCHEDULER"], "--name", name]
                worker += ["--no-dashboard", *WORKER_OPTIONS]
                cluster.enter_context(running(worker, worker_env, folder, log))
            return backfill_seconds(env, "dask", logs)


def main() -> None:
    header("experiments_job over 4 feature sets: in process, as a backfill through the daemon, as a backfill on Dask")
    reference = in_process_seconds()
    print(f"{'in process (droughtwatch experiments)':<44} {reference:6.1f} s   1.00x")
    for label, measure in (
        ("backfill, daemon, default executor", daemon_seconds),
        ("backfill, Dask, 2 workers", dask_seconds),
    ):
        wall, steps, timeline = measure()
        print(f"{label:<44} {wall:6.1f} s   {wall / reference:.2f}x   ({steps} steps; timeline: {timeline})")
    print("Target: each backfill within 1.5x of the in-process time on the same machine.")


if __name__ == "__main__":
    main()
