"""Sharded datasets on disk: split folders of TFRecord shards plus a manifest.json.

Raw datasets hold the benchmark's own shards; processed datasets hold one feature set. The manifest
records what a reader needs (features, counts, class balance, per-shard md5) and is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from droughtwatch_assets.core.features import NUM_CLASSES
from droughtwatch_assets.records.tfrecord import BadRecordPolicy, BadRecords, read_labels

SPLITS = ("train", "val")
MANIFEST = "manifest.json"
SHARD_GLOB = "part-*"


def md5_of(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardedDataset:
    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | os.PathLike) -> ShardedDataset:
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: {root} is not a complete dataset; materialise it again")
        return cls(root, json.loads(path.read_text()))

    @property
    def on_bad_record(self) -> BadRecordPolicy:
        """The policy the raw records were read with; every later read of them follows it."""
        return self.manifest.get("on_bad_record", "fail")

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("features", ()))

    def shards(self, split: str) -> list[Path]:
        return [self.root / split / shard["name"] for shard in self.manifest["splits"][split]["shards"]]

    def records(self, split: str) -> int:
        return self.manifest["splits"][split]["records"]

    def class_counts(self, split: str) -> list[int]:
        return self.manifest["splits"][split]["class_counts"]


def write_manifest(root: str | os.PathLike, manifest: dict) -> ShardedDataset:
    root = Path(root)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, root / MANIFEST)
    return ShardedDataset(root, manifest)


def data_version(parts: list) -> str:
    """A short content hash of JSON-able parts (shard hashes, features), stable across runs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def split_summary(shards: list[dict]) -> dict:
    counts = np.sum([s["class_counts"] for s in shards], axis=0) if shards else np.zeros(NUM_CLASSES, int)
    return {
        "records": int(sum(s["records"] for s in shards)),
        "class_counts": [int(c) for c in counts],
        "shards": shards,
    }


def split_root(folder: str | os.PathLike) -> Path:
    """The folder holding train/ and val/: the folder itself, or its `droughtwatch_data` as the archive extracts."""
    folder = Path(folder)
    if not (folder / "train").is_dir() and (folder / "droughtwatch_data").is_dir():
        return folder / "droughtwatch_data"
    return folder


def find_split_shards(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """train/ and val/ shard files (part-*) under a folder laid out as the benchmark archive extracts.

    The folder may be the extracted `droughtwatch_data` itself or a parent holding it.
    """
    folder = split_root(folder)
    found = {split: sorted(p for p in (folder / split).glob(SHARD_GLOB) if p.is_file()) for split in SPLITS}
    missing = [split for split, files in found.items() if not files]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no {SHARD_GLOB} shards under {', '.join(s + '/' for s in missing)}; expected the benchmark "
            f"layout <folder>/train/part-r-NNNNN and <folder>/val/part-r-NNNNN"
        )
    return found


def build_raw_dataset(
    sources: dict[str, list[Path]],
    root: str | os.PathLike,
    source: dict,
    log: Callable[[str], None] = lambda _: None,
    on_bad_record: BadRecordPolicy = "fail",
) -> ShardedDataset:
    """Copy raw shards into root/<split>/, counting labels and hashing each shard.

    `source` describes where the shards came from and is kept in the manifest.
    """
    root = Path(root)
    splits = {}
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)
        shards = []
        for path in sources[split]:
            target = root / split / path.name
            shutil.copyfile(path, target)
            bad = BadRecords(on_bad_record)
            labels = read_labels(target, bad)
            shards.append(
                {
                    "name": path.name,
                    "records": len(labels),
                    "md5": md5_of(target),
                    "bytes": target.stat().st_size,
                    "class_counts": np.bincount(labels, minlength=NUM_CLASSES).tolist(),
                    "skipped": bad.as_rows(),
                }
            )
            log(f"raw {split}/{path.name}: {len(labels)} records")
        splits[split] = split_summary(shards)
        splits[split]["skipped"] = sum(len(s["skipped"]) for s in shards)
    version = data_version([[split, s["name"], s["md5"]] for split in SPLITS for s in splits[split]["shards"]])
    return write_manifest(
        root,
        {"kind": "raw", "source": source, "data_version": version, "on_bad_record": on_bad_record, "splits": splits},
    )
