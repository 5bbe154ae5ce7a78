"""Where artifacts live: versioned directories under one base directory, swapped in atomically.

<base>/<asset>/<partition>/
    current -> v-<utc timestamp>-<id>  (a symlink, replaced atomically on commit)
    v-<timestamp>-<id>/...             (the files of one materialisation)
A reader that follows `current` sees a whole version or the previous one, never half of one.
Old versions stay until retention removes them (retention.py): after each commit when the deployment's
store keeps a number of versions, or with `droughtwatch gc`, which also removes the staging folders
(<base>/.staging/<id>) that killed runs left.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from droughtwatch_assets.data.datasets import MANIFEST, md5_of
from droughtwatch_assets.storage import durable, retention
from droughtwatch_assets.storage.base import VersionedArtifacts

CURRENT = "current"
STAGING = ".staging"
UNPARTITIONED = "__all__"


class LocalArtifactStore(VersionedArtifacts):
    def __init__(self, base_dir: str | os.PathLike):
        self.base_dir = Path(base_dir).expanduser().absolute()

    def location(self, key: tuple[str, ...]) -> Path:
        return self.base_dir.joinpath(*key)

    def new_staging_dir(self) -> Path:
        path = self.base_dir / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def commit(self, staging: str | os.PathLike, key: tuple[str, ...]) -> str:
        """Move a finished staging directory into place as the current version of key."""
        location = self.location(key)
        location.mkdir(parents=True, exist_ok=True)
        # names sort by commit time, which is what retention relies on
        version = f"v-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}"
        durable.sync_tree(staging)
        durable.replace(staging, location / version)
        link = location / f".{CURRENT}-{version}"
        os.symlink(version, link)
        durable.replace(link, location / CURRENT)
        return str(location / CURRENT)

    def current(self, key: tuple[str, ...]) -> Path:
        path = self.location(key) / CURRENT
        if not path.exists():
            raise FileNotFoundError(
                f"no materialisation of {'/'.join(key)} under {self.base_dir}; materialise it first"
            )
        return path.resolve()

    def file_uri(self, key: tuple[str, ...], relative: str) -> str:
        return str(self.location(key) / CURRENT / relative)

    # -- retention (see retention.py) -------------------------------------------------------------
    def locations(self) -> list[tuple[str, ...]]:
        """Every <asset>/<partition> under base_dir that has a current version."""
        found = []
        for directory, subdirectories, _ in os.walk(self.base_dir):
            relative = Path(directory).relative_to(self.base_dir).parts
            if CURRENT in subdirectories:
                found.append(relative)
                subdirectories.clear()
            elif len(relative) >= 4:  # (asset key path..., partition): deeper folders are no store's
                subdirectories.clear()
            else:
                subdirectories[:] = [d for d in subdirectories if not d.startswith((".", "v-"))]
        return sorted(found)

    def versions(self, key: tuple[str, ...]) -> tuple[list[str], str | None]:
        """(the version names of key, the current one)."""
        location = self.location(key)
        names = [p.name for p in location.iterdir() if p.name.startswith("v-") and p.is_dir() and not p.is_symlink()]
        current = os.readlink(location / CURRENT) if (location / CURRENT).is_symlink() else None
        return sorted(names), current

    def plan_retention(self, policy, references, now, keys=None) -> retention.RetentionPlan:
        removals = []
        for key in self.locations() if keys is None else keys:
            if not (self.location(key) / CURRENT).is_symlink():
                continue
            versions, current = self.versions(key)
            location = self.location(key)

            def file_md5(version: str, relative: str, location=location) -> str | None:
                path = location / version / relative
                return md5_of(path) if path.is_file() else None

            def manifest(version: str, location=location) -> dict | None:
                path = location / version / MANIFEST
                return json.loads(path.read_text()) if path.is_file() else None

            protected = retention.referenced_versions(references, key, versions, file_md5, manifest)
            for version in retention.expired_versions(versions, current, protected, policy, now):
                path = location / version
                removals.append(retention.Removal("/".join(key), version, retention.local_size(path), (str(path),)))
        return retention.RetentionPlan(tuple(removals))

    def plan_orphans(self, grace, now) -> retention.RetentionPlan:
        return retention.staging_orphans(self.base_dir / STAGING, grace, now)

    def remove(self, plan: retention.RetentionPlan) -> None:
        retention.apply(plan)
