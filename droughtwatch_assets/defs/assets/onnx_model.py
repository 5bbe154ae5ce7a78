"""onnx_model: the trained model in ONNX, checked against Keras, with its config beside it."""

import dagster as dg

from droughtwatch_assets.core.configurations import parity_problem
from droughtwatch_assets.dagster_support.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.dagster_support.failures import refusal
from droughtwatch_assets.dagster_support.metadata import export_metadata
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.model.artifacts import ModelArtifact, OnnxArtifact
from droughtwatch_assets.wiring.resources import ArtifactIOManager, TrackingResource


@dg.asset(
    **PER_FEATURE_SET,
    group_name="deployment",
    kinds={"onnx"},
    description="The trained model exported to ONNX, checked against Keras on a validation batch, with the "
    "resolved training config beside it as config.yaml.",
)
def onnx_model(
    context: dg.AssetExecutionContext,
    io_manager: dg.ResourceParam[ArtifactIOManager],
    tracking: TrackingResource,
    trained_model: ModelArtifact,
    processed_tfrecords: ShardedDataset,
) -> dg.Output[OnnxArtifact]:
    from droughtwatch_assets.model.export import NothingToCheck, export_checked  # TensorFlow: only here

    artifact = OnnxArtifact(io_manager.staging_dir())
    try:
        exported = export_checked(trained_model, artifact, processed_tfrecords)
    except NothingToCheck as exc:
        raise refusal(f"processed_tfrecords partition '{context.partition_key}' {exc}. Check the raw shards") from exc
    diff = exported.max_abs_diff
    problem = parity_problem(diff)
    if problem:  # the blocking onnx_matches_keras check stops publishing
        context.log.error(f"ONNX export disagrees with Keras: {problem}")
    with tracking.step(context, trained_model.config.tracker, job_type="export") as tracker:
        tracker.log_onnx_model(artifact.onnx_path)  # joins the training run where the backend keeps one
    context.log.info(f"ONNX model written: {exported.info.size_bytes} bytes, Keras/ONNX max abs diff {diff:.2g}")
    return dg.Output(artifact, metadata=export_metadata(exported.info, diff, exported.batch))
