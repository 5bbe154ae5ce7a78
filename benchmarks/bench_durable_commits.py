"""What durable commits cost: the time `make run`'s job (baseline_job on the default sample, in process, as
`droughtwatch run` runs it) spends in fsync, against the job's wall time. Target: at most 5 %."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import REPO, header

sys.path.insert(0, str(REPO))


def main() -> None:
    header("durable commits: fsync time within baseline_job (default sample, in process)")
    with tempfile.TemporaryDirectory() as folder:
        os.environ.update(
            DAGSTER_HOME=folder, DROUGHTWATCH_DATA_DIR=str(Path(folder, "data")), DROUGHTWATCH_TRACKER="none"
        )
        Path(folder, "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        import dagster as dg

        from droughtwatch_assets.definitions import defs

        spent, calls, fsync = [0.0], [0], os.fsync

        def timed_fsync(descriptor):
            started = time.perf_counter()
            fsync(descriptor)
            spent[0] += time.perf_counter() - started
            calls[0] += 1

        os.fsync = timed_fsync
        with dg.DagsterInstance.get() as instance:
            started = time.perf_counter()
            result = defs.resolve_job_def("baseline_job").execute_in_process(
                partition_key="baseline", instance=instance
            )
            wall = time.perf_counter() - started
        assert result.success
    share = spent[0] / wall
    print(f"baseline_job {wall:.1f} s; {calls[0]} fsyncs took {spent[0]:.2f} s = {share:.1%} of it   target <= 5 %")


if __name__ == "__main__":
    main()
