"""experiments_job over 1, 2 and 4 feature sets on the default sample (2 epochs each), as
`droughtwatch experiments` runs it: one run per feature set, one after the other, each ending with the
leaderboard and the champion."""

from __future__ import annotations

import os
import re
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
    print("The same four feature sets as backfills, through the daemon and on Dask: bench_backfill.py.")


if __name__ == "__main__":
    main()
