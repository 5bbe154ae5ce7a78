"""What the data checks judge a processed dataset by: its values against each feature's range, its record counts
against the raw dataset it was made from, and how alike its splits' class shares are."""

from __future__ import annotations

import math
from dataclasses import dataclass

from droughtwatch_assets.core.features import feature_range
from droughtwatch_assets.data.datasets import SPLITS, Manifest


def processed_problems(processed: Manifest, raw: Manifest) -> list[str]:
    """What is wrong with a processed dataset, judged from its manifest against the raw one's: a feature's values
    non-finite or outside its range; a shard whose records are not its raw shard's less those vetoed and those
    skipped by processing (not already by raw); class counts that do not add up to the records over labels 0..3."""
    problems = []
    for feature, stats in processed.feature_stats.items():
        if stats.min is None:
            continue
        low, high = feature_range(feature)
        if not (math.isfinite(stats.min) and math.isfinite(stats.max)):
            problems.append(f"{feature}: non-finite values (min {stats.min}, max {stats.max})")
        elif stats.min < low or stats.max > high:
            problems.append(f"{feature}: values in [{stats.min:.4g}, {stats.max:.4g}], outside [{low}, {high}]")
    for split in SPLITS:
        raw_shards = {s.name: s for s in raw.splits[split].shards}
        for shard in processed.splits[split].shards:
            raw_shard = raw_shards[shard.name]
            skipped_by_raw = {row.record for row in raw_shard.skipped}
            skipped = len([row for row in shard.skipped if row.record not in skipped_by_raw])
            expected = raw_shard.records - shard.vetoed - skipped
            if shard.records != expected:
                problems.append(
                    f"{split}/{shard.name}: {shard.records} records, expected raw "
                    f"{raw_shard.records} - vetoed {shard.vetoed} - skipped {skipped} = {expected}"
                )
            if sum(shard.class_counts) != shard.records or len(shard.class_counts) != 4:
                problems.append(
                    f"{split}/{shard.name}: class counts {shard.class_counts} do not cover "
                    f"{shard.records} records with labels 0..3"
                )
    return problems


@dataclass(frozen=True)
class ClassBalance:
    """Each split's class shares (an empty split's are all 0) and the largest gap between train's and val's."""

    train_shares: list[float]
    val_shares: list[float]

    @property
    def largest_gap(self) -> float:
        return max(abs(a - b) for a, b in zip(self.train_shares, self.val_shares))


def class_balance(manifest: Manifest) -> ClassBalance:
    shares = {}
    for split in SPLITS:
        counts = manifest.splits[split].class_counts
        shares[split] = [c / max(1, sum(counts)) for c in counts]
    return ClassBalance(shares["train"], shares["val"])
