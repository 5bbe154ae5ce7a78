"""The experiments over the four feature sets, three ways on one machine, at two scales:

- in process: `droughtwatch experiments`, one process running the runs one after the other;
- as one asset backfill through the daemon: `droughtwatch experiments --backfill --wait`, `dagster-daemon run`, the
  project's dagster.yaml (the stock run launcher), the multiprocess executor;
- as the same backfill on a Dask cluster in a box: a scheduler and two workers on loopback, started as the guide
  starts them (docs/beyond-one-machine.md), the dask deployment (storage in S3: moto's server).

`realistic` raises the sample's record counts and the epochs until each feature set's training dominates its
run (a minute or more of training per feature set on 2 cores), where the targets apply: the daemon's backfill
within 1.2x of the in-process time, Dask's within 1.3x. `default` is the embedded sample as `make run` uses it,
reported with no target: there, process start-up is a large share of a few seconds' work. `--scale` picks one
(default: both).

Backfill times run from the request to the backfill's end, with the daemon already up. Tracking is off. Prints each
time and its ratio to the in-process time of the same scale, and writes each backfill's timeline (every run's and
step's start and end, in seconds from the first run's creation, and on Dask the worker that ran each step, from the
workers' logs) as a CSV file under the bench folder.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
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
SCALES = {
    # 6x the default sample and 6 epochs: each feature set trains on ~74k samples, a minute or more on 2 cores (the
    # real train split is 86k records). More records would not fit moto's S3 server, which keeps every object in
    # memory: the `all` feature set's processed shards alone come to ~3.5 GB here.
    "realistic": {
        "ops": {
            "raw_tfrecords": {
                "config": {"sample_train_records": 12288, "sample_val_records": 3072, "sample_records_per_shard": 2048}
            },
            "trained_model": {"config": {"epochs": 6}},
        }
    },
    "default": {},
}
TARGETS = {"realistic": {"daemon": 1.2, "dask": 1.3}, "default": {}}
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
    from droughtwatch_assets.execution.dask_executor import TASK_STARTED

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


def experiments_command(run_config: dict, *options: str) -> list:
    command = [BIN / "droughtwatch", "experiments", "--feature-sets", ",".join(FEATURE_SETS), *options]
    return command + (["--config-json", json.dumps(run_config)] if run_config else [])


def in_process_seconds(run_config: dict) -> float:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        env = base_env(folder)
        started = time.perf_counter()
        subprocess.run(experiments_command(run_config), cwd=REPO, env=env, check=True, capture_output=True)
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


def backfill_seconds(
    env: dict, run_config: dict, label: str, worker_logs: tuple[Path, ...] = ()
) -> tuple[float, int, Path]:
    """Wall time of one asset backfill over the four feature sets with a daemon; how many steps it ran; and where
    its timeline went."""
    import dagster as dg

    with running([BIN / "dagster-daemon", "run", "-w", "workspace.yaml"], env, str(REPO)):
        time.sleep(10)  # the daemon up before the clock starts
        started = time.perf_counter()
        completed = subprocess.run(
            experiments_command(run_config, "--backfill", "--wait"), cwd=REPO, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"the {label} backfill failed: {completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    steps = sum(len(instance.get_run_step_stats(run.run_id)) for run in instance.get_runs())
    return wall, steps, write_timeline(instance, label, placement(worker_logs))


def daemon_seconds(run_config: dict, scale: str) -> tuple[float, int, Path]:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        return backfill_seconds(base_env(folder), run_config, f"daemon-{scale}")


def dask_seconds(run_config: dict, scale: str) -> tuple[float, int, Path]:
    with moto_server() as endpoint, tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
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
            return backfill_seconds(env, run_config, f"dask-{scale}", logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=[*SCALES, "both"], default="both")
    scales = list(SCALES) if (chosen := parser.parse_args().scale) == "both" else [chosen]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    header("experiments over 4 feature sets: in process, as one asset backfill through the daemon, and on Dask")
    for scale in scales:
        run_config = SCALES[scale]
        reference = in_process_seconds(run_config)
        print(f"[{scale}] {'in process (droughtwatch experiments)':<44} {reference:6.1f} s   1.00x")
        for kind, label, measure in (
            ("daemon", "asset backfill, daemon, multiprocess executor", daemon_seconds),
            ("dask", "asset backfill, Dask, 2 workers", dask_seconds),
        ):
            wall, steps, timeline = measure(run_config, scale)
            target = TARGETS[scale].get(kind)
            verdict = (
                ""
                if target is None
                else f"   target {target:.1f}x: {'met' if wall / reference <= target else 'MISSED'}"
            )
            print(
                f"[{scale}] {label:<44} {wall:6.1f} s   {wall / reference:.2f}x{verdict}   ({steps} steps; "
                f"timeline: {timeline})"
            )


if __name__ == "__main__":
    main()
