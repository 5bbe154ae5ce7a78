"""Several shards processed in 1 process against 2 processes: the scaling curve of process_dataset."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import SCRATCH, best_of, clean, header, replicated_shard  # noqa: E402

from droughtwatch_assets.datasets import build_raw_dataset  # noqa: E402
from droughtwatch_assets.processing import process_dataset  # noqa: E402

SHARDS, COPIES = 8, 50  # 8 shards x 4,050 records


def main() -> None:
    header(f"parallel shards: {SHARDS} shards x {COPIES * 81} records -> 'baseline'")
    raw_dir = SCRATCH / "parallel-raw"
    clean(raw_dir)
    sources = {split: [replicated_shard(COPIES, f"part-r-{i:05d}", SCRATCH / "parallel-src" / split)
                       for i in range(SHARDS // 2)] for split in ("train", "val")}
    raw = build_raw_dataset(sources, raw_dir, {"type": "benchmark"})
    records = sum(raw.records(split) for split in ("train", "val"))
    rates = {}
    for workers in (1, 2):
        out = SCRATCH / f"parallel-out-{workers}"

        def run() -> None:
            clean(out)
            process_dataset(raw, out, "baseline", ("B2", "B3", "B4", "B5"), workers=workers)

        rates[workers] = records / best_of(3, run)
        clean(out)
        print(f"{workers} process{'es' if workers > 1 else ''}: {rates[workers]:,.0f} records/s")
    print(f"speed-up with 2 processes: {rates[2] / rates[1]:.2f}x   target >= 1.7x")
    print(f"estimate for the full benchmark (97,095 records, ~100 shards): {97095 / rates[2]:.0f} s on this machine; "
          f"with N such 2-core workers ~{97095 / rates[2]:.0f}/N s plus per-worker start-up")
    clean(raw_dir)
    clean(SCRATCH / "parallel-src")


if __name__ == "__main__":
    main()
