"""Model artifacts as directories: what the trained-model and ONNX assets hand downstream."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

TRAINING_CONFIG = "training_config.yaml"


@dataclass(frozen=True)
class ModelArtifact:
    """root/model.keras, root/history.json and root/training_config.yaml."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> "ModelArtifact":
        artifact = cls(Path(root))
        if not artifact.keras_path.exists():
            raise FileNotFoundError(f"{artifact.keras_path} is missing; materialise trained_model again")
        return artifact

    @property
    def keras_path(self) -> Path:
        return self.root / "model.keras"

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.root / TRAINING_CONFIG).read_text())

    @property
    def history(self) -> dict:
        return json.loads((self.root / "history.json").read_text())

    def write_metadata(self, config: dict, history: dict) -> None:
        (self.root / TRAINING_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        (self.root / "history.json").write_text(json.dumps(history))


@dataclass(frozen=True)
class OnnxArtifact:
    """root/model.onnx and root/config.yaml: the layout published as <model name>/ in the registry bucket."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> "OnnxArtifact":
        artifact = cls(Path(root))
        if not artifact.onnx_path.exists():
            raise FileNotFoundError(f"{artifact.onnx_path} is missing; materialise onnx_model again")
        return artifact

    @property
    def onnx_path(self) -> Path:
        return self.root / "model.onnx"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass(frozen=True)
class PredictionsArtifact:
    """root/predictions.parquet: ID, P_0..P_3, P_label, label."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> "PredictionsArtifact":
        artifact = cls(Path(root))
        if not artifact.parquet_path.exists():
            raise FileNotFoundError(f"{artifact.parquet_path} is missing; materialise predictions again")
        return artifact

    @property
    def parquet_path(self) -> Path:
        return self.root / "predictions.parquet"
