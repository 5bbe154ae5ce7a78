"""Asset checks. Blocking ones stop what comes downstream: bad data is not trained on, a model whose ONNX
export disagrees with Keras is never published or registered."""

import time

import dagster as dg
from pydantic import Field

from droughtwatch_assets.core.configurations import PARITY_TOLERANCE, parity_problem
from droughtwatch_assets.dagster_support.metadata import drift_metadata, freshness_metadata
from droughtwatch_assets.dagster_support.partitions import feature_set_partitions
from droughtwatch_assets.dagster_support.provenance import last_publication, latest_raw_data_version
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.data.validation import class_balance, processed_problems
from droughtwatch_assets.defs.assets.model_evaluation import model_evaluation
from droughtwatch_assets.defs.assets.onnx_model import onnx_model
from droughtwatch_assets.defs.assets.processed_tfrecords import processed_tfrecords
from droughtwatch_assets.defs.assets.published_model import published_model
from droughtwatch_assets.model import drift
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.storage.registry import TornPair
from droughtwatch_assets.storage.s3_client import S3Error
from droughtwatch_assets.wiring.resources import ArtifactStore

CLASS_DRIFT_LIMIT = 0.10  # largest tolerated gap between train and val class shares


@dg.asset_check(
    asset=processed_tfrecords,
    blocking=True,
    partitions_def=feature_set_partitions,
    additional_ins={"raw_tfrecords": dg.AssetIn("raw_tfrecords")},
    description="Values finite, bands in [0, 1], indices in range, labels 0..3, "
    "records = raw - vetoed - skipped for every shard.",
)
def processed_values_are_valid(
    processed_tfrecords: ShardedDataset, raw_tfrecords: ShardedDataset
) -> dg.AssetCheckResult:
    problems = processed_problems(processed_tfrecords.manifest, raw_tfrecords.manifest)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


@dg.asset_check(
    asset=processed_tfrecords,
    partitions_def=feature_set_partitions,
    description="Train and val class shares within 10 points of each other (a warning, not a block).",
)
def class_balance_is_stable(processed_tfrecords: ShardedDataset) -> dg.AssetCheckResult:
    balance = class_balance(processed_tfrecords.manifest)
    return dg.AssetCheckResult(
        passed=balance.largest_gap <= CLASS_DRIFT_LIMIT,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "largest_share_gap": balance.largest_gap,
            "train_shares": balance.train_shares,
            "val_shares": balance.val_shares,
        },
    )


NO_PUBLISHED_MODEL = "no published model for this feature set yet: nothing to compare with"


class DriftConfig(dg.Config):
    psi_warn: float = Field(default=drift.PSI_WARN, description="a feature whose PSI reaches this fails as a warning")
    psi_fail: float = Field(default=drift.PSI_FAIL, description="a feature whose PSI reaches this fails as an error")


@dg.asset_check(
    asset=processed_tfrecords,
    blocking=False,
    partitions_def=feature_set_partitions,
    description="The partition's train split is distributed like the data the published model of this feature set "
    "was trained on: PSI per feature, and of the blank-image share, on the model's drift reference. A WARN at PSI "
    ">= psi_warn (0.1), an ERROR at >= psi_fail (0.2); it never blocks. Silent, and says so, while no model of this "
    "feature set is published.",
)
def inputs_have_not_drifted(
    context: dg.AssetCheckExecutionContext,
    config: DriftConfig,
    store: ArtifactStore,
    processed_tfrecords: ShardedDataset,
) -> dg.AssetCheckResult:
    try:
        published = drift.published_reference(store, context.partition_key)
    except (OSError, ValueError, S3Error, TornPair) as exc:
        return drift_warning("none", f"the published models could not be read: {exc}")
    if published is None:
        return dg.AssetCheckResult(passed=True, metadata={"compared_with": "none", "note": NO_PUBLISHED_MODEL})
    if published.reference is None:
        note = f"{published.label} has no drift reference (published before they were): nothing to compare with"
        return dg.AssetCheckResult(passed=True, metadata={"compared_with": published.label, "note": note})
    try:
        report = drift.compare(published.reference, processed_tfrecords, drift.Limits(config.psi_warn, config.psi_fail))
    except drift.NothingToCompare as exc:
        return dg.AssetCheckResult(passed=True, metadata={"compared_with": published.label, "note": str(exc)})
    except ValueError as exc:  # other features than the model's
        return drift_warning(published.label, str(exc))
    return dg.AssetCheckResult(
        passed=report.status == "ok",
        severity=dg.AssetCheckSeverity.ERROR if report.status == "fail" else dg.AssetCheckSeverity.WARN,
        metadata=drift_metadata(report, published.label, published.reference),
    )


def drift_warning(compared_with: str, problem: str) -> dg.AssetCheckResult:
    """The drift check could not compare: a warning that says why, never an error that fails the run."""
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"compared_with": compared_with, "problem": problem}
    )


@dg.asset_check(
    asset=onnx_model,
    blocking=True,
    partitions_def=feature_set_partitions,
    description="onnxruntime agrees with Keras on a validation batch (max abs diff <= 1e-5), as "
    "onnx_model measured it when exporting.",
)
def onnx_matches_keras(onnx_model: OnnxArtifact) -> dg.AssetCheckResult:
    parity = onnx_model.parity
    return dg.AssetCheckResult(
        passed=parity_problem(parity["max_abs_diff"]) is None, metadata={**parity, "tolerance": PARITY_TOLERANCE}
    )


@dg.asset_check(
    asset=model_evaluation,
    partitions_def=feature_set_partitions,
    description="Val accuracy above always predicting the majority class (a warning).",
)
def beats_the_majority_class(model_evaluation: EvaluationRecord) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=model_evaluation.accuracy > model_evaluation.majority_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"accuracy": model_evaluation.accuracy, "majority_rate": model_evaluation.majority_rate},
    )


class FreshnessConfig(dg.Config):
    max_age_days: float = 7.0  # a published model older than this is stale even when no newer data exists


@dg.asset_check(
    asset=published_model,
    blocking=False,
    description="Each published model was trained on the newest raw data and is at most max_age_days old "
    "(default 7); a warning otherwise. Runs with every publication, and hourly with the published_model_freshness "
    "schedule, so a model that new data left behind shows here.",
)
def published_model_is_fresh(context: dg.AssetCheckExecutionContext, config: FreshnessConfig) -> dg.AssetCheckResult:
    newest = latest_raw_data_version(context.instance)
    now = time.time()
    rows, stale = [], []
    for feature_set in feature_set_partitions.get_partition_keys():
        last = last_publication(context.instance, feature_set)
        if last is None:
            continue
        age_days = (now - last.published_at) / 86400
        problems = last.staleness(newest, age_days, config.max_age_days)
        if problems:
            stale.append(f"{feature_set}: {'; '.join(problems)}")
        rows.append(
            [feature_set, last.run_id, round(age_days, 2), last.raw_data_version or "", "; ".join(problems) or "fresh"]
        )
    metadata = freshness_metadata(rows, newest, stale)
    return dg.AssetCheckResult(passed=not stale, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


asset_checks = [
    processed_values_are_valid,
    class_balance_is_stable,
    inputs_have_not_drifted,
    onnx_matches_keras,
    beats_the_majority_class,
    published_model_is_fresh,
]
