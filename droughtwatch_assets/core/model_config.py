"""A model's config as it travels with the model: training_config.yaml beside model.keras, config.yaml beside
model.onnx and in the registry, and the same YAML inside the ONNX file's metadata_props, so a reader holding
only the model file still knows its features. One typed record, validated whenever it is read."""

from __future__ import annotations

import os
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from droughtwatch_assets.core.configurations import Augment

CONFIG_METADATA_KEY = "droughtwatch_config"


class SweepRecord(BaseModel):
    """The sweep a model came from: the grid, the hold-out, and the trial kept."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    combinations: int
    learning_rate: list[float]
    batch_size: list[int]
    epochs: list[int]
    augment: list[Augment] = ["none"]  # configs written before augmentation have no such field
    holdout_fraction: float
    holdout_seed: int
    selected_trial: int
    holdout_accuracy: float


class ModelConfig(BaseModel):
    """What a model was trained on and how; the publication fields are set when the registry publishes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    feature_set: str
    features: list[str]
    learning_rate: float
    batch_size: int
    epochs: int
    augment: Augment = "none"  # configs written before augmentation have no such field
    seed: int
    register_model: bool
    tracker: str  # the tracker the model's run reports to: wandb, mlflow or none
    class_weights: dict[int, float]
    data_version: str
    dagster_run_id: str
    data_source: str = ""  # the raw source kind: sample (generated), folder, archive or s3
    tracker_run: dict[str, str] = {}  # the training run in the tracker (its id, link or sync command)
    sweep: SweepRecord | None = None
    # set by the registry and the champion
    model_md5: str | None = None
    published_version: str | None = None
    source_versions: dict[str, str] = {}  # asset partition -> store version a publication keeps (retention)
    champion: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, where: str) -> ModelConfig:
        try:
            return cls.model_validate(yaml.safe_load(text))
        except (ValidationError, yaml.YAMLError) as exc:
            raise ValueError(
                f"{where} is not a droughtwatch model config ({exc}); materialise or publish the model again"
            ) from exc


def embedded_config(onnx_path: str | os.PathLike) -> ModelConfig | None:
    """The config stored in an ONNX file's metadata_props, or None for a model exported elsewhere."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    text = session.get_modelmeta().custom_metadata_map.get(CONFIG_METADATA_KEY)
    return ModelConfig.from_yaml(text, f"{onnx_path}'s embedded config") if text else None
