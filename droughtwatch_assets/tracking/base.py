from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import numpy as np

TrackerName = Literal["wandb", "mlflow", "none"]
TRACKERS: tuple[str, ...] = get_args(TrackerName)


def without_credentials(uri: str | None) -> str:
    """A tracker URI fit for logs and metadata: user and password removed (http://user:pw@host -> http://host)."""
    if not uri:
        return ""
    parsed = urlsplit(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urlunsplit(parsed._replace(netloc=netloc))


class TrackingUnavailable(RuntimeError):
    """The chosen tracker cannot be reached; the message names it and its URI."""


def epoch_metrics(logs: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Split Keras epoch logs into scalars (loss, accuracy, ...) and per-threshold arrays (pr_k, re_k)."""
    scalars, arrays = {}, {}
    for key, value in logs.items():
        array = np.asarray(value, dtype=float)
        if array.ndim == 0:
            scalars[key] = float(array)
        else:
            arrays[key] = array.tolist()
    return scalars, arrays


class Tracker:
    """What training and publishing report to. Backends override what they support."""

    name = "none"

    def start(self, run_name: str, config: dict) -> None:
        """Open the run for this Dagster run (or join it) and record the resolved config."""

    def resume(self) -> None:
        """Join the run an earlier step of this Dagster run opened, to log more to it."""

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def log_keras_model(self, path: str | os.PathLike) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        """Parameters known only after start (a sweep's chosen hyperparameters)."""

    def log_summary(self, metrics: dict[str, float]) -> None:
        """Final scalar metrics of the run (the kept model's val loss and accuracy after a sweep)."""

    def log_trial(self, name: str, params: dict[str, Any], history: dict[str, list], selected: bool) -> None:
        """One combination of a sweep as its own run under this one: MLflow child run, W&B run in the group."""

    def log_sweep(self, model_name: str, trials, extra_params: dict[str, Any], val_scores: dict[str, float]) -> None:
        """A sweep: each trial (model.sweep.Trial) as its own run, the chosen hyperparameters, and the kept model's
        val scores."""
        chosen = next(t for t in trials if t.selected)
        for trial in trials:
            params = {**asdict(trial.hyperparameters), **extra_params}
            self.log_trial(f"{model_name}_trial{trial.number}", params, trial.history, trial.selected)
        self.log_params({**asdict(chosen.hyperparameters), "selected_trial": chosen.number})
        self.log_summary({**val_scores, "holdout_accuracy": chosen.holdout_accuracy})

    def log_model_card(self, model_name: str, card: str) -> None:
        """The published model's MODEL_CARD.md, as an artifact of the run."""

    def log_onnx_model(self, path: str | os.PathLike) -> None:
        pass

    def promote(self, registered_model: str, onnx_path: str | os.PathLike, tags: dict[str, str]) -> dict:
        """Make the model the `champion` of registered_model: the version tagged with the store's
        `published_version` (tags), made if missing, given that alias."""
        return {}

    def register(
        self, model_name: str, onnx_path: str | os.PathLike, published_uri: str, config: dict, published_version: str
    ) -> dict:
        """Register a published model in the tracker's registry, tagged with the store's version; returns identifiers
        for asset metadata."""
        return {}

    def names_champion(self, registered_model: str, published_version: str) -> bool:
        """Whether the `champion` of registered_model is the store's publication `published_version`. A tracker that
        keeps no registry to ask says yes: there is nothing to complete."""
        return True

    def finish(self, failed: bool = False) -> None:
        """Close this step's part of the run: finished, or failed when the step failed."""

    def metadata(self) -> dict[str, str]:
        """Run identifiers for asset metadata (run id, link, local directory)."""
        return {}


@contextmanager
def tracked(tracker: Tracker) -> Iterator[Tracker]:
    """A step's use of the tracker: finished when the step's work succeeds, failed when it raises."""
    try:
        yield tracker
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish()


class NullTracker(Tracker):
    pass
