"""Model artifacts as directories: what the trained-model, ONNX and predictions assets hand downstream."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import yaml

TRAINING_CONFIG = "training_config.yaml"


@dataclass(frozen=True)
class DirectoryArtifact:
    """A directory that one asset writes; `open` checks that its main file is there."""

    root: Path
    MAIN_FILE: ClassVar[str]
    ASSET: ClassVar[str]

    @classmethod
    def open(cls, root: str | os.PathLike):
        artifact = cls(Path(root))
        if not (artifact.root / cls.MAIN_FILE).exists():
            raise FileNotFoundError(f"{artifact.root / cls.MAIN_FILE} is missing; materialise {cls.ASSET} again")
        return artifact


@dataclass(frozen=True)
class ModelArtifact(DirectoryArtifact):
    """root/model.keras, root/history.json and root/training_config.yaml."""

    MAIN_FILE: ClassVar[str] = "model.keras"
    ASSET: ClassVar[str] = "trained_model"

    @property
    def keras_path(self) -> Path:
        return self.root / self.MAIN_FILE

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.root / TRAINING_CONFIG).read_text())

    def write_metadata(self, config: dict, history: dict) -> None:
        (self.root / TRAINING_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        (self.root / "history.json").write_text(json.dumps(history))


@dataclass(frozen=True)
class OnnxArtifact(DirectoryArtifact):
    """root/model.onnx and root/config.yaml: the layout published as <model name>/ in the registry."""

    MAIN_FILE: ClassVar[str] = "model.onnx"
    ASSET: ClassVar[str] = "onnx_model"

    @property
    def onnx_path(self) -> Path:
        return self.root / self.MAIN_FILE

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def parity(self) -> dict:
        """How far onnxruntime is from Keras on a validation batch: max_abs_diff, batch."""
        return json.loads((self.root / "parity.json").read_text())

    def write_parity(self, max_abs_diff: float, batch: int) -> None:
        (self.root / "parity.json").write_text(json.dumps({"max_abs_diff": max_abs_diff, "batch": batch}))


@dataclass(frozen=True)
class PredictionsArtifact(DirectoryArtifact):
    """root/predictions.parquet: ID, P_0..P_3, P_label, label."""

    MAIN_FILE: ClassVar[str] = "predictions.parquet"
    ASSET: ClassVar[str] = "predictions"

    @property
    def parquet_path(self) -> Path:
        return self.root / self.MAIN_FILE
