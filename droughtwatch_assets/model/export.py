"""Keras -> ONNX, and the check that onnxruntime agrees with Keras."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf

from droughtwatch_assets.core.features import IMAGE_SIZE
from droughtwatch_assets.core.model_config import CONFIG_METADATA_KEY, ModelConfig
from droughtwatch_assets.model.artifacts import ModelArtifact, OnnxArtifact


@dataclass(frozen=True)
class OnnxInfo:
    input_name: str
    input_shape: list[int | str]
    output_name: str
    opset: int
    size_bytes: int


def export_onnx(model: keras.Model, path: str | os.PathLike) -> OnnxInfo:
    """Export through Keras' own ONNX path (tf2onnx.from_keras fails on Keras 3 models).

    The explicit signature lets an untrained model, never called, export too.
    """
    channels = model.input_shape[-1]
    signature = [tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, channels], tf.float32, name="input")]
    model.export(os.fspath(path), format="onnx", input_signature=signature, verbose=False)
    return describe_onnx(path)


def describe_onnx(path: str | os.PathLike) -> OnnxInfo:
    graph_model = onnx.load(os.fspath(path))
    tensor = graph_model.graph.input[0]
    shape = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in tensor.type.tensor_type.shape.dim
    ]
    opset = next(o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx"))
    return OnnxInfo(tensor.name, shape, graph_model.graph.output[0].name, int(opset), Path(path).stat().st_size)


def embed_config(path: str | os.PathLike, config: ModelConfig) -> None:
    """Store the training config in the ONNX file's metadata_props: a model that names its own features."""
    graph_model = onnx.load(os.fspath(path))
    del graph_model.metadata_props[:]
    entry = graph_model.metadata_props.add()
    entry.key, entry.value = CONFIG_METADATA_KEY, config.to_yaml()
    onnx.save(graph_model, os.fspath(path))


def onnx_session(path: str | os.PathLike) -> ort.InferenceSession:
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def parity_max_abs_diff(model: keras.Model, onnx_path: str | os.PathLike, images: np.ndarray) -> float:
    """Largest |Keras - onnxruntime| over the output probabilities of a batch (0 for an empty one)."""
    if not len(images):  # Keras' predict fails on an empty batch
        return 0.0
    session = onnx_session(onnx_path)
    expected = model.predict(images, batch_size=len(images), verbose=0)
    actual = session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]
    return float(np.max(np.abs(expected - actual)))


@dataclass(frozen=True)
class ParityBatch:
    images: np.ndarray
    split: str


def parity_batch(dataset, size: int = 64) -> ParityBatch:
    """The records an export is checked on: the first `size` of val, or of train when every val record was
    vetoed. Empty when the dataset holds no records at all."""
    from droughtwatch_assets.records.tfrecord import read_processed_records

    split = "val" if dataset.records("val") else "train"
    return ParityBatch(read_processed_records(dataset.shards(split), len(dataset.features), limit=size).images, split)


class NothingToCheck(ValueError):
    """A dataset without a record to check an export against."""


@dataclass(frozen=True)
class CheckedExport:
    info: OnnxInfo
    max_abs_diff: float
    batch: ParityBatch


def export_checked(trained: ModelArtifact, target: OnnxArtifact, dataset) -> CheckedExport:
    """Export a trained model into `target` with its config embedded and beside it (and its drift reference, if it
    has one), and measure how far onnxruntime is from Keras on a batch of the dataset (the caller decides what is
    too far)."""
    batch = parity_batch(dataset)
    if not len(batch.images):
        raise NothingToCheck("holds no records in train or val: there is nothing to check the ONNX export against")
    model = keras.saving.load_model(trained.keras_path, compile=False)  # exported, not trained further
    config = trained.config
    export_onnx(model, target.onnx_path)
    embed_config(target.onnx_path, config)  # the model file carries its own config
    diff = parity_max_abs_diff(model, target.onnx_path, batch.images)
    target.write_config(config)
    target.write_parity(diff, len(batch.images))
    if trained.drift_reference_path.exists():
        shutil.copyfile(trained.drift_reference_path, target.drift_reference_path)
    return CheckedExport(describe_onnx(target.onnx_path), diff, batch)
