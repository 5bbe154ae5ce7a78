"""Input pipeline over processed shards, and the fit loop."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from droughtwatch_assets.core.configurations import CLASS_WEIGHTS, Augment, Hyperparameters
from droughtwatch_assets.core.features import IMAGE_SIZE, NUM_CLASSES
from droughtwatch_assets.model.augment import dihedral, random_views
from droughtwatch_assets.model.network import build_model, compile_model
from droughtwatch_assets.records.tfrecord import FILENAME_KEY, IMAGE_KEY, LABEL_KEY, ProcessedLayout

# A map entry's key field (tag 1, length 8) and the key: how a `filename` entry of a processed record starts
FILENAME_ENTRY_KEY = np.frombuffer(b"\x0a\x08" + FILENAME_KEY.encode(), np.uint8).astype(np.int32)


@tf.function(jit_compile=True)
def _images_in(raw: tf.Tensor, image_at: int, channels: int) -> tf.Tensor:
    """The float32 [b, 65, 65, C] images whose little-endian bytes start at `image_at` of each row of raw [b, n]."""
    image_bytes = IMAGE_SIZE * IMAGE_SIZE * channels * 4
    pixels = tf.reshape(raw[:, image_at : image_at + image_bytes], [-1, IMAGE_SIZE, IMAGE_SIZE, channels, 4])
    return tf.bitcast(pixels, tf.float32)


@tf.function(jit_compile=True)
def _views_in(raw: tf.Tensor, image_at: int, channels: int, views: tf.Tensor) -> tf.Tensor:
    """_images_in with image i shown as view views[i]: one XLA loop reads the bytes and moves the pixels."""
    return dihedral(_images_in(raw, image_at, channels), views)


class ProcessedParser:
    """parser(serialised [b], views=None) -> (float32 [b, 65, 65, C], one-hot labels [b, 4]) for a batch of processed
    records, image i shown as its view views[i] (augment.dihedral) when views are given.

    Records laid out as write_processed writes them (records.tfrecord.ProcessedLayout) are cut from their bytes:
    one copy out of the record and one XLA copy into the images, the view fused into that copy, so that augmenting
    adds no pass over the data. A batch holding any other record goes through parse_example.
    """

    def __init__(self, channels: int):
        self.channels, self.layout = channels, ProcessedLayout.of(channels)
        head = np.frombuffer(self.layout.head, np.uint8)
        # the bytes every record shares: all but the length varint (1..3), the image and the label
        shared = np.ones(len(head), bool)
        image = slice(self.layout.image_at, self.layout.image_at + self.layout.image_bytes)
        shared[1:4] = shared[image] = shared[self.layout.label_at] = False
        self._shared_at, self._shared_bytes = np.flatnonzero(shared), head[shared]
        self._schema = {
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        }

    def head_bytes(self, serialised: tf.Tensor) -> tf.Tensor:
        """uint8 [b, n]: each record's bytes up to its label, zero-padded when shorter."""
        return tf.io.decode_raw(serialised, tf.uint8, fixed_length=len(self.layout.head))

    def laid_out(self, serialised: tf.Tensor) -> tf.Tensor:
        """Whether every record of the batch has the layout (see _laid_out)."""
        return self._laid_out(serialised, self.head_bytes(serialised))

    def _laid_out(self, serialised: tf.Tensor, head_bytes: tf.Tensor) -> tf.Tensor:
        """Whether every record of the batch has the layout: its shared bytes, a 3-byte length that is the record's,
        a 1-byte label, and after the label nothing or one `filename` entry that ends the record. Anything after
        the label but that could hold a second label, which parse_example would read instead of the first."""
        if sys.byteorder != "little":  # the images are little-endian floats, and bitcast takes the machine's order
            return tf.constant(False)
        shared = tf.reduce_all(tf.gather(head_bytes, self._shared_at, axis=1) == self._shared_bytes)
        varints = tf.bitwise.bitwise_and(tf.gather(head_bytes, [1, 2, 3, self.layout.label_at], axis=1), 0x80)
        varints_ok = tf.reduce_all(varints == tf.constant([0x80, 0x80, 0, 0], tf.uint8))
        size = tf.strings.length(serialised)
        length = tf.cast(head_bytes[:, 1:4], tf.int32)
        whole = (length[:, 0] & 0x7F) + (length[:, 1] & 0x7F) * 128 + length[:, 2] * 16384 == size - 4
        tail = tf.cast(
            tf.io.decode_raw(
                tf.strings.substr(serialised, tf.minimum(size, len(self.layout.head)), tf.fill(tf.shape(size), 13)),
                tf.uint8,
                fixed_length=13,
            ),
            tf.int32,
        )
        two_bytes = tail[:, 1] >= 0x80  # the entry's length: one varint byte, or two
        entry = tf.where(two_bytes, (tail[:, 1] & 0x7F) + tail[:, 2] * 128, tail[:, 1])
        entry_bytes = 2 + tf.cast(two_bytes, tf.int32) + entry
        key = tf.where(two_bytes[:, None], tail[:, 3:13], tail[:, 2:12]) == FILENAME_ENTRY_KEY
        filename_entry = (tail[:, 0] == 0x0A) & (tail[:, 2] < 0x80) & tf.reduce_all(key, axis=1)
        ends = (size == len(self.layout.head)) | (filename_entry & (len(self.layout.head) + entry_bytes == size))
        return shared & varints_ok & tf.reduce_all(whole & ends)

    def __call__(self, serialised: tf.Tensor, views: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        head_bytes = self.head_bytes(serialised)
        images, labels = tf.cond(
            self._laid_out(serialised, head_bytes),
            lambda: self._by_layout(head_bytes, views),
            lambda: self._by_example(serialised, views),
        )
        return images, tf.one_hot(labels, NUM_CLASSES)

    def _by_layout(self, head_bytes, views):
        at, channels = self.layout.image_at, self.channels
        images = _images_in(head_bytes, at, channels) if views is None else _views_in(head_bytes, at, channels, views)
        return images, tf.cast(head_bytes[:, self.layout.label_at], tf.int64)

    def _by_example(self, serialised, views):
        parsed = tf.io.parse_example(serialised, self._schema)
        images = tf.io.decode_raw(parsed[IMAGE_KEY], tf.float32)
        images = tf.reshape(images, [-1, IMAGE_SIZE, IMAGE_SIZE, self.channels])
        return images if views is None else dihedral(images, views), parsed[LABEL_KEY]


def tfrecord_dataset(
    files: Sequence[str | os.PathLike],
    channels: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 4096,
    records: int | None = None,
    select: np.ndarray | None = None,
    augment: Augment = "none",
) -> tf.data.Dataset:
    """Batches of (float32 [b, 65, 65, C], one-hot labels [b, 4]) from processed shards.

    `select`, a boolean mask over the records in file order, keeps only the records it marks (a hold-out split).
    Parsing is batched in graph mode (ProcessedParser): one parse per batch, not per record.
    With augment="dihedral" each image is a random flip or quarter turn of itself, drawn from the shuffle seed
    (augment.random_views): augmentation is for the training side, which shuffles.
    """
    if augment != "none" and shuffle_seed is None:
        raise ValueError(f"augment {augment!r} draws from the shuffle seed: give shuffle_seed")
    parse = ProcessedParser(channels)
    ds = tf.data.TFRecordDataset([os.fspath(f) for f in files], num_parallel_reads=min(4, len(files)) or None)
    if select is not None:  # parallel reads interleave deterministically, so record i is the same every time
        mask = tf.constant(select, dtype=tf.bool)
        ds = ds.enumerate().filter(lambda index, _: tf.gather(mask, index)).map(lambda _, record: record)
        records = int(select.sum())
    if records is not None:  # a known size lets Keras count steps instead of running off the end
        ds = ds.apply(tf.data.experimental.assert_cardinality(records))
    if shuffle_seed is not None:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment == "dihedral":
        ds = random_views(ds, shuffle_seed, parse)
    else:
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class EmptySplit(ValueError):
    """A split that training needs holds no records."""


@dataclass
class TrainingRun:
    model: keras.Model
    history: dict[str, list] = field(default_factory=dict)  # per-epoch metric -> values (arrays for pr/re)
    class_weights: dict[int, float] = field(default_factory=dict)  # what fit weighed each true class by


class EpochCallback(keras.callbacks.Callback):
    def __init__(self, on_epoch: Callable[[int, dict], None]):
        super().__init__()
        self._on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        self._on_epoch(epoch, dict(logs or {}))


def _plain(value):
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


@dataclass(frozen=True)
class SplitInput:
    """The records one side of training reads: processed shards, their record count (the manifest's, so Keras
    counts the steps of an epoch instead of reading past the end), and optionally a mask keeping a subset."""

    files: Sequence[str | os.PathLike]
    records: int
    select: np.ndarray | None = None

    def dataset(
        self, channels: int, batch_size: int, shuffle_seed: int | None = None, augment: Augment = "none"
    ) -> tf.data.Dataset:
        return tfrecord_dataset(
            self.files,
            channels,
            batch_size,
            shuffle_seed=shuffle_seed,
            records=self.records,
            select=self.select,
            augment=augment,
        )

    @property
    def size(self) -> int:
        return self.records if self.select is None else int(self.select.sum())


def train(
    train_split: SplitInput,
    val_split: SplitInput,
    channels: int,
    hyperparameters: Hyperparameters,
    *,
    seed: int = 0,
    on_epoch: Callable[[int, dict], None] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainingRun:
    """Build, compile and fit the baseline CNN with the class weights, which the run records (what a model's config
    reports). epochs=0 gives the untrained ('dummy') model.

    Only the train side is augmented (hyperparameters.augment), with views drawn from `seed`."""
    if hyperparameters.epochs > 0:
        for split, side in (("train", train_split), ("val", val_split)):
            if side.size == 0:
                raise EmptySplit(
                    f"the processed {split} split has no records (every record was vetoed as blank or "
                    f"skipped as bad): there is nothing to {'fit' if split == 'train' else 'validate'} "
                    f"on. Check the raw {split}/ shards, or train with epochs: 0"
                )
    model = compile_model(build_model(channels, seed=seed), hyperparameters.learning_rate)
    history: dict[str, list] = {}
    class_weights = dict(CLASS_WEIGHTS)

    def record(epoch: int, logs: dict) -> None:
        plain = {key: _plain(value) for key, value in logs.items()}
        for key, value in plain.items():
            history.setdefault(key, []).append(value)
        if on_epoch:
            on_epoch(epoch, plain)

    if hyperparameters.epochs > 0:
        batch = hyperparameters.batch_size
        model.fit(
            train_split.dataset(channels, batch, shuffle_seed=seed, augment=hyperparameters.augment),
            validation_data=val_split.dataset(channels, batch),  # never augmented
            epochs=hyperparameters.epochs,
            class_weight=class_weights,
            callbacks=[EpochCallback(record), *callbacks],
            shuffle=False,  # the dataset shuffles itself
            verbose=0,
        )
    return TrainingRun(model=model, history=history, class_weights=class_weights)


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
