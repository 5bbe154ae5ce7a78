"""Dagster metadata built from datasets and training results: tables the UI can sort, and pictures."""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.core.features import NUM_CLASSES
from droughtwatch_assets.data.datasets import SPLITS, ShardedDataset

Column = tuple[str, str]  # (name, type: string | int | float)


def table(columns: list[Column], rows: list[list]) -> dg.TableMetadataValue:
    """A typed table: `rows` hold one value per column, in order."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns])
    records = [dg.TableRecord(dict(zip([name for name, _ in columns], row))) for row in rows]
    return dg.MetadataValue.table(records=records, schema=schema)


def class_balance_table(dataset: ShardedDataset) -> dg.TableMetadataValue:
    columns: list[Column] = [("split", "string")]
    columns += [(f"class {k}", "int") for k in range(NUM_CLASSES)]
    columns += [(f"class {k} share", "float") for k in range(NUM_CLASSES)]
    rows = []
    for split in SPLITS:
        counts = dataset.class_counts(split)
        total = sum(counts) or 1
        rows.append([split, *counts, *(round(c / total, 4) for c in counts)])
    return table(columns, rows)


def dataset_metadata(dataset: ShardedDataset) -> dict:
    from droughtwatch_assets.model.plots import markdown_image, processed_preview, raw_preview

    splits = dataset.manifest["splits"]
    metadata: dict = {f"{split}_records": splits[split]["records"] for split in SPLITS}
    metadata["class_balance"] = class_balance_table(dataset)
    skipped = [
        [split, row["file"].rsplit("/", 1)[-1], row["record"], row["problem"]]
        for split in SPLITS
        for shard in splits[split]["shards"]
        for row in shard.get("skipped", [])
    ]
    metadata["skipped_records"] = len(skipped)
    if skipped:
        metadata["skipped"] = table(
            [("split", "string"), ("file", "string"), ("record", "int"), ("problem", "string")], skipped
        )
    shard_rows = [
        [split, s["name"], s["records"], s.get("vetoed", 0), s.get("md5", "")]
        for split in SPLITS
        for s in splits[split]["shards"]
    ]
    metadata["shards"] = table(
        [("split", "string"), ("shard", "string"), ("records", "int"), ("vetoed", "int"), ("md5", "string")],
        shard_rows,
    )
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
        metadata["feature_stats"] = table(
            [("feature", "string"), ("min", "float"), ("mean", "float"), ("max", "float")],
            [
                [feature, *(None if v is None else round(v, 6) for v in (s["min"], s["mean"], s["max"]))]
                for feature, s in stats.items()
            ],
        )
        picture = processed_preview(preview_shards, dataset.features)
        if picture:
            metadata["preview"] = dg.MetadataValue.md(markdown_image(picture, "samples"))
    return metadata


def history_table(history: dict) -> dg.TableMetadataValue:
    names = ("loss", "accuracy", "holdout_loss", "holdout_accuracy", "val_loss", "val_accuracy")
    keys = [k for k in names if k in history]
    epochs = len(history[keys[0]]) if keys else 0
    return table(
        [("epoch", "int"), *((k, "float") for k in keys)],
        [[e + 1, *(round(history[k][e], 4) for k in keys)] for e in range(epochs)],
    )


def sweep_table(trials) -> dg.TableMetadataValue:
    """One row per combination of a sweep (sweep.Trial), the kept one marked `selected`."""
    columns = [
        ("trial", "int"),
        ("learning_rate", "float"),
        ("batch_size", "int"),
        ("epochs", "int"),
        ("holdout_accuracy", "float"),
        ("holdout_loss", "float"),
        ("seconds", "float"),
        ("selected", "bool"),
    ]
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in trial.row().items()} for trial in trials]
    return table(columns, [[row[name] for name, _ in columns] for row in rows])
