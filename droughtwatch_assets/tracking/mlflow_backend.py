"""MLflow, on the run that dagster-mlflow's `mlflow_tracking` resource made active."""

from __future__ import annotations

import json
import os
from typing import Any

import mlflow
import mlflow.onnx
import onnx

from droughtwatch_assets.tracking.base import Tracker, epoch_metrics, without_credentials

ARRAY_THRESHOLD_INDEX = 50  # the 0.50 threshold, logged as a scalar beside the full arrays


class MlflowTracker(Tracker):
    name = "mlflow"

    """Logs to the active MLflow run (dagster-mlflow's resource starts it, one per Dagster run)."""

    def start(self, run_name: str, config: dict) -> None:
        mlflow.set_tag("mlflow.runName", run_name)
        mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in config.items()})

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        scalars, arrays = epoch_metrics(logs)
        at_half = {f"{key}_at_0.50": values[ARRAY_THRESHOLD_INDEX] for key, values in arrays.items()}
        mlflow.log_metrics({**scalars, **at_half}, step=epoch)
        # the whole precision / recall curves, one JSON document per epoch
        mlflow.log_dict(arrays, f"pr_re/epoch_{epoch + 1:03d}.json")

    def log_keras_model(self, path: str | os.PathLike) -> None:
        mlflow.log_artifact(os.fspath(path), artifact_path="keras")

    def log_onnx_model(self, path: str | os.PathLike) -> None:
        mlflow.onnx.log_model(onnx.load(os.fspath(path)), name="onnx")

    def register(self, model_name: str, onnx_path: str | os.PathLike, published_uri: str) -> dict:
        info = mlflow.onnx.log_model(
            onnx.load(os.fspath(onnx_path)), name="registered_onnx", registered_model_name=model_name
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        client.set_model_version_tag(model_name, version, "published_uri", published_uri)
        return {"mlflow_registered_model": model_name, "mlflow_model_version": version}

    def metadata(self) -> dict[str, str]:
        run = mlflow.active_run()
        if run is None:
            return {}
        uri = without_credentials(mlflow.get_tracking_uri()).rstrip("/")
        link = f"{uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        return {"mlflow_run_id": run.info.run_id, "mlflow_run_url": link}
