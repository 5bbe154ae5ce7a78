"""The one interface both artifact stores implement: versions of an asset partition, committed whole."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from pathlib import Path

from droughtwatch_assets.storage import retention

Key = tuple[str, ...]  # (asset key path..., partition)


class VersionedArtifacts(ABC):
    """Versions of each asset partition: written into a staging folder, committed whole, read back whole."""

    @abstractmethod
    def new_staging_dir(self) -> Path:
        """An empty folder to write a new version into."""

    @abstractmethod
    def commit(self, staging: str | os.PathLike, key: Key) -> str:
        """Make a finished staging folder the current version of key; returns where it now is."""

    @abstractmethod
    def current(self, key: Key) -> Path:
        """A local folder holding the current version of key; FileNotFoundError if there is none."""

    @abstractmethod
    def file_uri(self, key: Key, relative: str) -> str:
        """Where one file of key's current version really is: a local path or an s3:// object."""

    @abstractmethod
    def plan_retention(
        self, policy: retention.RetentionPolicy, references, now: datetime, keys=None
    ) -> retention.RetentionPlan:
        """The versions the policy lets go (of these keys, or of every location)."""

    @abstractmethod
    def plan_orphans(self, grace: timedelta, now: datetime) -> retention.RetentionPlan:
        """What killed runs left (staging folders; for S3, incomplete multipart uploads) that changed no later
        than `grace` before now; see retention.py."""

    @abstractmethod
    def remove(self, plan: retention.RetentionPlan) -> None:
        """Delete exactly what a plan lists (its local folders and, for S3, its objects)."""
