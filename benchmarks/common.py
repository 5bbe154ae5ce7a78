"""Shared helpers: machine description, timing, and a replicated real shard."""

from __future__ import annotations

import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_SHARD = (
    Path(os.environ.get("DROUGHTWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "droughtwatch-real-part-r-00012.tfrecord"
)
# Scratch space on the same disk as the data directory (some /tmp mounts write far slower).
SCRATCH = Path(os.environ.get("DROUGHTWATCH_BENCH_DIR", REPO / ".droughtwatch" / "bench"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("numpy", "tensorflow-cpu", "keras", "onnxruntime", "dagster"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return (
        f"{time.strftime('%Y-%m-%d')} | {cpu} | {os.cpu_count()} cores | Python {platform.python_version()} | "
        + ", ".join(versions)
    )


def header(title: str) -> None:
    print(f"== {title}")
    print(f"machine: {machine()}")


def replicated_shard(copies: int, name: str = "part-r-00000", directory: Path | None = None) -> Path:
    """The real 81-record shard repeated `copies` times: real-format data of any size."""
    directory = directory or SCRATCH / "raw"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    data = REAL_SHARD.read_bytes()
    if not path.exists() or path.stat().st_size != len(data) * copies:
        with open(path, "wb") as f:
            for _ in range(copies):
                f.write(data)
    return path


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
