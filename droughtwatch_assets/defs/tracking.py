"""The experiment tracker as a resource: W&B (offline without a key), MLflow, or none.

Only the steps that track (training, export, publishing, promotion) require it. MLflow is used through its
own client rather than dagster-mlflow's `mlflow_tracking` resource: that legacy resource needs its end-of-run
hook on every op of a job, so every step (raw data, processing, ...) opened an MLflow run, and the hook ends the run
only when the job's topologically last op succeeds, which a partial selection or a skipped check never runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg

from droughtwatch_assets.tracking import NullTracker, Tracker, TrackingUnavailable

TrackerName = Literal["wandb", "mlflow", "none"]


class TrackingResource(dg.ConfigurableResource):
    """Where runs report. `default_tracker` is the deployment's choice; a run may pick another."""

    default_tracker: TrackerName = "wandb"
    mlflow_tracking_uri: str | None = None  # None: MLflow's own default (./mlruns)
    mlflow_experiment: str = "droughtwatch"
    wandb_project: str = "droughtwatch"
    wandb_dir: str = ""  # empty: <data dir>/wandb

    def resolve(self, choice: str) -> str:
        return self.default_tracker if choice == "deployment" else choice

    def tracker(
        self, context: dg.AssetExecutionContext, choice: str, data_dir: str, required: bool, job_type: str = "train"
    ) -> Tracker:
        """The tracker a step reports to; when it cannot be reached: fail (required) or warn and track nothing."""
        kind = self.resolve(choice)
        try:
            if kind == "wandb":
                from droughtwatch_assets.tracking.wandb_backend import WandbTracker

                return WandbTracker(self.wandb_project, self.wandb_dir or str(Path(data_dir, "wandb")), job_type)
            if kind == "mlflow":
                from droughtwatch_assets.tracking.mlflow_backend import MlflowTracker

                tracker = MlflowTracker(self.mlflow_tracking_uri, self.mlflow_experiment, context.run.run_id)
                tracker.check_reachable()
                return tracker
            return NullTracker()
        except TrackingUnavailable as exc:
            return fallback(context, exc, required)


def fallback(context: dg.AssetExecutionContext, exc: TrackingUnavailable, required: bool) -> Tracker:
    if required:
        raise dg.Failure(f"{exc}. Fix the tracker, or set tracking_required: false to train without it.") from None
    context.log.warning(f"{exc}; training without experiment tracking (tracking_required is false)")
    return NullTracker()
