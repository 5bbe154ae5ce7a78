"""Where raw shards come from: the generated sample, a local folder, or the benchmark archive."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from droughtwatch_assets.datasets import find_split_shards
from droughtwatch_assets.download import ARCHIVE_URL, download, extract_shards
from droughtwatch_assets.sample import SampleSpec, write_sample

SOURCES = ("sample", "folder", "archive")


@dataclass(frozen=True)
class RawSource:
    kind: str = "sample"
    folder: str = ""
    archive_url: str = ARCHIVE_URL
    archive_sha256: str = ""
    sample: SampleSpec = field(default_factory=SampleSpec)


def gather_shards(
    source: RawSource,
    scratch: str | os.PathLike,
    download_dir: str | os.PathLike,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, list[Path]], dict]:
    """(split -> shard files, a description of the source for the manifest)."""
    if source.kind == "sample":
        return write_sample(scratch, source.sample), {"type": "sample", **asdict(source.sample)}
    if source.kind == "folder":
        if not source.folder:
            raise ValueError("raw source 'folder' needs a folder (config 'folder' or DROUGHTWATCH_RAW_FOLDER)")
        folder = Path(source.folder).absolute()
        return find_split_shards(folder), {"type": "folder", "folder": str(folder)}
    if source.kind == "archive":
        logged = [0]

        def progress(done: int, total: int | None) -> None:
            if done - logged[0] >= 50 << 20 or done == total:
                logged[0] = done
                log(f"downloaded {done >> 20} MiB" + (f" of {total >> 20} MiB" if total else ""))

        target = Path(download_dir, Path(source.archive_url).name or "archive.zip")
        archive = download(source.archive_url, target, progress, source.archive_sha256 or None)
        log(f"archive {archive.path}: {archive.size} bytes, sha256 {archive.sha256}")
        return extract_shards(archive.path, scratch), {
            "type": "archive",
            "url": source.archive_url,
            "sha256": archive.sha256,
            "md5": archive.md5,
            "bytes": archive.size,
        }
    raise ValueError(f"raw source {source.kind!r} is not one of {', '.join(SOURCES)} (DROUGHTWATCH_RAW_SOURCE)")
