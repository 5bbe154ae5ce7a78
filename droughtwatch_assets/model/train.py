"""Input pipeline over processed shards, and the fit loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from droughtwatch_assets.core.configurations import CLASS_WEIGHTS
from droughtwatch_assets.core.features import IMAGE_SIZE, NUM_CLASSES
from droughtwatch_assets.model.network import build_model, compile_model
from droughtwatch_assets.records.tfrecord import IMAGE_KEY, LABEL_KEY


def tfrecord_dataset(
    files: Sequence[str | os.PathLike],
    channels: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 4096,
    records: int | None = None,
    select: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 [b, 65, 65, C], one-hot labels [b, 4]) from processed shards.

    `select`, a boolean mask over the records in file order, keeps only the records it marks (a hold-out split).
    Parsing is batched in graph mode: one parse_example per batch, not per record.
    """
    schema = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialised):
        parsed = tf.io.parse_example(serialised, schema)
        images = tf.reshape(tf.io.decode_raw(parsed[IMAGE_KEY], tf.float32), [-1, IMAGE_SIZE, IMAGE_SIZE, channels])
        return images, tf.one_hot(parsed[LABEL_KEY], NUM_CLASSES)

    ds = tf.data.TFRecordDataset([os.fspath(f) for f in files], num_parallel_reads=min(4, len(files)) or None)
    if select is not None:  # parallel reads interleave deterministically, so record i is the same every time
        mask = tf.constant(select, dtype=tf.bool)
        ds = ds.enumerate().filter(lambda index, _: tf.gather(mask, index)).map(lambda _, record: record)
        records = int(select.sum())
    if records is not None:  # a known size lets Keras count steps instead of running off the end
        ds = ds.apply(tf.data.experimental.assert_cardinality(records))
    if shuffle_seed is not None:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class EmptySplit(ValueError):
    """A split that training needs holds no records."""


@dataclass
class TrainingRun:
    model: keras.Model
    history: dict[str, list] = field(default_factory=dict)  # per-epoch metric -> values (arrays for pr/re)


class EpochCallback(keras.callbacks.Callback):
    def __init__(self, on_epoch: Callable[[int, dict], None]):
        super().__init__()
        self._on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        self._on_epoch(epoch, dict(logs or {}))


def _plain(value):
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


def train(
    train_files: Sequence[str | os.PathLike],
    val_files: Sequence[str | os.PathLike],
    channels: int,
    *,
    learning_rate: float = 5e-4,
    batch_size: int = 64,
    epochs: int = 2,
    seed: int = 0,
    train_records: int,
    val_records: int,
    train_select: np.ndarray | None = None,
    val_select: np.ndarray | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainingRun:
    """Build, compile and fit the baseline CNN. epochs=0 gives the untrained ('dummy') model.

    `train_records` / `val_records` are the record counts of the files (the manifest's), so Keras counts the steps
    of each epoch instead of reading past the end; `train_select` / `val_select` keep a subset of each file
    list's records (see `tfrecord_dataset`), and then the counts are the masks' own.
    """
    if epochs > 0:
        for split, count in (("train", train_records), ("val", val_records)):
            if count == 0:
                raise EmptySplit(
                    f"the processed {split} split has no records (every record was vetoed as blank or "
                    f"skipped as bad): there is nothing to {'fit' if split == 'train' else 'validate'} "
                    f"on. Check the raw {split}/ shards, or train with epochs: 0"
                )
    model = compile_model(build_model(channels, seed=seed), learning_rate)
    history: dict[str, list] = {}

    def record(epoch: int, logs: dict) -> None:
        plain = {key: _plain(value) for key, value in logs.items()}
        for key, value in plain.items():
            history.setdefault(key, []).append(value)
        if on_epoch:
            on_epoch(epoch, plain)

    if epochs > 0:
        model.fit(
            tfrecord_dataset(
                train_files, channels, batch_size, shuffle_seed=seed, records=train_records, select=train_select
            ),
            validation_data=tfrecord_dataset(val_files, channels, batch_size, records=val_records, select=val_select),
            epochs=epochs,
            class_weight=CLASS_WEIGHTS,
            callbacks=[EpochCallback(record), *callbacks],
            shuffle=False,  # the dataset shuffles itself
            verbose=0,
        )
    return TrainingRun(model=model, history=history)


def evaluate_loss_accuracy(
    model: keras.Model,
    files: Sequence[str | os.PathLike],
    channels: int,
    records: int | None = None,
    select: np.ndarray | None = None,
    batch_size: int = 256,
) -> tuple[float, float]:
    """(loss, accuracy) of a model on the records of these files (those `select` marks, if given)."""
    dataset = tfrecord_dataset(files, channels, batch_size, records=records, select=select)
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return float(results["loss"]), float(results["accuracy"])
