"""Commits that survive a power loss, not only a killed process: a version's files and folders reach the disk before
the rename that makes them current, and the rename itself reaches the disk after (the order SQLite and etcd keep).
Without it the page cache may write the rename first, and a version comes back after a crash with empty files."""

from __future__ import annotations

import os
from pathlib import Path


def sync_folder(path: str | os.PathLike) -> None:
    """Makes the folder's entries (files created, renamed or removed in it) durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def sync_tree(root: str | os.PathLike) -> None:
    """Every file under root, then every folder from the deepest up, root last."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                sync_file(path)
        sync_folder(directory)


def replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """os.replace, then the target's folder synced, so that the rename is durable once this returns."""
    os.replace(source, target)
    sync_folder(Path(target).parent)


def write_text(path: Path, text: str) -> None:
    """Writes a file's text and syncs it, before anything renames it into place."""
    with open(path, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
