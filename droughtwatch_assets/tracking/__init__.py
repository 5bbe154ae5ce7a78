"""Experiment tracking: one small interface, with W&B and MLflow backends and a null tracker."""

from droughtwatch_assets.tracking.base import (
    TRACKERS,
    NullTracker,
    Tracker,
    TrackerName,
    TrackingUnavailable,
    epoch_metrics,
)

__all__ = ["TRACKERS", "NullTracker", "Tracker", "TrackerName", "TrackingUnavailable", "epoch_metrics"]
