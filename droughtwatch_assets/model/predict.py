"""Batch inference with an ONNX model on raw shards, through the training-time processing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

from droughtwatch_assets.core.features import IMAGE_SIZE, NUM_CLASSES
from droughtwatch_assets.data.datasets import SHARD_GLOB
from droughtwatch_assets.data.processing import compute_features, keep_mask
from droughtwatch_assets.model.views import average_over_views
from droughtwatch_assets.records.tfrecord import NO_LABEL, BadRecordPolicy, BadRecords, iter_raw_blocks

COLUMNS = ["ID", *(f"P_{k}" for k in range(NUM_CLASSES)), "P_label", "label"]


class ModelMismatch(ValueError):
    """The model's input does not fit the features it is given."""


@dataclass
class Predictions:
    table: pa.Table
    records: int  # raw records read
    vetoed: int
    skipped: list[dict]  # bad records dropped under on_bad_record=skip: file, record, problem

    def class_distribution(self) -> list[int]:
        return np.bincount(self.table.column("P_label").to_numpy(), minlength=NUM_CLASSES).tolist()


def input_shards(path: str | os.PathLike) -> list[Path]:
    """A shard file, or every part-* file under a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        shards = sorted(p for p in path.rglob(SHARD_GLOB) if p.is_file())
        if shards:
            return shards
        raise FileNotFoundError(f"{path}: no {SHARD_GLOB} shard files in this folder or below")
    raise FileNotFoundError(f"{path}: no such file or folder")


def check_model_input(session: ort.InferenceSession, features: tuple[str, ...], model_name: str) -> str:
    model_input = session.get_inputs()[0]
    shape = model_input.shape
    if len(shape) != 4 or shape[1:3] != [IMAGE_SIZE, IMAGE_SIZE]:
        raise ModelMismatch(f"{model_name}: input {model_input.name} has shape {shape}; expected [N, 65, 65, C]")
    if isinstance(shape[3], int) and shape[3] != len(features):
        raise ModelMismatch(
            f"{model_name}: input {model_input.name} takes {shape[3]} channels, but "
            f"{len(features)} features were given ({','.join(features)}); pass the features the "
            f"model was trained on, in order"
        )
    return model_input.name


def predict_shards(
    model_path: str | os.PathLike,
    features: tuple[str, ...],
    shards: list[Path],
    block_size: int = 256,
    on_bad_record: BadRecordPolicy = "fail",
) -> Predictions:
    session = ort.InferenceSession(os.fspath(model_path), providers=["CPUExecutionProvider"])
    input_name = check_model_input(session, features, os.fspath(model_path))
    ids: list[str] = []
    probabilities: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    records = vetoed = 0
    out = np.empty((block_size, IMAGE_SIZE, IMAGE_SIZE, len(features)), dtype=np.float32)
    bad = BadRecords(on_bad_record)
    for shard in shards:
        for block in iter_raw_blocks(shard, block_size, require_label=False, bad=bad):
            keep = keep_mask(block.bands)
            records += len(block)
            vetoed += int((~keep).sum())
            if not keep.any():
                continue
            images = compute_features(block.bands[keep], features, out[: int(keep.sum())])
            probabilities.append(session.run(None, {input_name: images})[0])
            labels.append(block.labels[keep].copy())
            ids += [block.ids[row] or f"{shard.name}:{block.indices[row]}" for row in np.flatnonzero(keep)]
    p = np.concatenate(probabilities) if probabilities else np.empty((0, NUM_CLASSES), np.float32)
    label = np.concatenate(labels) if labels else np.empty(0, np.int64)
    table = pa.table(
        {
            "ID": pa.array(ids, pa.string()),
            **{f"P_{k}": pa.array(p[:, k], pa.float32()) for k in range(NUM_CLASSES)},
            "P_label": pa.array(p.argmax(axis=1), pa.int64()),
            "label": pa.array(label, pa.int64(), mask=label == NO_LABEL),
        }
    )
    return Predictions(table, records + len(bad.errors), vetoed, bad.as_rows())


def write_parquet(predictions: Predictions, path: str | os.PathLike) -> None:
    pq.write_table(predictions.table, os.fspath(path))


@dataclass(frozen=True)
class ProcessedScores:
    probabilities: np.ndarray  # [records, classes], averaged over the 8 views with tta
    labels: np.ndarray
    plain_classes: np.ndarray  # each record's predicted class without tta: what predict_shards would say


def predict_processed(
    model_path: str | os.PathLike, shards: list[Path], channels: int, tta: bool = False
) -> ProcessedScores:
    """The probabilities of an ONNX model over processed shards, one shard in memory at a time, with the labels.

    `tta` (test-time augmentation): each image's probabilities are the mean over its 8 dihedral views; the plain
    predicted classes come from the same pass (view 0 is the image itself).
    """
    from droughtwatch_assets.records.tfrecord import read_processed

    session = ort.InferenceSession(os.fspath(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: images})[0]

    probabilities, labels, classes = [], [], []
    for shard in shards:
        records = read_processed(shard, channels)
        for start in range(0, len(records.labels), 256):
            images = records.images[start : start + 256]
            plain = predict(images)
            probabilities.append(average_over_views(predict, images, plain) if tta else plain)
            classes.append(plain.argmax(axis=1))
        labels.append(records.labels)
    if not probabilities:
        return ProcessedScores(np.empty((0, NUM_CLASSES), np.float32), np.empty(0, np.int64), np.empty(0, np.int64))
    return ProcessedScores(np.concatenate(probabilities), np.concatenate(labels), np.concatenate(classes))
