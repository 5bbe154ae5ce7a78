"""leaderboard: every feature set's current evaluated model side by side."""

import dagster as dg

from droughtwatch_assets.dagster_support.asset_defaults import CHAIN_STEP
from droughtwatch_assets.dagster_support.metadata import leaderboard_metadata
from droughtwatch_assets.dagster_support.partitions import feature_set_partitions
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.model.selection import candidate, ranked


def latest_evaluation(instance: dg.DagsterInstance, feature_set: str) -> dict | None:
    """What the partition's latest model_evaluation recorded, or None if it never ran."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_evaluation"), asset_partitions=[feature_set]), limit=1
    ).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    if "model_md5" not in metadata:  # evaluated by an earlier version that recorded less
        return None
    return {
        "val_accuracy": metadata["val_accuracy"].value,
        "majority_rate": metadata["majority_class_rate"].value,
        "macro_f1": metadata["macro_f1"].value,
        "recall": metadata["recall"].value,
        "data_version": metadata["data_version"].value,
        "model_md5": metadata["model_md5"].value,
    }


@dg.asset(
    **CHAIN_STEP,
    deps=["model_evaluation"],
    group_name="evaluation",
    kinds={"onnx"},
    io_manager_key="value_io_manager",
    description="Every feature set's current evaluated model side by side: val accuracy (the benchmark's metric), "
    "macro-F1, per-class recall and the majority-class rate, on the current raw data version. Models evaluated "
    "on other data are marked stale; feature sets never trained are listed as such.",
)
def leaderboard(context: dg.AssetExecutionContext, raw_tfrecords: ShardedDataset) -> dg.Output[list[dict]]:
    data_version = raw_tfrecords.manifest.data_version
    candidates = ranked(
        [
            candidate(feature_set, latest_evaluation(context.instance, feature_set), data_version)
            for feature_set in feature_set_partitions.get_partition_keys()
        ],
        "val_accuracy",
    )
    return dg.Output([c.as_dict() for c in candidates], metadata=leaderboard_metadata(candidates, data_version))
