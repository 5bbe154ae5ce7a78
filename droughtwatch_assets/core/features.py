"""The one registry of bands, spectral indices and feature sets.

Everything that needs a band list, an index formula or a feature set asks this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

IMAGE_SIZE = 65
PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 4

BANDS: tuple[str, ...] = tuple(f"B{i}" for i in range(1, 12))
BAND_INDEX: dict[str, int] = {band: i for i, band in enumerate(BANDS)}

# Per-pixel index formulas on normalised bands (float32 arrays in [0, 1]).
Bands = Mapping[str, np.ndarray]


def ndvi(b: Bands) -> np.ndarray:
    return (b["B5"] - b["B4"]) / (b["B5"] + b["B4"] + np.float32(1e-7))


def ndmi(b: Bands) -> np.ndarray:
    return (b["B5"] - b["B6"]) / (b["B5"] + b["B6"] + np.float32(1e-7))


def evi(b: Bands) -> np.ndarray:
    """EVI = 2.5 (B5 - B4) / (B5 + 6 B4 - 7.5 B2 + 1), guarded.

    The original leaves the denominator unguarded; on [0, 1] inputs it spans [-6.5, 8] and can be
    exactly 0, which gives inf or NaN. Guard: where the denominator is exactly 0, EVI is 0.
    Everywhere else the value is bit-for-bit the original formula in float32.
    """
    numerator = np.float32(2.5) * (b["B5"] - b["B4"])
    denominator = b["B5"] + np.float32(6) * b["B4"] - np.float32(7.5) * b["B2"] + np.float32(1)
    zero = denominator == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = numerator / np.where(zero, np.float32(1), denominator)
    return np.where(zero, np.float32(0), value)


@dataclass(frozen=True)
class Index:
    name: str
    bands: tuple[str, ...]
    compute: Callable[[Bands], np.ndarray]
    value_range: tuple[float, float]


INDICES: dict[str, Index] = {
    "NDVI": Index("NDVI", ("B4", "B5"), ndvi, (-1.0, 1.0)),
    "NDMI": Index("NDMI", ("B5", "B6"), ndmi, (-1.0, 1.0)),
    # Unbounded near a zero denominator; the range is what a finite float32 allows.
    "EVI": Index("EVI", ("B2", "B4", "B5"), evi, (float(-np.finfo(np.float32).max), float(np.finfo(np.float32).max))),
}

FEATURES: tuple[str, ...] = BANDS + tuple(INDICES)

FEATURE_SETS_FILE = Path(__file__).with_name("feature_sets.yaml")


def feature_range(feature: str) -> tuple[float, float]:
    return (0.0, 1.0) if feature in BAND_INDEX else INDICES[feature].value_range


def bands_needed(features: tuple[str, ...]) -> tuple[str, ...]:
    """The raw bands a feature list reads, in registry order."""
    needed = set()
    for feature in features:
        needed.update(INDICES[feature].bands if feature in INDICES else (feature,))
    return tuple(band for band in BANDS if band in needed)


def validate_features(features: list[str] | tuple[str, ...], where: str) -> tuple[str, ...]:
    unknown = [f for f in features if f not in FEATURES]
    if not features or unknown:
        raise ValueError(f"{where}: unknown feature(s) {unknown or '(empty list)'}; choose from {', '.join(FEATURES)}")
    if len(set(features)) != len(features):
        raise ValueError(f"{where}: a feature is listed twice in {list(features)}")
    return tuple(features)


def load_feature_sets(path: str | os.PathLike | None = None) -> dict[str, tuple[str, ...]]:
    """Feature sets from YAML (default: the packaged feature_sets.yaml; a deployment names another with
    DROUGHTWATCH_FEATURE_SETS)."""
    path = Path(path or FEATURE_SETS_FILE)
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a mapping of feature-set name -> list of features")
    return {
        str(name): validate_features(list(features or []), f"{path}: feature set {name!r}")
        for name, features in raw.items()
    }


def feature_set(name: str, sets: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """The features of a set, from `sets` (default: the packaged file)."""
    sets = load_feature_sets() if sets is None else sets
    if name not in sets:
        raise KeyError(f"unknown feature set {name!r}; defined sets: {', '.join(sets)} (edit {FEATURE_SETS_FILE.name})")
    return sets[name]
