"""leaderboard: every feature set's current evaluated model side by side."""

import dagster as dg

from droughtwatch_assets.dagster_support.asset_defaults import CHAIN_STEP
from droughtwatch_assets.dagster_support.metadata import leaderboard_metadata
from droughtwatch_assets.dagster_support.partitions import feature_set_partitions
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.model.selection import Candidate, candidate, ranked

# Every feature set's model_evaluation, those never evaluated left out: what the leaderboard and the champion read.
EVALUATIONS = dg.AssetIn(
    "model_evaluation",
    partition_mapping=dg.AllPartitionMapping(),
    metadata={"allow_missing_partitions": True},
    dagster_type=dg.Any,  # Dagster types no union; by_feature_set tells the shapes apart
)
Evaluations = dict[str, EvaluationRecord] | EvaluationRecord | None


def by_feature_set(loaded: Evaluations) -> dict[str, EvaluationRecord]:
    """The EVALUATIONS input by feature set. The IO manager hands a dict, but the record itself when the deployment
    has a single feature set, and None when that one was never evaluated."""
    if loaded is None:
        return {}
    if isinstance(loaded, dict):
        return loaded
    [only] = feature_set_partitions.get_partition_keys()
    return {only: loaded}


@dg.asset(
    # 2: the evaluations come in typed through the input (Candidate records out), no longer from their metadata
    **{**CHAIN_STEP, "code_version": "2"},
    ins={"model_evaluation": EVALUATIONS},
    group_name="evaluation",
    kinds={"onnx"},
    io_manager_key="value_io_manager",
    description="Every feature set's current evaluated model side by side: val accuracy (the benchmark's metric), "
    "macro-F1, per-class recall and the majority-class rate, on the current raw data version. Models evaluated "
    "on other data are marked stale; feature sets never trained are listed as such.",
)
def leaderboard(
    raw_tfrecords: ShardedDataset,
    model_evaluation: Evaluations,
) -> dg.Output[list[Candidate]]:
    data_version = raw_tfrecords.manifest.data_version
    evaluations = by_feature_set(model_evaluation)
    candidates = ranked(
        [
            candidate(feature_set, evaluations.get(feature_set), data_version)
            for feature_set in feature_set_partitions.get_partition_keys()
        ],
        "val_accuracy",
    )
    return dg.Output(candidates, metadata=leaderboard_metadata(candidates, data_version))
