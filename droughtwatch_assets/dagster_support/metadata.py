"""Dagster metadata built from datasets and training results: tables the UI can sort, and pictures."""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.core.features import NUM_CLASSES
from droughtwatch_assets.core.model_config import ModelConfig
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

    manifest = dataset.manifest
    splits = manifest.splits
    metadata: dict = {f"{split}_records": splits[split].records for split in SPLITS}
    metadata["class_balance"] = class_balance_table(dataset)
    skipped = [
        [split, row.file.rsplit("/", 1)[-1], row.record, row.problem]
        for split in SPLITS
        for shard in splits[split].shards
        for row in shard.skipped
    ]
    metadata["skipped_records"] = len(skipped)
    if skipped:
        metadata["skipped"] = table(
            [("split", "string"), ("file", "string"), ("record", "int"), ("problem", "string")], skipped
        )
    shard_rows = [[split, s.name, s.records, s.vetoed, s.md5] for split in SPLITS for s in splits[split].shards]
    metadata["shards"] = table(
        [("split", "string"), ("shard", "string"), ("records", "int"), ("vetoed", "int"), ("md5", "string")],
        shard_rows,
    )
    preview_shards = dataset.shards("val") + dataset.shards("train")
    if manifest.kind == "raw":
        metadata["source"] = dg.MetadataValue.json(manifest.source)
        metadata["on_bad_record"] = dataset.on_bad_record
        picture = raw_preview(preview_shards, dataset.on_bad_record)
        if picture:
            metadata["preview"] = dg.MetadataValue.md(markdown_image(picture, "samples"))
    else:
        metadata["features"] = ", ".join(dataset.features)
        metadata["vetoed"] = sum(splits[split].vetoed for split in SPLITS)
        metadata["feature_stats"] = table(
            [("feature", "string"), ("min", "float"), ("mean", "float"), ("max", "float")],
            [
                [feature, *(None if v is None else round(v, 6) for v in (s.min, s.mean, s.max))]
                for feature, s in manifest.feature_stats.items()
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
        ("augment", "string"),
        ("holdout_accuracy", "float"),
        ("holdout_loss", "float"),
        ("seconds", "float"),
        ("selected", "bool"),
    ]
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in trial.row().items()} for trial in trials]
    return table(columns, [[row[name] for name, _ in columns] for row in rows])


def export_metadata(info, parity: float, batch) -> dict:
    """onnx_model's metadata: the ONNX graph's interface (export.OnnxInfo) and the parity measured on `batch`."""
    return {
        "input_name": info.input_name,
        "input_shape": str(info.input_shape),
        "output_name": info.output_name,
        "opset": info.opset,
        "size_bytes": info.size_bytes,
        "max_abs_diff_vs_keras": parity,
        "parity_batch": len(batch.images),
        "parity_split": batch.split,
    }


def evaluation_metadata(result, probabilities, labels, record, tta: bool = False) -> dict:
    """model_evaluation's metadata: the headline figures, what the leaderboard compares (the EvaluationRecord's
    model and data version), tables and pictures; `tta`: whether the probabilities are averaged over the 8 dihedral
    views of each image."""
    from droughtwatch_assets.model.plots import confusion_matrix, markdown_image, pr_curves

    confusion_rows = [[k, *result.confusion[k].tolist()] for k in range(NUM_CLASSES)]
    class_rows = [
        [
            k,
            *(round(float(m[k]), 4) for m in (result.precision, result.recall, result.f1)),
            int(result.confusion[k].sum()),
        ]
        for k in range(NUM_CLASSES)
    ]
    return {
        "val_accuracy": result.accuracy,
        "majority_class_rate": result.majority_rate,
        "beats_majority_by": result.accuracy - result.majority_rate,
        "val_records": len(labels),
        "tta": tta,
        "macro_f1": float(result.f1.mean()),
        "recall": dg.MetadataValue.json([round(float(r), 4) for r in result.recall]),
        # what the leaderboard compares: which model, on which raw data
        "data_version": record.data_version,
        "model_md5": record.model_md5,
        # what prediction drift is measured against (without tta, as predictions score)
        "predicted_class_rates": dg.MetadataValue.json([round(rate, 4) for rate in record.predicted_class_rates]),
        "confusion_matrix": table(
            [("true class", "int"), *((f"predicted {k}", "int") for k in range(NUM_CLASSES))], confusion_rows
        ),
        "confusion_matrix_plot": dg.MetadataValue.md(markdown_image(confusion_matrix(result), "confusion matrix")),
        "per_class": table(
            [("class", "int"), ("precision", "float"), ("recall", "float"), ("F1", "float"), ("support", "int")],
            class_rows,
        ),
        "pr_curves": dg.MetadataValue.md(markdown_image(pr_curves(probabilities, labels), "precision-recall curves")),
    }


def predictions_metadata(result, shards: int, training_counts: list[int], class_drift) -> dict:
    """predictions' metadata: counts, the predicted class distribution beside the training one and the one it is
    tested against, how far apart those are (drift.ClassDrift) and why the training priors when they stand in for
    the model's predicted class rates on val, and a preview."""
    predicted = result.class_distribution()
    expected = class_drift.expected.shares
    rows = [
        [
            k,
            predicted[k],
            round(predicted[k] / max(1, sum(predicted)), 4),
            round(training_counts[k] / max(1, sum(training_counts)), 4),
            round(expected[k] / max(1e-12, sum(expected)), 4),
        ]
        for k in range(NUM_CLASSES)
    ]
    kinds = {
        name: "string" if name == "ID" else "int" if name in ("P_label", "label") else "float"
        for name in result.table.column_names
    }
    columns = [("class", "int"), ("predicted", "int"), ("predicted share", "float"), ("training share", "float")]
    return {
        "rows": result.table.num_rows,
        "records_read": result.records,
        "vetoed": result.vetoed,
        "skipped_records": len(result.skipped),
        "shards": shards,
        "prediction_distribution": table([*columns, ("expected share", "float")], rows),
        "class_drift": class_drift.line(),
        "class_drift_against": class_drift.expected.name,
        **({"class_drift_note": class_drift.expected.note} if class_drift.expected.note else {}),
        "class_drift_chi_square": class_drift.statistic,
        "class_drift_p_value": class_drift.p_value,
        "preview": table(list(kinds.items()), [list(row.values()) for row in result.table.slice(0, 5).to_pylist()]),
    }


def champion_history_table(history: list[dict]) -> dg.TableMetadataValue:
    columns = [
        ("promoted at", "string"),
        ("feature set", "string"),
        ("metric", "string"),
        ("value", "float"),
        ("model md5", "string"),
    ]
    rows = [[h["promoted_at"], h["feature_set"], h["metric"], h.get(h["metric"]), h["model_md5"]] for h in history]
    return table(columns, rows)


def training_metadata(trained, config: ModelConfig, val_counts: list[int], tracker) -> dict:
    """trained_model's metadata: the settings used, the history (a table and curves), the sweep if any, and where
    the tracker holds the run."""
    run, trials = trained.run, trained.trials
    metadata = {
        "parameters": run.model.count_params(),
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "augment": config.augment,
        "majority_class_rate": max(val_counts) / max(1, sum(val_counts)),
        "tracker": tracker.name,
        **tracker.metadata(),
    }
    if run.history:
        from droughtwatch_assets.model.plots import markdown_image, training_curves

        metadata["history"] = history_table(run.history)
        metadata["training_curves"] = dg.MetadataValue.md(markdown_image(training_curves(run.history), "curves"))
    if "val_accuracy" in run.history:
        metadata["val_accuracy"] = run.history["val_accuracy"][-1]
        metadata["val_loss"] = run.history["val_loss"][-1]
    metadata.update(trained.val_scores)
    if trials:
        metadata["sweep"] = sweep_table(trials)
        metadata["selected_trial"] = next(t.number for t in trials if t.selected)
    return metadata


def leaderboard_metadata(candidates, data_version: str) -> dict:
    """leaderboard's metadata: one row per feature set (model_selection.Candidate), and the chart."""
    from droughtwatch_assets.model.plots import leaderboard_chart, markdown_image

    def shown(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    rows = [
        [
            c.feature_set,
            c.status,
            *map(shown, (c.val_accuracy, c.macro_f1, *(c.recall or [None] * NUM_CLASSES), c.majority_rate)),
            c.data_version,
        ]
        for c in candidates
    ]
    columns = [
        ("feature set", "string"),
        ("status", "string"),
        ("val accuracy", "float"),
        ("macro F1", "float"),
        *((f"recall {k}", "float") for k in range(NUM_CLASSES)),
        ("majority class rate", "float"),
        ("data version", "string"),
    ]
    return {
        "data_version": data_version,
        "candidates": sum(c.status == "candidate" for c in candidates),
        "leaderboard": table(columns, rows),
        "chart": dg.MetadataValue.md(markdown_image(leaderboard_chart(candidates, "val_accuracy"), "leaderboard")),
    }


def publication_metadata(name: str, publication, registry: dict, card: str) -> dict:
    """published_model's metadata: where the set went (storage.registry.Publication), the tracker's entry and the
    model card."""
    return {
        "model_card": dg.MetadataValue.md(card),
        "model_name": name,
        "published": True,
        "model_uri": publication.model_uri,
        "config_uri": publication.config_uri,
        "version": publication.version,
        "version_uri": publication.version_uri,
        **registry,
    }


def freshness_metadata(rows: list[list], newest: str | None, stale: list[str]) -> dict:
    """published_model_is_fresh's metadata: one row per published feature set, and what is stale."""
    columns = [("feature set", "string"), ("run", "string"), ("age (days)", "float"), ("raw data", "string")]
    metadata = {"published_models": table([*columns, ("status", "string")], rows), "newest_raw_data": newest or "none"}
    if stale:
        metadata["stale"] = "\n".join(stale)
    return metadata


def drift_metadata(report, compared_with: str, reference) -> dict:
    """inputs_have_not_drifted's metadata: one row per feature and one for the blank-image share
    (drift.DriftReport), against the reference of the published model `compared_with`."""
    columns = [
        ("feature", "string"),
        ("PSI", "float"),
        ("status", "string"),
        ("reference mean", "float"),
        ("mean now", "float"),
    ]
    rows = [
        [row.feature, round(row.psi, 4), row.status, round(row.reference_mean, 4), round(row.mean_now, 4)]
        for row in report.rows
    ]
    return {
        "drift": table(columns, rows),
        "max_psi": report.max_psi,
        "status": report.status,
        "drifted": ", ".join(report.drifted) or "none",
        "compared_with": compared_with,
        "reference_data_version": reference.data_version,
        "vetoed_fraction": report.rows[-1].mean_now,
        "reference_vetoed_fraction": reference.vetoed_fraction,
        "records_sampled": report.records,
        "psi_warn": report.limits.warn,
        "psi_fail": report.limits.fail,
    }
