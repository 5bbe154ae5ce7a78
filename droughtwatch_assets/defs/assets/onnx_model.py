"""onnx_model: the trained model in ONNX, checked against Keras, with its config beside it."""

import dagster as dg

from droughtwatch_assets.core.configurations import PARITY_TOLERANCE
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.defs.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.defs.failures import refusal
from droughtwatch_assets.defs.resources import ArtifactStore, TrackingResource
from droughtwatch_assets.model.artifacts import ModelArtifact, OnnxArtifact
from droughtwatch_assets.tracking.base import tracked


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

    from droughtwatch_assets.model.export import describe_onnx, embed_config, export_onnx, parity_max_abs_diff
    from droughtwatch_assets.records.tfrecord import read_processed_records

    model = keras.saving.load_model(trained_model.keras_path, compile=False)  # exported, not trained further
    artifact = OnnxArtifact(store.new_staging_dir())
    export_onnx(model, artifact.onnx_path)
    embed_config(artifact.onnx_path, trained_model.config)  # the model file carries its own config
    info = describe_onnx(artifact.onnx_path)
    # the parity batch: validation records, or training records when every val record was vetoed
    channels = len(processed_tfrecords.features)
    split = "val" if processed_tfrecords.records("val") else "train"
    batch = read_processed_records(processed_tfrecords.shards(split), channels, limit=64).images
    if not len(batch):
        raise refusal(
            f"processed_tfrecords partition '{context.partition_key}' holds no records in train or val: "
            f"there is nothing to check the ONNX export against. Check the raw shards"
        )
    diff = parity_max_abs_diff(model, artifact.onnx_path, batch)
    if not diff <= PARITY_TOLERANCE:  # the blocking onnx_matches_keras check stops publishing
        context.log.error(
            f"ONNX export disagrees with Keras on {len(batch)} {split} records: max abs diff "
            f"{diff:.3g} > {PARITY_TOLERANCE}; it will not be published"
        )
    artifact.write_config(trained_model.config)
    artifact.write_parity(diff, len(batch))
    if trained_model.config.get("tracker") == "mlflow":  # the ONNX model joins the training run
        tracker = tracking.tracker(context, "mlflow", store.base_dir, required=True)
        tracker.resume()
        with tracked(tracker):
            tracker.log_onnx_model(artifact.onnx_path)
    context.log.info(f"ONNX model written: {info.size_bytes} bytes, Keras/ONNX max abs diff {diff:.2g}")
    return dg.Output(
        artifact,
        metadata={
            "input_name": info.input_name,
            "input_shape": str(info.input_shape),
            "output_name": info.output_name,
            "opset": info.opset,
            "size_bytes": info.size_bytes,
            "max_abs_diff_vs_keras": diff,
            "parity_batch": len(batch),
            "parity_split": split,
        },
    )
