"""Model artifacts as directories: what the trained-model, ONNX and predictions assets hand downstream."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from droughtwatch_assets.core.model_config import ModelConfig

TRAINING_CONFIG = "training_config.yaml"
# The training data's distribution (drift.py): made with the trained model, exported and published beside it with
# the model's predicted class rates on val added.
DRIFT_REFERENCE = "drift_reference.json"


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
    """root/model.keras, root/history.json, root/training_config.yaml and root/drift_reference.json."""

    MAIN_FILE: ClassVar[str] = "model.keras"
    ASSET: ClassVar[str] = "trained_model"

    @property
    def keras_path(self) -> Path:
        return self.root / self.MAIN_FILE

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_yaml((self.root / TRAINING_CONFIG).read_text(), str(self.root / TRAINING_CONFIG))

    @property
    def drift_reference_path(self) -> Path:
        return self.root / DRIFT_REFERENCE

    def write_metadata(self, config: ModelConfig, history: dict) -> None:
        (self.root / TRAINING_CONFIG).write_text(config.to_yaml())
        (self.root / "history.json").write_text(json.dumps(history))


@dataclass(frozen=True)
class OnnxArtifact(DirectoryArtifact):
    """root/model.onnx and root/config.yaml: the layout published as <model name>/ in the registry; with
    root/drift_reference.json, published beside them, for a model trained since drift references exist."""

    MAIN_FILE: ClassVar[str] = "model.onnx"
    ASSET: ClassVar[str] = "onnx_model"

    @property
    def onnx_path(self) -> Path:
        return self.root / self.MAIN_FILE

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_yaml(self.config_path.read_text(), str(self.config_path))

    def write_config(self, config: ModelConfig) -> None:
        self.config_path.write_text(config.to_yaml())

    @property
    def drift_reference_path(self) -> Path:
        return self.root / DRIFT_REFERENCE

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


A = TypeVar("A", bound=DirectoryArtifact)


class ArtifactsByPartition(Mapping[str, A]):
    """Every partition's artifact of one asset, each opened only when read: a reader that needs one of them
    fetches one. A subclass names the artifact type; the IO manager fills it for an input over many partitions."""

    ARTIFACT: ClassVar[type[DirectoryArtifact]]

    def __init__(self, locate: Callable[[str], Path], partitions: Sequence[str]):
        self._locate, self._partitions = locate, tuple(partitions)

    def __getitem__(self, partition: str) -> A:
        if partition not in self._partitions:
            raise KeyError(partition)
        return self.ARTIFACT.open(self._locate(partition))

    def __iter__(self) -> Iterator[str]:
        return iter(self._partitions)

    def __len__(self) -> int:
        return len(self._partitions)


class OnnxModels(ArtifactsByPartition[OnnxArtifact]):
    """Every feature set's onnx_model (the champion step opens the winner's only)."""

    ARTIFACT: ClassVar[type[DirectoryArtifact]] = OnnxArtifact
