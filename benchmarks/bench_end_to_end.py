"""baseline_job on the default sample, as `dagster asset materialize` runs it (one process per step)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import REPO, header

BIN = Path(sys.executable).parent


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        ).stdout.strip()
    )


def main() -> None:
    header("end to end: baseline_job on the default sample (2,048 train + 512 val records, 2 epochs)")
    import dagster as dg

    with tempfile.TemporaryDirectory() as home:
        Path(home, "dagster.yaml").write_text(Path(REPO, "dagster.yaml").read_text())
        env = {
            **os.environ,
            "DAGSTER_HOME": home,
            "DROUGHTWATCH_DATA_DIR": str(Path(home) / "data"),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        started = time.perf_counter()
        subprocess.run(
            [
                BIN / "dagster",
                "asset",
                "materialize",
                "-m",
                "droughtwatch_assets.definitions",
                "--select",
                "*",
                "--partition",
                "baseline",
            ],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - started
        os.environ["DAGSTER_HOME"] = home
        with dg.DagsterInstance.get() as instance:
            run = instance.get_runs(limit=1)[0]
            events = [r.event_log_entry for r in instance.get_records_for_run(run.run_id, limit=10_000).records]
        starts, ends = {}, {}
        kinds = [e.dagster_event.event_type_value if e.dagster_event else None for e in events]
        run_start = next(e.timestamp for e, kind in zip(events, kinds) if kind in ("RUN_START", "PIPELINE_START"))
        for event, kind in zip(events, kinds):
            if kind == "STEP_START":
                starts[event.step_key] = event.timestamp
            elif kind == "STEP_SUCCESS":
                ends[event.step_key] = event.timestamp
        print(f"wall time of the command: {wall:.1f} s   target <= 90 s")
        print(f"{'step':<48} {'starts at':>10} {'execution':>10}")
        for step in sorted(starts, key=starts.get):
            print(f"{step:<48} {starts[step] - run_start:8.1f} s {ends[step] - starts[step]:8.1f} s")
        print(
            "Each step runs in a new process (start-up: Python, Dagster, and TensorFlow for the steps that train "
            "or export, counted in their execution); independent steps run side by side."
        )
    print(
        f"import times in a fresh process: dagster {import_seconds('dagster'):.1f} s, "
        f"tensorflow {import_seconds('tensorflow'):.1f} s"
    )


if __name__ == "__main__":
    main()
