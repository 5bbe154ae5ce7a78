"""Fetching the benchmark archive: resumable HTTP download with progress and checksums, then extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from droughtwatch_assets.data.datasets import SHARD_GLOB, SPLITS

ARCHIVE_URL = "https://storage.googleapis.com/wandb_datasets/dw_train_86K_val_10K.zip"
CHUNK = 1 << 20

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    sha256: str
    md5: str
    resumed_from: int


def _digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def download(
    url: str,
    destination: str | os.PathLike,
    progress: Progress | None = None,
    expected_sha256: str | None = None,
    timeout: float = 60,
) -> Download:
    """Download url to destination. A partial `<destination>.part` is resumed with an HTTP Range request."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    resumed_from = 0
    if not destination.exists():
        resumed_from = partial.stat().st_size if partial.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={resumed_from}-"} if resumed_from else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:  # 416: the part file is already complete
                raise RuntimeError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
            response = None
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(
                f"download of {url} failed: {exc}; check the URL and the network, "
                f"or point the raw source at a local folder of shards"
            ) from None
        if response is not None:
            with response:
                if resumed_from and response.status != 206:
                    resumed_from = 0  # the server ignored the Range header: start over
                length = response.headers.get("Content-Length")
                total = resumed_from + int(length) if length else None
                done = resumed_from
                with open(partial, "ab" if resumed_from else "wb") as out:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                if total is not None and done != total:
                    raise RuntimeError(
                        f"download of {url} stopped at {done} of {total} bytes; run again to resume from {partial}"
                    )
        os.replace(partial, destination)
    sha256, md5 = _digests(destination)
    if expected_sha256 and sha256 != expected_sha256:
        bad = destination.with_name(destination.name + ".bad")
        os.replace(destination, bad)
        raise RuntimeError(
            f"{url}: sha256 {sha256} does not match the expected {expected_sha256}; the file was moved to {bad}"
        )
    return Download(destination, destination.stat().st_size, sha256, md5, resumed_from)


def extract_shards(archive: str | os.PathLike, directory: str | os.PathLike) -> dict[str, list[Path]]:
    """Extract <anything>/train/part-* and <anything>/val/part-* members into directory/<split>/."""
    directory = Path(directory)
    found: dict[str, list[Path]] = {split: [] for split in SPLITS}
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = Path(member.filename).parts
                if member.is_dir() or len(parts) < 2 or parts[-2] not in SPLITS:
                    continue
                if not Path(parts[-1]).match(SHARD_GLOB):
                    continue
                target = directory / parts[-2] / parts[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                found[parts[-2]].append(target)
    except zipfile.BadZipFile as exc:
        raise RuntimeError(f"{archive}: not a zip archive ({exc}); delete it and download again") from None
    missing = [split for split, files in found.items() if not files]
    if missing:
        raise RuntimeError(f"{archive}: no {'/'.join(missing)}/{SHARD_GLOB} members; is it the DroughtWatch archive?")
    return {split: sorted(files) for split, files in found.items()}
