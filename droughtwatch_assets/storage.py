"""Where artifacts live: versioned directories under one base directory, swapped in atomically.

<base>/<asset>/<partition>/
    current -> v-<utc timestamp>-<id>  (a symlink, replaced atomically on commit)
    v-<timestamp>-<id>/...             (the files of one materialisation)
A reader that follows `current` sees a whole version or the previous one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

CURRENT = "current"
STAGING = ".staging"
UNPARTITIONED = "__all__"


class LocalArtifactStore:
    def __init__(self, base_dir: str | os.PathLike, keep_versions: int = 2):
        self.base_dir = Path(base_dir).expanduser().absolute()
        self.keep_versions = keep_versions

    def location(self, key: tuple[str, ...]) -> Path:
        return self.base_dir.joinpath(*key)

    def new_staging_dir(self) -> Path:
        path = self.base_dir / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def commit(self, staging: str | os.PathLike, key: tuple[str, ...]) -> Path:
        """Move a finished staging directory into place as the current version of key."""
        location = self.location(key)
        location.mkdir(parents=True, exist_ok=True)
        # names sort by commit time, which is what pruning relies on
        version = f"v-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}"
        os.replace(staging, location / version)
        link = location / f".{CURRENT}-{version}"
        os.symlink(version, link)
        os.replace(link, location / CURRENT)
        self._prune(location, version)
        return location / CURRENT

    def current(self, key: tuple[str, ...]) -> Path:
        path = self.location(key) / CURRENT
        if not path.exists():
            raise FileNotFoundError(
                f"no materialisation of {'/'.join(key)} under {self.base_dir}; materialise it first"
            )
        return path.resolve()

    def file_uri(self, key: tuple[str, ...], relative: str) -> str:
        return str(self.location(key) / CURRENT / relative)

    def _prune(self, location: Path, keep: str) -> None:
        versions = sorted(
            (p for p in location.iterdir() if p.name.startswith("v-") and p.name != keep), key=lambda p: p.name
        )
        for old in versions[: max(0, len(versions) - (self.keep_versions - 1))]:
            shutil.rmtree(old, ignore_errors=True)
