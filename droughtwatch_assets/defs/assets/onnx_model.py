"""onnx_model: the trained model in ONNX, checked against Keras, with its config beside it."""

import dagster as dg

from droughtwatch_assets.core.configurations import PARITY_TOLERANCE
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.defs.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.defs.failures import refusal
from droughtwatch_assets.defs.metadata import export_metadata
from droughtwatch_assets.defs.resources import ArtifactStore, TrackingResource
from droughtwatch_assets.model.artifacts import ModelArtifact, OnnxArtifact


@dg.asset(
    **PER_FEATURE_SET,
    group_name="deployment",
    kinds={"onnx"},
    description="The trained model exported to ONNX, checked against Keras on a validation batch, with the "
    "resolved training config beside it as config.yaml.",
)
def onnx_model(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    tracking: TrackingResource,
    trained_model: ModelArtifact,
    processed_tfrecords: ShardedDataset,
) -> dg.Output[OnnxArtifact]:
    import keras

    from droughtwatch_assets.model.export import (
        describe_onnx,
        embed_config,
        export_onnx,
        parity_batch,
        parity_max_abs_diff,
    )

    model = keras.saving.load_model(trained_model.keras_path, compile=False)  # exported, not trained further
    artifact = OnnxArtifact(store.new_staging_dir())
    export_onnx(model, artifact.onnx_path)
    embed_config(artifact.onnx_path, trained_model.config)  # the model file carries its own config
    batch = parity_batch(processed_tfrecords)
    if not len(batch.images):
        raise refusal(
            f"processed_tfrecords partition '{context.partition_key}' holds no records in train or val: "
            f"there is nothing to check the ONNX export against. Check the raw shards"
        )
    diff = parity_max_abs_diff(model, artifact.onnx_path, batch.images)
    if not diff <= PARITY_TOLERANCE:  # the blocking onnx_matches_keras check stops publishing
        context.log.error(f"ONNX export disagrees with Keras: max abs diff {diff:.3g} > {PARITY_TOLERANCE}")
    artifact.write_config(trained_model.config)
    artifact.write_parity(diff, len(batch.images))
    with tracking.step(context, trained_model.config.get("tracker", "none"), job_type="export") as tracker:
        tracker.log_onnx_model(artifact.onnx_path)  # joins the training run where the backend keeps one
    info = describe_onnx(artifact.onnx_path)
    context.log.info(f"ONNX model written: {info.size_bytes} bytes, Keras/ONNX max abs diff {diff:.2g}")
    return dg.Output(artifact, metadata=export_metadata(info, diff, batch))
