"""Weights & Biases, used directly (dagster-wandb does not import with current wandb).

Without WANDB_API_KEY (or with WANDB_MODE=offline) the run is offline: it is written under
<directory>/wandb/offline-run-*/ and can be uploaded later with `wandb sync <that directory>`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from droughtwatch_assets.tracking.base import Tracker, TrackingUnavailable, epoch_metrics

DEFAULT_BASE_URL = "https://api.wandb.ai"


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(
        self,
        project: str,
        directory: str | os.PathLike,
        job_type: str = "train",
        online: bool = False,
        base_url: str = DEFAULT_BASE_URL,
    ):
        self.project, self.directory, self.job_type = project, os.fspath(directory), job_type
        self.online, self.base_url = online, base_url  # online: the deployment has a key and no offline WANDB_MODE
        self.run = None
        self.group: str | None = None  # the training run and its sweep's runs share one group

    def _init(self, name: str, config: dict, job_type: str):
        import wandb

        os.makedirs(self.directory, exist_ok=True)
        mode = "online" if self.online else "offline"
        try:
            return wandb.init(
                project=self.project,
                name=f"{name}_{uuid.uuid4().hex[:8]}",
                config=config,
                dir=self.directory,
                mode=mode,
                job_type=job_type,
                group=self.group,
                reinit="create_new",
                settings=wandb.Settings(init_timeout=60, silent=True),
            )
        except Exception as exc:  # wandb raises several error types for network and auth failures
            raise TrackingUnavailable(
                f"W&B tracker ({mode}) at {self.base_url} could not start a run in project {self.project!r}: {exc}"
            ) from None

    def start(self, run_name: str, config: dict) -> None:
        if config.get("dagster_run_id"):
            self.group = f"{run_name}-{config['dagster_run_id'][:8]}"
        self.run = self._init(run_name, config, self.job_type)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_summary(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def log_trial(self, name: str, params: dict[str, Any], history: dict[str, list], selected: bool) -> None:
        run = self._init(name, {**params, "selected": selected}, "sweep")
        epochs = len(next(iter(history.values()), []))
        for epoch in range(epochs):
            scalars, _ = epoch_metrics({key: values[epoch] for key, values in history.items()})
            run.log({"epoch": epoch + 1, **scalars}, step=epoch)
        run.summary["selected"] = selected
        run.finish()

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        scalars, arrays = epoch_metrics(logs)
        self.run.log({"epoch": epoch + 1, **scalars, **arrays}, step=epoch)

    def log_model_reference(self, model_name: str, uri: str, register: bool) -> None:
        """A model artifact that references the published copy, linked to the registry collection online."""
        import wandb

        artifact = wandb.Artifact(model_name, type="model", metadata={"uri": uri})
        artifact.add_reference(uri, checksum=False)
        self.run.log_artifact(artifact)
        if register and self.online:
            self.run.link_artifact(artifact, f"model-registry/{model_name}")

    def log_model_card(self, model_name: str, card: str) -> None:
        import wandb

        if self.run is None:
            self.run = self._init(f"{model_name}_publish", {}, self.job_type)
        artifact = wandb.Artifact(f"{model_name}-model-card", type="model-card")
        with artifact.new_file("MODEL_CARD.md") as file:
            file.write(card)
        self.run.log_artifact(artifact)

    def register(
        self, model_name: str, onnx_path: str | os.PathLike, published_uri: str, config: dict, published_version: str
    ) -> dict:
        """A publish run (W&B runs end with their step) holding a model artifact that references the published copy."""
        if self.run is None:
            self.run = self._init(f"{model_name}_publish", config, self.job_type)
        self.log_model_reference(model_name, published_uri, register=True)
        return self.metadata()

    def promote(self, registered_model: str, onnx_path: str | os.PathLike, tags: dict[str, str]) -> dict:
        import wandb

        artifact = wandb.Artifact(registered_model, type="model", metadata=tags)
        artifact.add_file(os.fspath(onnx_path), name="model.onnx")
        self.run.log_artifact(artifact, aliases=["champion"])
        return {"wandb_artifact": f"{registered_model}:champion"}

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)

    def metadata(self) -> dict[str, str]:
        if self.run is None:
            return {}
        info = {"wandb_run_id": self.run.id, "wandb_run_dir": os.path.dirname(self.run.dir)}
        if self.online and self.run.url:
            info["wandb_run_url"] = self.run.url
        else:
            info["wandb_sync"] = f"wandb sync {os.path.dirname(self.run.dir)}"
        return info
