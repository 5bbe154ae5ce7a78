"""MLflow through its own client: one MLflow run per Dagster run, whichever processes its steps run in."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import mlflow
import mlflow.onnx
import onnx
from mlflow.exceptions import MlflowException

from droughtwatch_assets.storage.registry import PUBLISHED_VERSION
from droughtwatch_assets.tracking.base import Tracker, TrackingUnavailable, epoch_metrics, without_credentials

ARRAY_THRESHOLD_INDEX = 50  # the 0.50 threshold, logged as a scalar beside the full arrays
CHAMPION_ALIAS = "champion"


class MlflowTracker(Tracker):
    """One MLflow run per Dagster run: the first step that tracks opens it, tagged with the Dagster run id,
    and later steps (in other processes, on other machines) find it by that tag and log to it. Promoting the
    champion is a child run under it: the champion's record (another feature set's data version, say) would
    change params the training logged, which MLflow refuses."""

    name = "mlflow"

    def __init__(self, tracking_uri: str | None, experiment: str, dagster_run_id: str, job_type: str = "train"):
        self.tracking_uri, self.experiment, self.dagster_run_id = tracking_uri, experiment, dagster_run_id
        self.job_type = job_type
        self.run_info = None
        self.child = False

    def check_reachable(self, timeout: float = 5) -> None:
        """Fail in seconds, naming the URI, instead of after MLflow's minutes of retries."""
        uri = self.tracking_uri
        if not uri or not uri.startswith(("http://", "https://")):
            return  # a local file or database store needs no server
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnavailable(
                f"MLflow tracker at {without_credentials(uri)} is unreachable ({reason})"
            ) from None

    def _open(self, run_name: str | None) -> bool:
        """Start the Dagster run's run, or resume it; whether it was there already."""
        if self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        experiment = mlflow.set_experiment(self.experiment)
        found = mlflow.MlflowClient().search_runs(
            [experiment.experiment_id], f"tags.dagster_run_id = '{self.dagster_run_id}'", max_results=1
        )
        if mlflow.active_run() is not None:
            mlflow.end_run()
        if found:
            run = mlflow.start_run(run_id=found[0].info.run_id)
        else:
            run = mlflow.start_run(run_name=run_name, tags={"dagster_run_id": self.dagster_run_id})
        self.run_info = run.info
        return bool(found)

    def start(self, run_name: str, config: dict) -> None:
        if self._open(run_name) and self.job_type == "promote":
            tags = {"droughtwatch_promotion_of": self.dagster_run_id}  # not dagster_run_id: later steps find the parent
            self.run_info = mlflow.start_run(run_name=run_name, nested=True, tags=tags).info
            self.child = True
        else:
            mlflow.set_tag("mlflow.runName", run_name)
        mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in config.items()})

    def log_params(self, params: dict[str, Any]) -> None:
        mlflow.log_params(params)

    def log_summary(self, metrics: dict[str, float]) -> None:
        mlflow.log_metrics(metrics)

    def log_trial(self, name: str, params: dict[str, Any], history: dict[str, list], selected: bool) -> None:
        # nested under the active run, so MLflow tags it with mlflow.parentRunId; no dagster_run_id tag, so
        # later steps that look up this Dagster run's run still find the parent
        tags = {"droughtwatch_sweep_of": self.dagster_run_id, "selected": str(selected).lower()}
        with mlflow.start_run(run_name=name, nested=True, tags=tags):
            mlflow.log_params(params)
            epochs = len(next(iter(history.values()), []))
            for epoch in range(epochs):
                scalars, _ = epoch_metrics({key: values[epoch] for key, values in history.items()})
                mlflow.log_metrics(scalars, step=epoch)

    def resume(self) -> None:
        self._open(None)

    def finish(self, failed: bool = False) -> None:
        for _ in range(2 if self.child else 1):  # the child run, then the Dagster run's run
            if mlflow.active_run() is not None:
                mlflow.end_run("FAILED" if failed else "FINISHED")

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        scalars, arrays = epoch_metrics(logs)
        at_half = {f"{key}_at_0.50": values[ARRAY_THRESHOLD_INDEX] for key, values in arrays.items()}
        mlflow.log_metrics({**scalars, **at_half}, step=epoch)
        # the whole precision / recall curves, one JSON document per epoch
        mlflow.log_dict(arrays, f"pr_re/epoch_{epoch + 1:03d}.json")

    def log_keras_model(self, path: str | os.PathLike) -> None:
        mlflow.log_artifact(os.fspath(path), artifact_path="keras")

    def log_model_card(self, model_name: str, card: str) -> None:
        mlflow.log_text(card, f"model_card/{model_name}/MODEL_CARD.md")

    def log_onnx_model(self, path: str | os.PathLike) -> None:
        mlflow.onnx.log_model(onnx.load(os.fspath(path)), name="onnx")

    def register(
        self, model_name: str, onnx_path: str | os.PathLike, published_uri: str, config: dict, published_version: str
    ) -> dict:
        """A registered model version, logged to the training run this step joined."""
        tags = {"published_uri": published_uri, PUBLISHED_VERSION: published_version}
        version = self._new_version(model_name, onnx_path, "registered_onnx", tags)
        return {"mlflow_registered_model": model_name, "mlflow_model_version": version}

    def promote(self, registered_model: str, onnx_path: str | os.PathLike, tags: dict[str, str]) -> dict:
        # a promotion whose alias was never set (the server went away) left its version: alias that one
        version = self._version_of(registered_model, tags[PUBLISHED_VERSION]) or self._new_version(
            registered_model, onnx_path, "champion_onnx", tags
        )
        mlflow.MlflowClient().set_registered_model_alias(registered_model, CHAMPION_ALIAS, version)
        return {
            "mlflow_registered_model": registered_model,
            "mlflow_model_version": version,
            "mlflow_alias": CHAMPION_ALIAS,
        }

    def _new_version(self, registered_model: str, onnx_path: str | os.PathLike, name: str, tags: dict) -> str:
        """A version of registered_model made with its tags in one request, so that no version lacks its
        published_version (a version tagged afterwards would, had the server gone away in between)."""
        info = mlflow.onnx.log_model(onnx.load(os.fspath(onnx_path)), name=name)
        return str(mlflow.register_model(info.model_uri, registered_model, tags=tags).version)

    def _version_of(self, registered_model: str, published_version: str) -> str | None:
        found = mlflow.MlflowClient(self.tracking_uri).search_model_versions(
            f"name = '{registered_model}' and tags.{PUBLISHED_VERSION} = '{published_version}'"
        )
        return str(max(int(v.version) for v in found)) if found else None

    def names_champion(self, registered_model: str, published_version: str) -> bool:
        try:
            version = mlflow.MlflowClient(self.tracking_uri).get_model_version_by_alias(
                registered_model, CHAMPION_ALIAS
            )
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no such model or alias
                return False
            raise
        return version.tags.get(PUBLISHED_VERSION) == published_version

    def metadata(self) -> dict[str, str]:
        if self.run_info is None:
            return {}
        uri = without_credentials(mlflow.get_tracking_uri()).rstrip("/")
        link = f"{uri}/#/experiments/{self.run_info.experiment_id}/runs/{self.run_info.run_id}"
        return {"mlflow_run_id": self.run_info.run_id, "mlflow_run_url": link}
