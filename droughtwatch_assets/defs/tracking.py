"""Tracker choice: W&B (default), MLflow through dagster-mlflow, or none."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished, mlflow_tracking

from droughtwatch_assets.tracking import TRACKERS, NullTracker, Tracker, TrackingUnavailable
from droughtwatch_assets.tracking.base import without_credentials

TRACKER_ENV = "DROUGHTWATCH_TRACKER"


def default_tracker() -> str:
    return os.environ.get(TRACKER_ENV, "wandb")


def mlflow_enabled() -> bool:
    """Whether the dagster-mlflow resource (and its end-of-run hook) is wired in."""
    return default_tracker() == "mlflow" or bool(os.environ.get("MLFLOW_TRACKING_URI"))


class UnreachableMlflow:
    """Stands in for the mlflow resource when the server does not answer; the hook's end_run is a no-op."""

    def __init__(self, error: str):
        self.error = error

    def end_run(self, *args, **kwargs) -> None:
        pass


def _health_problem(uri: str | None) -> str | None:
    if not uri or not uri.startswith(("http://", "https://")):
        return None  # a local file or sqlite store needs no server
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
        return None
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def _checked_mlflow_tracking(init_context):
    """dagster-mlflow's mlflow_tracking, after a 5-second health check instead of MLflow's minutes of retries."""
    uri = init_context.resource_config.get("mlflow_tracking_uri")
    problem = _health_problem(uri)
    if problem:
        yield UnreachableMlflow(f"MLflow tracker at {without_credentials(uri)} is unreachable ({problem})")
        return
    yield from mlflow_tracking.resource_fn(init_context)


checked_mlflow_tracking = dg.ResourceDefinition(
    resource_fn=_checked_mlflow_tracking,
    config_schema=mlflow_tracking.config_schema,
    description="dagster-mlflow's mlflow_tracking resource with a fast reachability check",
)


def build_tracking_resources() -> dict:
    if not mlflow_enabled():
        return {"mlflow": dg.ResourceDefinition.none_resource(description="MLflow is not configured")}
    return {
        "mlflow": checked_mlflow_tracking.configured(
            {
                "experiment_name": os.environ.get("DROUGHTWATCH_MLFLOW_EXPERIMENT", "droughtwatch"),
                "mlflow_tracking_uri": {"env": "MLFLOW_TRACKING_URI"}
                if os.environ.get("MLFLOW_TRACKING_URI")
                else None,
            }
        )
    }


def job_hooks() -> set:
    return {end_mlflow_on_run_finished} if mlflow_enabled() else set()


def make_tracker(
    kind: str,
    context: dg.AssetExecutionContext,
    mlflow_resource,
    data_dir: str,
    required: bool,
    job_type: str = "train",
) -> Tracker:
    """The tracker for a run; when it is unavailable, fail (required) or warn and track nothing."""
    try:
        if kind not in TRACKERS:
            raise dg.Failure(f"tracker {kind!r} is not one of {', '.join(TRACKERS)} ({TRACKER_ENV})")
        if kind == "wandb":
            from droughtwatch_assets.tracking.wandb_backend import WandbTracker

            directory = os.environ.get("WANDB_DIR") or str(Path(data_dir, "wandb"))
            return WandbTracker(os.environ.get("WANDB_PROJECT", "droughtwatch"), directory, job_type)
        if kind == "mlflow":
            resource = mlflow_resource
            if resource is None:
                raise TrackingUnavailable(
                    "tracker 'mlflow' needs MLFLOW_TRACKING_URI (or DROUGHTWATCH_TRACKER=mlflow) "
                    "set when the code location loads"
                )
            if isinstance(resource, UnreachableMlflow):
                raise TrackingUnavailable(resource.error)
            from droughtwatch_assets.tracking.mlflow_backend import MlflowTracker

            return MlflowTracker()
        return NullTracker()
    except TrackingUnavailable as exc:
        return fallback(context, exc, required)


def fallback(context: dg.AssetExecutionContext, exc: TrackingUnavailable, required: bool) -> Tracker:
    if required:
        raise dg.Failure(f"{exc}. Fix the tracker, or set tracking_required: false to train without it.") from None
    context.log.warning(f"{exc}; training without experiment tracking (tracking_required is false)")
    return NullTracker()
