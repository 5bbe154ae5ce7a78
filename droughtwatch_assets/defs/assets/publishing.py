from typing import Any

import dagster as dg

from droughtwatch_assets.artifacts import OnnxArtifact
from droughtwatch_assets.defs.partitions import feature_set_partitions
from droughtwatch_assets.defs.resources import ArtifactStore, STORAGE_RETRY
from droughtwatch_assets.defs.tracking import make_tracker


@dg.asset(
    partitions_def=feature_set_partitions,
    group_name="deployment",
    kinds={"s3", "onnx"},
    code_version="1",
    retry_policy=STORAGE_RETRY,
    io_manager_key="value_io_manager",
    description="The ONNX model and its config.yaml published as <model name>/model.onnx and <model name>/config.yaml "
                "in the registry (s3://<registry bucket>/ in S3 mode), for configurations with register_model set "
                "(the baseline). Other configurations are not published.",
)
def published_model(context: dg.AssetExecutionContext, store: ArtifactStore, mlflow: dg.ResourceParam[Any],
                    onnx_model: OnnxArtifact) -> dg.Output[dict]:
    config = onnx_model.config
    name = config["model_name"]
    if not config.get("register_model"):
        context.log.info(f"model {name!r} is not a registered configuration; nothing published")
        return dg.Output({"model_name": name, "published": False, "uris": []},
                         metadata={"model_name": name, "published": False})
    uris = store.publish({"model.onnx": onnx_model.onnx_path, "config.yaml": onnx_model.config_path}, name)
    context.log.info(f"published {name}: {', '.join(uris)}")
    registry = register(context, store, mlflow, onnx_model, name, uris[0])
    return dg.Output({"model_name": name, "published": True, "uris": uris, **registry},
                     metadata={"model_name": name, "published": True, "model_uri": uris[0], "config_uri": uris[1],
                               **registry})


def register(context: dg.AssetExecutionContext, store: ArtifactStore, mlflow, onnx_model: OnnxArtifact, name: str,
             uri: str) -> dict:
    """Promote the published model in the run's tracker: an MLflow model version, or a W&B model artifact."""
    kind = onnx_model.config.get("tracker", "none")
    tracker = make_tracker(kind, context, mlflow, store.base_dir, required=True, job_type="publish")
    if kind == "wandb":
        tracker.start(f"{name}_publish", onnx_model.config)
        tracker.log_model_reference(name, uri, register=True)
        tracker.finish()
        return tracker.metadata()
    return tracker.register(name, onnx_model.onnx_path, uri)
