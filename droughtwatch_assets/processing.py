"""Raw uint8 shards -> processed float32 shards of one feature set, in vectorised blocks.

Maths as in the original: every band is float32(uint8) / 255; an observation is vetoed when the
maximum over all bands and pixels is not greater than 1/255; NDVI, NDMI and EVI are computed on the
normalised bands (see features.py for the formulas and the EVI guard).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from droughtwatch_assets.datasets import SPLITS, ShardedDataset, data_version, split_summary, write_manifest
from droughtwatch_assets.features import BAND_INDEX, IMAGE_SIZE, INDICES, NUM_CLASSES, bands_needed
from droughtwatch_assets.records import RecordWriter, iter_raw_blocks, write_processed

# float32(v) / float32(255) for every uint8 v: a lookup gives the same bits as the division.
NORMALISED = np.arange(256, dtype=np.float32) / np.float32(255)
VETO_THRESHOLD = np.float32(1 / 255)


def normalise(bands: np.ndarray) -> np.ndarray:
    return NORMALISED[bands]


def keep_mask(bands: np.ndarray) -> np.ndarray:
    """True for observations to keep: max over all bands and pixels, normalised, is > 1/255.

    Normalisation is monotonic, so this is a uint8 comparison: keep iff the uint8 max is >= 2.
    """
    flat = bands.reshape(len(bands), -1)
    return flat.max(axis=1) >= 2


def compute_features(bands: np.ndarray, features: tuple[str, ...], out: np.ndarray | None = None) -> np.ndarray:
    """uint8 bands [n, 11, 65, 65] -> float32 features [n, 65, 65, len(features)] (channels last)."""
    n = len(bands)
    if out is None:
        out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, len(features)), dtype=np.float32)
    normalised = {band: normalise(bands[:, BAND_INDEX[band]]) for band in bands_needed(features)}
    for c, feature in enumerate(features):
        out[..., c] = normalised[feature] if feature in BAND_INDEX else INDICES[feature].compute(normalised)
    return out


@dataclass
class ShardStats:
    name: str
    records: int = 0
    vetoed: int = 0
    vetoed_indices: list[int] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    minimum: list[float] = field(default_factory=list)
    maximum: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)  # per-feature sum, for the mean


def process_shard(source: str | os.PathLike, destination: str | os.PathLike, features: tuple[str, ...],
                  block_size: int = 256) -> ShardStats:
    """Stream one raw shard into a processed shard; memory is bounded by block_size."""
    stats = ShardStats(Path(destination).name, minimum=[np.inf] * len(features),
                       maximum=[-np.inf] * len(features), total=[0.0] * len(features))
    out = np.empty((block_size, IMAGE_SIZE, IMAGE_SIZE, len(features)), dtype=np.float32)
    with RecordWriter(destination) as writer:
        for block in iter_raw_blocks(source, block_size):
            keep = keep_mask(block.bands)
            stats.vetoed_indices.extend((block.first_index + np.flatnonzero(~keep)).tolist())
            kept = int(keep.sum())
            if not kept:
                continue
            images = compute_features(block.bands[keep], features, out[:kept])
            labels = block.labels[keep]
            write_processed(writer, images, labels, [i for i, k in zip(block.ids, keep) if k])
            stats.records += kept
            stats.class_counts = (np.asarray(stats.class_counts) + np.bincount(labels, minlength=NUM_CLASSES)).tolist()
            flat = images.reshape(-1, len(features))
            stats.minimum = np.minimum(stats.minimum, flat.min(axis=0)).tolist()
            stats.maximum = np.maximum(stats.maximum, flat.max(axis=0)).tolist()
            stats.total = (np.asarray(stats.total) + flat.sum(axis=0, dtype=np.float64)).tolist()
    stats.vetoed = len(stats.vetoed_indices)
    return stats


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def process_dataset(raw: ShardedDataset, root: str | os.PathLike, feature_set: str, features: tuple[str, ...],
                    workers: int | None = None, log: Callable[[str], None] = lambda _: None) -> ShardedDataset:
    """Process every shard of both splits, one shard per task, in parallel processes when workers > 1."""
    root = Path(root)
    jobs = []
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)
        jobs += [(split, source, root / split / source.name) for source in raw.shards(split)]
    workers = min(workers or default_workers(), len(jobs)) or 1
    results: dict[tuple[str, str], ShardStats] = {}
    if workers == 1:
        runner = map(lambda job: process_shard(job[1], job[2], features), jobs)
        pool = None
    else:
        # spawn, not fork: the caller may have TensorFlow loaded, which is not fork-safe.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        runner = pool.map(process_shard, [j[1] for j in jobs], [j[2] for j in jobs], [features] * len(jobs))
    try:
        for (split, source, _), stats in zip(jobs, runner):
            results[(split, source.name)] = stats
            log(f"processed {split}/{source.name}: {stats.records} kept, {stats.vetoed} vetoed")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)

    manifest = {"kind": "processed", "feature_set": feature_set, "features": list(features),
                "data_version": data_version([raw.manifest.get("data_version", ""), list(features)]),
                "raw_data_version": raw.manifest.get("data_version", ""),
                "image_shape": [IMAGE_SIZE, IMAGE_SIZE, len(features)], "dtype": "float32", "splits": {},
                "feature_stats": {}}
    totals = {"min": [np.inf] * len(features), "max": [-np.inf] * len(features), "sum": [0.0] * len(features)}
    pixels = 0
    for split in SPLITS:
        shards = []
        for source in raw.shards(split):
            stats = results[(split, source.name)]
            shards.append({"name": stats.name, "records": stats.records, "vetoed": stats.vetoed,
                           "vetoed_indices": stats.vetoed_indices, "class_counts": stats.class_counts})
            if stats.records:
                totals["min"] = np.minimum(totals["min"], stats.minimum).tolist()
                totals["max"] = np.maximum(totals["max"], stats.maximum).tolist()
                totals["sum"] = (np.asarray(totals["sum"]) + stats.total).tolist()
                pixels += stats.records * IMAGE_SIZE * IMAGE_SIZE
        summary = split_summary(shards)
        summary["vetoed"] = sum(s["vetoed"] for s in shards)
        manifest["splits"][split] = summary
    manifest["feature_stats"] = {
        feature: {"min": totals["min"][c], "mean": totals["sum"][c] / pixels, "max": totals["max"][c]} if pixels
        else {"min": None, "mean": None, "max": None}
        for c, feature in enumerate(features)}
    return write_manifest(root, manifest)
