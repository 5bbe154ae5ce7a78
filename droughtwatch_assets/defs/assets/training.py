from typing import Literal

import dagster as dg
from pydantic import Field

from droughtwatch_assets.artifacts import ModelArtifact, OnnxArtifact
from droughtwatch_assets.configurations import CLASS_WEIGHTS, PARITY_TOLERANCE
from droughtwatch_assets.datasets import ShardedDataset
from droughtwatch_assets.defs.asset_defaults import PER_FEATURE_SET, k8s_pod
from droughtwatch_assets.defs.failures import refusal, refuse_configuration_mismatch
from droughtwatch_assets.defs.metadata import history_table
from droughtwatch_assets.defs.resources import ArtifactStore
from droughtwatch_assets.defs.tracking import TrackingResource, fallback
from droughtwatch_assets.tracking import TrackingUnavailable
from droughtwatch_assets.tracking.base import tracked


class TrainingConfig(dg.Config):
    model_name: str = ""  # the name the model is published under; defaults to the feature set
    learning_rate: float = 5e-4
    batch_size: int = 64
    epochs: int = 2  # 0 exports the untrained model (the original's 'dummy')
    seed: int = 0  # weight initialisation and shuffle order
    register_model: bool = False  # promote to the model registry (the baseline configuration sets it)
    tracker: Literal["deployment", "wandb", "mlflow", "none"] = Field(
        default="deployment", description="wandb, mlflow or none; deployment: DROUGHTWATCH_TRACKER's (else wandb)"
    )
    tracking_required: bool = Field(default=True, description="false: train and warn when the tracker is unreachable")


@dg.asset(
    **PER_FEATURE_SET,
    op_tags=k8s_pod(cpu="4", memory="8Gi", memory_limit="12Gi"),  # the step that needs the most memory
    group_name="training",
    kinds={"tensorflow", "keras"},
    description="The original baseline CNN trained on one feature set: categorical cross-entropy, Adam, "
    "class weights {0:1, 1:4, 2:4, 3:6}. Saved as .keras with its per-epoch history.",
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    store: ArtifactStore,
    tracking: TrackingResource,
    processed_tfrecords: ShardedDataset,
) -> dg.Output[ModelArtifact]:
    refuse_configuration_mismatch(context, config.model_name or context.partition_key)
    data = processed_tfrecords
    resolved = {
        "model_name": config.model_name or context.partition_key,
        "feature_set": context.partition_key,
        "features": list(data.features),
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "seed": config.seed,
        "register_model": config.register_model,
        "tracker": tracking.resolve(config.tracker),
        "class_weights": CLASS_WEIGHTS,
        "data_version": data.manifest.get("data_version", ""),
        "dagster_run_id": context.run.run_id,
    }
    tracker = tracking.tracker(context, config.tracker, store.base_dir, config.tracking_required)
    try:
        tracker.start(resolved["model_name"], resolved)
    except TrackingUnavailable as exc:
        tracker = fallback(context, exc, config.tracking_required)
    resolved["tracker"] = tracker.name  # what downstream steps report to
    with tracked(tracker):
        artifact, run = _fit_and_save(context, config, store, data, tracker, resolved)
    val_counts = data.class_counts("val")
    metadata = {
        "parameters": run.model.count_params(),
        "epochs": config.epochs,
        "majority_class_rate": max(val_counts) / max(1, sum(val_counts)),
        "tracker": tracker.name,
        **tracker.metadata(),
    }
    if run.history:
        from droughtwatch_assets.visuals import markdown_image, training_curves

        metadata["history"] = history_table(run.history)
        metadata["training_curves"] = dg.MetadataValue.md(markdown_image(training_curves(run.history), "curves"))
        metadata["val_accuracy"] = run.history["val_accuracy"][-1]
        metadata["val_loss"] = run.history["val_loss"][-1]
    return dg.Output(artifact, metadata=metadata)


def _fit_and_save(context, config: TrainingConfig, store: ArtifactStore, data: ShardedDataset, tracker, resolved: dict):
    from droughtwatch_assets.training import EmptySplit, train  # TensorFlow loads only when a step trains

    def on_epoch(epoch: int, logs: dict) -> None:
        context.log.info(
            f"epoch {epoch + 1}/{config.epochs}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f} "
            f"val_loss {logs['val_loss']:.4f} val_accuracy {logs['val_accuracy']:.4f}"
        )
        tracker.log_epoch(epoch, logs)

    try:
        run = train(
            data.shards("train"),
            data.shards("val"),
            len(data.features),
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            epochs=config.epochs,
            seed=config.seed,
            train_records=data.records("train"),
            val_records=data.records("val"),
            on_epoch=on_epoch,
        )
    except EmptySplit as exc:
        raise refusal(f"processed_tfrecords partition '{context.partition_key}': {exc}") from exc
    artifact = ModelArtifact(store.new_staging_dir())
    run.model.save(artifact.keras_path)
    tracker.log_keras_model(artifact.keras_path)
    artifact.write_metadata(resolved, run.history)
    return artifact, run


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

    from droughtwatch_assets.export import describe_onnx, embed_config, export_onnx, parity_max_abs_diff
    from droughtwatch_assets.records import read_processed_records

    model = keras.saving.load_model(trained_model.keras_path)
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
