"""Publishing a model: the one way every published model goes out, a configuration's (published_model) and the
champion alike.

The model, its config (with the onnx_model version it came from, so that retention keeps that version), its model
card and its drift reference (with the model's predicted class rates on val added) go to the store's registry as
one publication; retention runs on that model's publications; then the tracker lists the publication (a registered
version, or the version its `champion` alias names), tagged with the store's version (`published_version`), and logs
the card.

The store and the tracker are not one transaction. The tracker is opened before the store is written, so a tracker
that is away fails the step with nothing published; one that goes away after the store committed leaves a
publication it does not list. A retry of a configuration's publication publishes again and lists that one; a retry
of the champion finds the champion published and, when the tracker does not name it champion, lists it
(`list_published`) before it decides anything: the promotion completes instead of being skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from droughtwatch_assets.core.model_config import ModelConfig
from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.card import model_card
from droughtwatch_assets.model.drift import reference_attachments, reference_to_publish
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.storage.registry import CARD_FILE, PUBLISHED_VERSION, Attachments, Publication
from droughtwatch_assets.storage.retention import with_source_version


class NotEvaluated(ValueError):
    """The evaluation at hand judged another model file than the one to publish."""


class Registry(Protocol):
    """Where publications go: the store's model registry (the ArtifactStore resource's publish)."""

    def publish(
        self, model_name: str, onnx_path: os.PathLike, config: ModelConfig, attachments: Attachments = None
    ) -> Publication: ...


class Tracker(Protocol):
    """What publishing asks of the tracker (tracking.base.Tracker, which lies beside this package)."""

    def register(
        self, model_name: str, onnx_path: os.PathLike, published_uri: str, config: dict, published_version: str
    ) -> dict: ...

    def promote(self, registered_model: str, onnx_path: os.PathLike, tags: dict[str, str]) -> dict: ...

    def log_model_card(self, model_name: str, card: str) -> None: ...


TrackerStep = Callable[[], AbstractContextManager[Tracker]]  # opens the step's tracker; finished when it closes


@dataclass(frozen=True)
class Listing:
    """How the tracker lists a publication: a new version of `registered_model`, or, as champion, the version of
    `registered_model` its `champion` alias names, tagged with `tags`."""

    registered_model: str
    champion: bool = False
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    publication: Publication
    card: str  # MODEL_CARD.md, as published beside the model
    tracked: dict[str, str]  # the tracker's identifiers (registered model, version, alias), for asset metadata


def evaluated(onnx: OnnxArtifact, evaluation: EvaluationRecord | None, chosen_md5: str | None = None) -> None:
    """Refuse an evaluation of another model file than onnx's (or none at all); `chosen_md5`: the md5 of the model
    a decision chose (the leaderboard's), which must be that file too."""
    feature_set = onnx.config.feature_set
    actual = md5_of(onnx.onnx_path)
    if evaluation is None or evaluation.model_md5 != actual or chosen_md5 not in (None, actual):
        raise NotEvaluated(
            f"model_evaluation partition '{feature_set}' judged another model than the current onnx_model "
            f"{feature_set} (it changed after it was evaluated); materialise model_evaluation for {feature_set} again"
        )


def publish_model(
    registry: Registry,
    onnx: OnnxArtifact,
    evaluation: EvaluationRecord | None,
    published_as: str,
    listing: Listing,
    track: TrackerStep,
    retain: Callable[[], object],
    *,
    chosen_md5: str | None = None,
    config_update: dict | None = None,
) -> Published:
    """Publish onnx (judged by evaluation) as `published_as` with its config, card and attachments, apply retention
    (`retain`), then list it in the tracker that `track` opened before the store was written. `config_update`: fields
    the published config carries besides the training config's (the champion's record and history)."""
    evaluated(onnx, evaluation, chosen_md5)
    config = onnx.config
    # the training data's drift reference, with the rates prediction drift is tested against: the model's on val
    reference = reference_to_publish(onnx, evaluation.predicted_class_rates)
    card = model_card(config, evaluation, onnx.parity["max_abs_diff"], published_as, reference)
    # the onnx_model version published stays as long as the publication does (retention.py)
    source = with_source_version(config, ("onnx_model", config.feature_set), onnx.root)
    published = source.model_copy(update=config_update or {})
    with track() as tracker:
        attachments = {**reference_attachments(reference), CARD_FILE: card}
        publication = registry.publish(published_as, onnx.onnx_path, published, attachments)
        retain()
        tracked = list_publication(tracker, listing, onnx.onnx_path, publication.version, publication.model_uri, config)
        tracker.log_model_card(published_as, card)
    return Published(publication, card, tracked)


def list_published(
    model: Path, config: ModelConfig, published_as: str, listing: Listing, track: TrackerStep
) -> dict[str, str]:
    """List in the tracker a publication the store holds (`model`, its published `config`, the card beside it):
    what a retry does for a publication whose tracker step failed after the store committed."""
    card = model.parent / CARD_FILE
    with track() as tracker:
        tracked = list_publication(tracker, listing, model, config.published_version or "", str(model.parent), config)
        if card.exists():
            tracker.log_model_card(published_as, card.read_text())
    return tracked


def list_publication(
    tracker: Tracker, listing: Listing, onnx_path: os.PathLike, version: str, published_uri: str, config: ModelConfig
) -> dict[str, str]:
    if listing.champion:
        return tracker.promote(listing.registered_model, onnx_path, {**listing.tags, PUBLISHED_VERSION: version})
    config_values = config.model_dump(mode="json")
    return tracker.register(listing.registered_model, onnx_path, published_uri, config_values, version)
