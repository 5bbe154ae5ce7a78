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
from typing import Literal

import numpy as np
from pydantic import BaseModel, ValidationError

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


class SkippedRecord(BaseModel):
    """A bad record dropped under on_bad_record=skip."""

    file: str
    record: int
    problem: str


class FeatureTotals(BaseModel):
    """A processed shard's running min, max and sum per feature, so unchanged shards need not be read again."""

    min: list[float]
    max: list[float]
    total: list[float]
    pixels: int


class Shard(BaseModel):
    """One shard of a split. Raw shards carry their md5 and size; processed ones the md5 of the raw shard they were
    made from, what processing vetoed, and their feature totals."""

    name: str
    records: int
    class_counts: list[int]
    skipped: list[SkippedRecord] = []
    md5: str = ""
    bytes: int = 0
    raw_md5: str = ""
    vetoed: int = 0
    vetoed_indices: list[int] = []
    feature_totals: FeatureTotals | None = None


class Split(BaseModel):
    records: int
    class_counts: list[int]
    shards: list[Shard]
    skipped: int = 0
    vetoed: int = 0


class FeatureSummary(BaseModel):
    min: float | None
    mean: float | None
    max: float | None


class Manifest(BaseModel):
    """manifest.json: what a reader of a sharded dataset needs, validated when the dataset is opened."""

    kind: Literal["raw", "processed"]
    data_version: str
    on_bad_record: BadRecordPolicy = "fail"  # the policy the raw records were read with; later reads follow it
    splits: dict[Literal["train", "val"], Split]
    source: dict = {}  # raw: where the shards came from
    built_from: str = ""  # raw: what reading the source again would give alike (sources.raw.reuse_key); "": never
    feature_set: str = ""  # processed: the feature set, its features (the channel order) and provenance
    features: list[str] = []
    raw_data_version: str = ""
    processing_version: str = ""
    shards_processed: int = 0
    shards_reused: int = 0
    image_shape: list[int] = []
    dtype: str = ""
    feature_stats: dict[str, FeatureSummary] = {}

    def to_json(self) -> str:
        # json, not pydantic's serialiser: an empty shard's feature totals are infinite, and stay so
        return json.dumps(self.model_dump(exclude_defaults=True), indent=2)


@dataclass(frozen=True)
class ShardedDataset:
    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, root: str | os.PathLike) -> ShardedDataset:
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: {root} is not a complete dataset; materialise it again")
        try:
            return cls(root, Manifest.model_validate_json(path.read_text()))
        except ValidationError as exc:
            raise ValueError(
                f"{path} is not a dataset manifest ({exc.error_count()} problems, first: {exc.errors()[0]['msg']} at "
                f"{'.'.join(map(str, exc.errors()[0]['loc']))}); materialise the dataset again"
            ) from None

    @property
    def on_bad_record(self) -> BadRecordPolicy:
        """The policy the raw records were read with; every later read of them follows it."""
        return self.manifest.on_bad_record

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.manifest.features)

    def shards(self, split: str) -> list[Path]:
        return [self.root / split / shard.name for shard in self.manifest.splits[split].shards]

    def records(self, split: str) -> int:
        return self.manifest.splits[split].records

    def class_counts(self, split: str) -> list[int]:
        return self.manifest.splits[split].class_counts


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> ShardedDataset:
    root = Path(root)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, root / MANIFEST)
    return ShardedDataset(root, manifest)


def data_version(parts: list) -> str:
    """A short content hash of JSON-able parts (shard hashes, features), stable across runs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def split_summary(shards: list[Shard]) -> Split:
    counts = np.sum([s.class_counts for s in shards], axis=0) if shards else np.zeros(NUM_CLASSES, int)
    return Split(
        records=int(sum(s.records for s in shards)),
        class_counts=[int(c) for c in counts],
        shards=shards,
        skipped=sum(len(s.skipped) for s in shards),
        vetoed=sum(s.vetoed for s in shards),
    )


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
    built_from: str = "",
) -> ShardedDataset:
    """Copy raw shards into root/<split>/, counting labels and hashing each shard.

    `source` describes where the shards came from and is kept in the manifest, as is `built_from` (reuse_raw_dataset).
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
                Shard(
                    name=path.name,
                    records=len(labels),
                    md5=md5_of(target),
                    bytes=target.stat().st_size,
                    class_counts=np.bincount(labels, minlength=NUM_CLASSES).tolist(),
                    skipped=bad.as_rows(),
                )
            )
            log(f"raw {split}/{path.name}: {len(labels)} records")
        splits[split] = split_summary(shards)
    version = data_version([[split, s.name, s.md5] for split in SPLITS for s in splits[split].shards])
    manifest = Manifest(
        kind="raw",
        source=source,
        data_version=version,
        on_bad_record=on_bad_record,
        splits=splits,
        built_from=built_from,
    )
    return write_manifest(root, manifest)


def reuse_raw_dataset(
    previous: Path | None, root: str | os.PathLike, built_from: str, on_bad_record: BadRecordPolicy
) -> ShardedDataset | None:
    """The previous raw version, linked into root as a new one, when it was built from the same `built_from` (not
    empty) with the same bad-record policy; else None, and root is left empty."""
    if previous is None or not built_from:
        return None
    try:
        kept = ShardedDataset.open(previous)
    except (OSError, ValueError):
        return None
    manifest = kept.manifest
    if (manifest.kind, manifest.built_from, manifest.on_bad_record) != ("raw", built_from, on_bad_record):
        return None
    files = [Path(split, shard.name) for split, summary in manifest.splits.items() for shard in summary.shards]
    sizes = [shard.bytes for summary in manifest.splits.values() for shard in summary.shards]
    if not all((previous / f).is_file() and (previous / f).stat().st_size == n for f, n in zip(files, sizes)):
        return None  # a version damaged since its commit is read again instead
    root = Path(root)
    for split in manifest.splits:
        (root / split).mkdir(parents=True, exist_ok=True)
    for relative in [*files, Path(MANIFEST)]:  # the dataset's own files, not a store's markers beside them
        try:
            os.link(previous / relative, root / relative)  # versions are never written after their commit
        except OSError:  # another file system
            shutil.copyfile(previous / relative, root / relative)
    return ShardedDataset.open(root)
