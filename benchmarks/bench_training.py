"""Training steps/s from processed TFRecords against the same data held in memory."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
from common import SCRATCH, clean, header  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from droughtwatch_assets.configurations import CLASS_WEIGHTS  # noqa: E402
from droughtwatch_assets.model import build_model, compile_model  # noqa: E402
from droughtwatch_assets.processing import process_shard  # noqa: E402
from droughtwatch_assets.records import read_processed  # noqa: E402
from droughtwatch_assets.sample import SampleSpec, write_sample  # noqa: E402
from droughtwatch_assets.training import tfrecord_dataset  # noqa: E402

BATCH, EPOCHS = 64, 3
FEATURES = ("B2", "B3", "B4", "B5")


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._started)


def steps_per_second(dataset, steps: int) -> float:
    model = compile_model(build_model(len(FEATURES), seed=0), 5e-4)
    timer = EpochTimer()
    model.fit(dataset, epochs=EPOCHS, class_weight=CLASS_WEIGHTS, callbacks=[timer], verbose=0, shuffle=False)
    return steps / min(timer.times[1:])  # the first epoch traces the graph


def main() -> None:
    header(f"training input: baseline CNN, batch {BATCH}, best epoch of 2 x {EPOCHS - 1} after warm-up")
    root = SCRATCH / "training"
    clean(root)
    shards = write_sample(root / "raw", SampleSpec(train_records=4096, val_records=0, records_per_shard=1024))["train"]
    processed = []
    for shard in shards:
        process_shard(shard, root / shard.name, FEATURES)
        processed.append(root / shard.name)
    data = [read_processed(p, len(FEATURES)) for p in processed]
    images = np.concatenate([d.images for d in data])
    labels = tf.one_hot(np.concatenate([d.labels for d in data]), 4)
    records = len(images)
    steps = -(-records // BATCH)
    in_memory = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(4096, seed=0).batch(BATCH).prefetch(2)
    from_files = tfrecord_dataset(processed, len(FEATURES), BATCH, shuffle_seed=0, records=records)
    # alternate the two so that drifts in machine speed bill both alike
    memory_rate = file_rate = 0.0
    for _ in range(2):
        memory_rate = max(memory_rate, steps_per_second(in_memory, steps))
        file_rate = max(file_rate, steps_per_second(from_files, steps))
    print(f"{records} records, {steps} steps per epoch")
    print(f"in memory:             {memory_rate:.2f} steps/s ({memory_rate * BATCH:.0f} samples/s)")
    print(f"from processed shards: {file_rate:.2f} steps/s ({file_rate * BATCH:.0f} samples/s)")
    print(f"ratio files / memory: {file_rate / memory_rate:.3f}   target >= 0.95")
    clean(root)


if __name__ == "__main__":
    main()
