"""experiments_job over 1, 2 and 4 feature sets on the default sample (2 epochs each), as
`droughtwatch experiments` runs it: one run per feature set, one after the other, each ending with the
leaderboard and the champion."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import REPO, header

BIN = Path(sys.executable).parent
FEATURE_SETS = ("baseline", "ndvi", "rgb", "all")


def main() -> None:
    header("experiments_job: every feature set's chain, then leaderboard and champion (default sample, 2 epochs)")
    print(f"{'feature sets':<30} {'wall':>8} {'per feature set (s)':>30}")
    for count in (1, 2, 4):
        chosen = FEATURE_SETS[:count]
        with tempfile.TemporaryDirectory() as home:
            env = {
                **os.environ,
                "DAGSTER_HOME": home,
                "DROUGHTWATCH_DATA_DIR": str(Path(home) / "data"),
                "DROUGHTWATCH_TRACKER": "none",
                "TF_CPP_MIN_LOG_LEVEL": "3",
            }
            started = time.perf_counter()
            completed = subprocess.run(
                [BIN / "droughtwatch", "experiments", "--feature-sets", ",".join(chosen)],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
        per_set = re.findall(r"^(\w+): evaluated in (\d+) s$", completed.stdout, re.MULTILINE)
        print(f"{','.join(chosen):<30} {wall:6.1f} s {' '.join(f'{n} {s}' for n, s in per_set):>30}")
    print(
        "Wall time includes one process start (Python, Dagster, TensorFlow); tracking off (DROUGHTWATCH_TRACKER=none)."
    )
    print()
    print("as a backfill: dagster job backfill + dagster-daemon, the project's dagster.yaml (up to 4 runs at once)")
    for count in (1, 2, 4):
        wall, steps = backfill_seconds(FEATURE_SETS[:count])
        print(f"{','.join(FEATURE_SETS[:count]):<30} {wall:6.1f} s   (sum of step times {steps:.0f} s)")


def backfill_seconds(feature_sets: tuple[str, ...]) -> tuple[float, float]:
    """From `dagster job backfill` to the last run's end, with a daemon dequeuing; and the summed step times."""
    import dagster as dg

    with tempfile.TemporaryDirectory() as home:
        Path(home, "dagster.yaml").write_text(Path(REPO, "dagster.yaml").read_text())
        env = {
            **os.environ,
            "DAGSTER_HOME": home,
            "DROUGHTWATCH_DATA_DIR": str(Path(home) / "data"),
            "DROUGHTWATCH_TRACKER": "none",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        daemon = subprocess.Popen(
            [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(10)  # the daemon up before the clock starts
            started = time.perf_counter()
            subprocess.run(
                [BIN / "dagster", "job", "backfill", "-w", "workspace.yaml", "-j", "experiments_job"]
                + ["--partitions", ",".join(feature_sets), "--noprompt"],
                cwd=REPO,
                env=env,
                check=True,
                capture_output=True,
            )
            instance = dg.DagsterInstance.from_config(home)
            ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
            while not all(r.status in ended for r in instance.get_runs()):
                time.sleep(0.5)
            wall = time.perf_counter() - started
            failed = [r.run_id for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
            if failed:
                raise RuntimeError(f"backfill runs failed: {failed}")
            steps = sum(
                stats.end_time - stats.start_time
                for run in instance.get_runs()
                for stats in instance.get_run_step_stats(run.run_id)
                if stats.end_time and stats.start_time
            )
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
    return wall, steps


if __name__ == "__main__":
    main()
