"""Dagster metadata built from datasets and training results."""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.datasets import SPLITS, ShardedDataset
from droughtwatch_assets.features import NUM_CLASSES


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def class_balance_table(dataset: ShardedDataset) -> str:
    rows = []
    for split in SPLITS:
        counts = dataset.class_counts(split)
        total = sum(counts) or 1
        rows.append([split, *(f"{c} ({100 * c / total:.1f} %)" for c in counts)])
    return markdown_table(["split", *(f"class {k}" for k in range(NUM_CLASSES))], rows)


def dataset_metadata(dataset: ShardedDataset) -> dict:
    from droughtwatch_assets.visuals import markdown_image, processed_preview, raw_preview

    splits = dataset.manifest["splits"]
    metadata: dict = {f"{split}_records": splits[split]["records"] for split in SPLITS}
    metadata["class_balance"] = dg.MetadataValue.md(class_balance_table(dataset))
    skipped = [
        [split, row["file"].rsplit("/", 1)[-1], row["record"], row["problem"]]
        for split in SPLITS
        for shard in splits[split]["shards"]
        for row in shard.get("skipped", [])
    ]
    metadata["skipped_records"] = len(skipped)
    if skipped:
        metadata["skipped"] = dg.MetadataValue.md(markdown_table(["split", "file", "record", "problem"], skipped))
    shard_rows = [
        [split, s["name"], s["records"], s.get("vetoed", "-"), s.get("md5", "-")]
        for split in SPLITS
        for s in splits[split]["shards"]
    ]
    metadata["shards"] = dg.MetadataValue.md(markdown_table(["split", "shard", "records", "vetoed", "md5"], shard_rows))
    preview_shards = dataset.shards("val") + dataset.shards("train")
    if dataset.manifest["kind"] == "raw":
        metadata["source"] = dg.MetadataValue.json(dataset.manifest["source"])
        metadata["on_bad_record"] = dataset.on_bad_record
        picture = raw_preview(preview_shards, dataset.on_bad_record)
        if picture:
            metadata["preview"] = dg.MetadataValue.md(markdown_image(picture, "samples"))
    else:
        metadata["features"] = ", ".join(dataset.features)
        metadata["vetoed"] = sum(splits[split]["vetoed"] for split in SPLITS)
        stats = dataset.manifest["feature_stats"]
        metadata["feature_stats"] = dg.MetadataValue.md(
            markdown_table(
                ["feature", "min", "mean", "max"],
                [
                    [f, *(f"{v:.4g}" if v is not None else "-" for v in (s["min"], s["mean"], s["max"]))]
                    for f, s in stats.items()
                ],
            )
        )
        picture = processed_preview(preview_shards, dataset.features)
        if picture:
            metadata["preview"] = dg.MetadataValue.md(markdown_image(picture, "samples"))
    return metadata


def history_table(history: dict) -> str:
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history]
    epochs = len(history[keys[0]]) if keys else 0
    return markdown_table(["epoch", *keys], [[e + 1, *(f"{history[k][e]:.4f}" for k in keys)] for e in range(epochs)])
