"""Raw uint8 shards -> processed float32 shards of one feature set, in vectorised blocks.

Maths as in the original: every band is float32(uint8) / 255; an observation is vetoed when the
maximum over all bands and pixels is not greater than 1/255; NDVI, NDMI and EVI are computed on the
normalised bands (see features.py for the formulas and the EVI guard).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from droughtwatch_assets.core.features import BAND_INDEX, IMAGE_SIZE, INDICES, NUM_CLASSES, bands_needed
from droughtwatch_assets.data.datasets import (
    SPLITS,
    FeatureTotals,
    Manifest,
    Shard,
    ShardedDataset,
    data_version,
    split_summary,
    write_manifest,
)
from droughtwatch_assets.records.tfrecord import BadRecordPolicy, BadRecords, iter_raw_blocks
from droughtwatch_assets.records.writer import RecordWriter, UniformBlock, write_processed


def normalise(bands: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32(uint8) / 255, as the original."""
    return np.divide(bands, np.float32(255), out=out, dtype=np.float32)


def keep_mask(bands: np.ndarray) -> np.ndarray:
    """True for observations to keep: max over all bands and pixels, normalised, is > 1/255.

    Normalisation is monotonic, so this is a uint8 comparison: keep iff the uint8 max is >= 2.
    """
    flat = bands.reshape(len(bands), -1)
    return flat.max(axis=1) >= 2


class FeatureStats:
    """Running min / max / sum per feature."""

    def __init__(self, channels: int):
        self.minimum = np.full(channels, np.inf)
        self.maximum = np.full(channels, -np.inf)
        self.total = np.zeros(channels)
        self.pixels = 0

    def _add(self, c: int, low: float, high: float, total: float, pixels: int) -> None:
        self.minimum[c] = min(self.minimum[c], low)
        self.maximum[c] = max(self.maximum[c], high)
        self.total[c] += total
        if c == 0:
            self.pixels += pixels

    def update(self, c: int, plane: np.ndarray) -> None:
        """From a feature's float32 values [n, 65, 65]."""
        # reductions over one contiguous plane are far faster than axis-0 reductions over channels-last data
        total = plane.reshape(len(plane), -1).sum(axis=1, dtype=np.float32).sum(dtype=np.float64)
        self._add(c, float(plane.min()), float(plane.max()), float(total), plane.size)

    def update_band(self, c: int, raw: np.ndarray) -> None:
        """From a band's uint8 values [n, 65, 65]: a quarter of the bytes, and normalising is monotonic."""
        low, high = normalise(np.array([raw.min(), raw.max()], dtype=np.uint8))
        total = np.add.reduce(raw.reshape(len(raw), -1), axis=1, dtype=np.uint32).sum(dtype=np.int64) / 255
        self._add(c, float(low), float(high), float(total), raw.size)

    def merge(self, other: FeatureStats) -> None:
        self.minimum = np.minimum(self.minimum, other.minimum)
        self.maximum = np.maximum(self.maximum, other.maximum)
        self.total += other.total
        self.pixels += other.pixels

    def summary(self, features: tuple[str, ...]) -> dict[str, dict]:
        if not self.pixels:
            return {feature: {"min": None, "mean": None, "max": None} for feature in features}
        return {
            feature: {
                "min": float(self.minimum[c]),
                "mean": float(self.total[c] / self.pixels),
                "max": float(self.maximum[c]),
            }
            for c, feature in enumerate(features)
        }


_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, n: int) -> np.ndarray:
    """A reused float32 [n, 65, 65] buffer per band: fresh large allocations cost more than the maths."""
    buffer = _SCRATCH.get(name)
    if buffer is None or len(buffer) < n:
        buffer = _SCRATCH[name] = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return buffer[:n]


def compute_features(
    bands: np.ndarray, features: tuple[str, ...], out: np.ndarray | None = None, stats: FeatureStats | None = None
) -> np.ndarray:
    """uint8 bands [n, 11, 65, 65] -> float32 features [n, 65, 65, len(features)] (channels last).

    A band that no index reads is normalised straight into its output channel; the bands an index
    reads are normalised once into contiguous scratch planes.
    """
    n = len(bands)
    if out is None:
        out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, len(features)), dtype=np.float32)
    indices = [feature for feature in features if feature in INDICES]
    normalised = {band: normalise(bands[:, BAND_INDEX[band]], _scratch(band, n)) for band in bands_needed(indices)}
    for c, feature in enumerate(features):
        if feature in BAND_INDEX:
            raw = bands[:, BAND_INDEX[feature]]
            if feature in normalised:
                out[..., c] = normalised[feature]
            else:
                normalise(raw, out[..., c])
            if stats is not None:
                stats.update_band(c, raw)
        else:
            plane = INDICES[feature].compute(normalised)
            out[..., c] = plane
            if stats is not None:
                stats.update(c, plane)
    return out


@dataclass
class ShardStats:
    name: str
    records: int = 0
    vetoed: int = 0
    vetoed_indices: list[int] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    features: FeatureStats | None = None
    skipped: list[dict] = field(default_factory=list)  # bad records dropped under on_bad_record=skip
    direct_io: bool = False  # the shard was written with O_DIRECT from start to end


# Records per block: small enough that a block's raw rows, bands and output frames (~10 MB) stay in
# the CPU caches between passes; 256 ran 10-15% slower, 32 no faster in total than 64.
BLOCK_SIZE = 64


def process_shard(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    features: tuple[str, ...],
    block_size: int = BLOCK_SIZE,
    on_bad_record: str = "fail",
    write_behind: bool = True,
    direct: bool = True,
) -> ShardStats:
    """Stream one raw shard into a processed shard; memory is bounded by block_size.

    With write_behind, each block is written on a thread while the next one is parsed and computed;
    with direct, it goes to the file without the page cache where the filesystem allows.
    """
    stats = ShardStats(Path(destination).name, features=FeatureStats(len(features)))
    bad = BadRecords(on_bad_record)
    out = np.empty((block_size, IMAGE_SIZE, IMAGE_SIZE, len(features)), dtype=np.float32)
    with RecordWriter(destination, write_behind=write_behind, direct=direct) as writer:
        for block in iter_raw_blocks(source, block_size, bad=bad):
            keep = keep_mask(block.bands)
            stats.vetoed_indices.extend(block.indices[~keep].tolist())
            kept = int(keep.sum())
            if not kept:
                continue
            ids = [i for i, k in zip(block.ids, keep) if k] if kept < len(block) else block.ids
            labels = block.labels[keep]
            frames = UniformBlock.create(writer, kept, len(features), ids)
            images = compute_features(
                block.bands[keep] if kept < len(block) else block.bands,
                features,
                frames.images if frames else out[:kept],
                stats.features,
            )
            if frames:
                frames.write(labels)  # the features were computed straight into the frame buffer
            else:
                write_processed(writer, images, labels, ids)
            stats.records += kept
            stats.class_counts = (np.asarray(stats.class_counts) + np.bincount(labels, minlength=NUM_CLASSES)).tolist()
    stats.direct_io = writer.direct  # read after close: its last, padded write goes out then
    stats.vetoed = len(stats.vetoed_indices)
    stats.skipped = bad.as_rows()
    return stats


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


PROCESSING_VERSION = "1"  # bump when the processed bytes of an unchanged raw shard would change


def _shard_entry(stats: ShardStats, raw_md5: str) -> Shard:
    totals = stats.features
    return Shard(
        name=stats.name,
        records=stats.records,
        vetoed=stats.vetoed,
        vetoed_indices=stats.vetoed_indices,
        class_counts=stats.class_counts,
        skipped=stats.skipped,
        raw_md5=raw_md5,
        feature_totals=FeatureTotals(
            min=totals.minimum.tolist(), max=totals.maximum.tolist(), total=totals.total.tolist(), pixels=totals.pixels
        ),
    )


def _reusable(previous: ShardedDataset | None, features: tuple[str, ...], on_bad_record: str) -> dict:
    """(split, shard name) -> (previous shard path, manifest entry) for shards an earlier run processed alike."""
    if (
        previous is None
        or previous.features != features
        or previous.manifest.processing_version != PROCESSING_VERSION
        or previous.manifest.on_bad_record != on_bad_record
    ):
        return {}
    return {
        (split, entry.name): (previous.root / split / entry.name, entry)
        for split in SPLITS
        for entry in previous.manifest.splits[split].shards
        if entry.raw_md5 and entry.feature_totals is not None
    }


def _totals_from(entry: Shard, channels: int) -> FeatureStats:
    totals = FeatureStats(channels)
    saved = entry.feature_totals
    totals.minimum, totals.maximum = np.array(saved.min, float), np.array(saved.max, float)
    totals.total, totals.pixels = np.array(saved.total, float), saved.pixels
    return totals


@dataclass(frozen=True)
class ProcessingOptions:
    workers: int | None = None  # processes; None: default_workers()
    on_bad_record: BadRecordPolicy = "fail"
    write_behind: bool = True
    direct: bool = True


@dataclass(frozen=True)
class _ShardJob:
    split: str
    source: Path
    destination: Path
    raw_md5: str


def process_dataset(
    raw: ShardedDataset,
    root: str | os.PathLike,
    feature_set: str,
    features: tuple[str, ...],
    options: ProcessingOptions | None = None,
    *,
    previous: ShardedDataset | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ShardedDataset:
    """Process every shard of both splits, one shard per task, in parallel processes when workers > 1.

    A shard that `previous` (the last processed version) already holds for the same raw bytes, features
    and processing version is linked from there instead of being processed again.
    """
    options, root = options or ProcessingOptions(), Path(root)
    entries, jobs = _reuse_or_plan(raw, root, _reusable(previous, features, options.on_bad_record), log)
    entries.update(_run(jobs, features, options, log))
    totals, splits = FeatureStats(len(features)), {}
    for split in SPLITS:
        shards = [entries[(split, source.name)] for source in raw.shards(split)]
        for entry in shards:
            totals.merge(_totals_from(entry, len(features)))
        splits[split] = split_summary(shards)
    raw_version = raw.manifest.data_version
    manifest = Manifest(
        kind="processed",
        source=raw.manifest.source,
        feature_set=feature_set,
        features=list(features),
        data_version=data_version([raw_version, list(features), PROCESSING_VERSION]),
        raw_data_version=raw_version,
        processing_version=PROCESSING_VERSION,
        on_bad_record=options.on_bad_record,
        shards_processed=len(jobs),
        shards_reused=len(entries) - len(jobs),
        image_shape=[IMAGE_SIZE, IMAGE_SIZE, len(features)],
        dtype="float32",
        splits=splits,
        feature_stats=totals.summary(features),
    )
    return write_manifest(root, manifest)


def _reuse_or_plan(raw: ShardedDataset, root: Path, reusable: dict, log) -> tuple[dict, list[_ShardJob]]:
    """Link each shard the previous version holds for the same raw bytes; the rest are jobs."""
    entries, jobs = {}, []
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)
        raw_md5 = {s.name: s.md5 for s in raw.manifest.splits[split].shards}
        for source in raw.shards(split):
            old = reusable.get((split, source.name))
            if old and old[1].raw_md5 == raw_md5[source.name] and old[0].exists():
                try:
                    os.link(old[0], root / split / source.name)
                except OSError:
                    shutil.copyfile(old[0], root / split / source.name)
                entries[(split, source.name)] = old[1]
                log(f"reused {split}/{source.name}: raw shard unchanged")
            else:
                jobs.append(_ShardJob(split, source, root / split / source.name, raw_md5[source.name]))
    return entries, jobs


def _run(jobs: list[_ShardJob], features: tuple[str, ...], options: ProcessingOptions, log) -> dict:
    workers = min(options.workers or default_workers(), len(jobs)) or 1
    process = functools.partial(
        process_shard,
        features=features,
        on_bad_record=options.on_bad_record,
        write_behind=options.write_behind,
        direct=options.direct,
    )
    pool = None
    if workers == 1:
        runner = (process(job.source, job.destination) for job in jobs)
    else:
        # spawn, not fork: the caller may have TensorFlow loaded, which is not fork-safe.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        runner = pool.map(process, [j.source for j in jobs], [j.destination for j in jobs])
    log(f"{len(jobs)} shards to process in {workers} process{'es' if workers > 1 else ''}")
    entries = {}
    try:
        for job, stats in zip(jobs, runner):
            entries[(job.split, job.source.name)] = _shard_entry(stats, job.raw_md5)
            log(f"processed {job.split}/{job.source.name}: {stats.records} kept, {stats.vetoed} vetoed")
    except BrokenProcessPool as exc:
        job = jobs[len(entries)]
        raise RuntimeError(
            f"a processing worker died while {job.split}/{job.source.name} or a shard after it was being "
            f"processed (killed by the system, for example out of memory); lower "
            f"processed_tfrecords' workers"
        ) from exc
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return entries
