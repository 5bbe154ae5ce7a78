"""A deterministic sample in the exact DroughtWatch record format, with a learnable signal.

Each image is a smooth background around the real per-band means, plus a vegetation patch at the
centre whose strength grows with the label: more NIR (B5), less red (B4), a little more green (B3).
So the label is visible in the baseline bands, in RGB and in NDVI, as in the real task where the
label describes the spot at the centre. About 1 % of the records are all-zero, like the blank
images of the real shards, and are vetoed by processing.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from droughtwatch_assets.core.features import BAND_INDEX, BANDS, IMAGE_SIZE, NUM_CLASSES
from droughtwatch_assets.records.tfrecord import encode_raw_example
from droughtwatch_assets.records.writer import RecordWriter

# Class shares of the real train split (51,814 / 12,851 / 13,609 / 8,043).
CLASS_PRIOR = np.array([51814, 12851, 13609, 8043], dtype=np.float64) / 86317
# Mean uint8 per band B1..B11 in the real shard.
BAND_MEANS = np.array([37.7, 34.8, 36.3, 46.2, 73.2, 79.3, 62.4, 39.5, 1.2, 198.3, 195.0], dtype=np.float32)
# uint8 change per unit of vegetation at the centre of the patch.
VEGETATION_RESPONSE = {"B5": 45.0, "B4": -14.0, "B3": 6.0, "B6": -8.0}
BLANK_RATE = 0.01


@dataclass(frozen=True)
class SampleSpec:
    train_records: int = 2048
    val_records: int = 512
    records_per_shard: int = 512
    seed: int = 0


def _centre_patch() -> np.ndarray:
    y, x = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] - (IMAGE_SIZE - 1) / 2
    return np.exp(-(x**2 + y**2) / (2 * 9.0**2)).astype(np.float32)


def generate_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """uint8 [n, 11, 65, 65] images for the given labels."""
    n = len(labels)
    coarse = rng.standard_normal((n, len(BANDS), 5, 5), dtype=np.float32)
    background = np.kron(coarse, np.ones((13, 13), np.float32))  # smooth 65x65 texture
    images = BAND_MEANS[None, :, None, None] * (1 + 0.15 * background)
    images += 3 * rng.standard_normal(images.shape, dtype=np.float32)
    vegetation = (labels / (NUM_CLASSES - 1) + rng.normal(0, 0.05, n)).astype(np.float32)
    patch = _centre_patch()
    for band, response in VEGETATION_RESPONSE.items():
        images[:, BAND_INDEX[band]] += response * vegetation[:, None, None] * patch
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    images[rng.random(n) < BLANK_RATE] = 0
    return images


def write_sample(directory: str | os.PathLike, spec: SampleSpec = SampleSpec()) -> dict[str, list[Path]]:
    """Write train/ and val/ shards named part-r-NNNNN, as the benchmark archive extracts."""
    rng = np.random.default_rng(spec.seed)
    shards: dict[str, list[Path]] = {}
    for split, count in (("train", spec.train_records), ("val", spec.val_records)):
        split_dir = Path(directory, split)
        split_dir.mkdir(parents=True, exist_ok=True)
        shards[split] = []
        for shard, start in enumerate(range(0, count, spec.records_per_shard)):
            n = min(spec.records_per_shard, count - start)
            labels = rng.choice(NUM_CLASSES, size=n, p=CLASS_PRIOR)
            images = generate_images(rng, labels)
            path = split_dir / f"part-r-{shard:05d}"
            with RecordWriter(path) as writer:
                for image, label in zip(images, labels):
                    writer.write(encode_raw_example(image, int(label), str(uuid.UUID(bytes=rng.bytes(16), version=4))))
            shards[split].append(path)
    return shards
