import dagster as dg
from pydantic import Field

from droughtwatch_assets.dagster_support.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.dagster_support.failures import bad_record_failure
from droughtwatch_assets.dagster_support.metadata import predictions_metadata
from droughtwatch_assets.data.datasets import ShardedDataset, md5_of
from droughtwatch_assets.model.artifacts import OnnxArtifact, PredictionsArtifact
from droughtwatch_assets.model.drift import class_drift, expected_from_evaluation, read_reference
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.model.predict import input_shards, predict_shards, write_parquet
from droughtwatch_assets.records.tfrecord import RecordError
from droughtwatch_assets.wiring.resources import ArtifactIOManager


class PredictionsConfig(dg.Config):
    input: str = Field(
        default="", description="a raw shard or a folder of part-* shards to score; empty scores the raw val split"
    )


@dg.asset(
    **PER_FEATURE_SET,
    group_name="deployment",
    kinds={"onnx", "parquet"},
    description="Class probabilities from the ONNX model on new raw shards, processed exactly as in training. "
    "Parquet with the original's monitoring columns: ID, P_0..P_3, P_label, label. The predicted class counts "
    "are tested against the model's own predicted class rates on val (model_evaluation's; chi-square), or the "
    "training class priors when those are not known, saying why; a warning when p < 0.01.",
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    io_manager: dg.ResourceParam[ArtifactIOManager],
    onnx_model: OnnxArtifact,
    model_evaluation: EvaluationRecord,
    processed_tfrecords: ShardedDataset,
    raw_tfrecords: ShardedDataset,
) -> dg.Output[PredictionsArtifact]:
    shards = input_shards(config.input) if config.input else raw_tfrecords.shards("val")
    policy = raw_tfrecords.on_bad_record  # the run's one policy for raw records
    try:
        result = predict_shards(onnx_model.onnx_path, processed_tfrecords.features, shards, on_bad_record=policy)
    except RecordError as exc:
        raise bad_record_failure(exc, policy) from exc
    artifact = PredictionsArtifact(io_manager.staging_dir())
    write_parquet(result, artifact.parquet_path)
    context.log.info(f"{result.table.num_rows} predictions from {len(shards)} shards, {result.vetoed} vetoed")
    training_counts = processed_tfrecords.class_counts("train")
    reference = read_reference(onnx_model.drift_reference_path)  # None for a model trained before references
    priors = reference.class_priors if reference else training_counts
    expected = expected_from_evaluation(model_evaluation, md5_of(onnx_model.onnx_path), priors)
    drift = class_drift(result.class_distribution(), expected)
    if drift.drifted:
        context.log.warning(drift.summary())
    metadata = predictions_metadata(result, len(shards), training_counts, drift)
    return dg.Output(artifact, metadata=metadata)
