"""Training steps/s from processed TFRecords against the same data held in memory."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
import numpy as np
import tensorflow as tf
from common import SCRATCH, clean, header

from droughtwatch_assets.core.configurations import CLASS_WEIGHTS
from droughtwatch_assets.data.processing import process_shard
from droughtwatch_assets.data.sample import SampleSpec, write_sample
from droughtwatch_assets.model.network import build_model, compile_model
from droughtwatch_assets.model.train import tfrecord_dataset
from droughtwatch_assets.records.tfrecord import read_processed

BATCH, ROUNDS = 64, 7
FEATURES = ("B2", "B3", "B4", "B5")


def epoch_seconds(model, dataset) -> float:
    started = time.perf_counter()
    model.fit(dataset, epochs=1, class_weight=CLASS_WEIGHTS, verbose=0, shuffle=False)
    return time.perf_counter() - started


def main() -> None:
    header(f"training input: baseline CNN, batch {BATCH}, {ROUNDS} epochs from each input after a warm-up epoch")
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
    in_memory = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(records, seed=0).batch(BATCH).prefetch(2)
    from_files = tfrecord_dataset(processed, len(FEATURES), BATCH, shuffle_seed=0, records=records)
    # One model per input, trained an epoch at a time in alternation, so that drifts in machine speed
    # bill both alike; the first epoch of each traces the graph and is not counted.
    models = {name: compile_model(build_model(len(FEATURES), seed=0), 5e-4) for name in ("memory", "files")}
    inputs = {"memory": in_memory, "files": from_files}
    seconds: dict[str, list[float]] = {"memory": [], "files": []}
    for round_ in range(ROUNDS + 1):
        for name in ("memory", "files"):
            took = epoch_seconds(models[name], inputs[name])
            if round_:
                seconds[name].append(took)
    memory_rate, file_rate = steps / min(seconds["memory"]), steps / min(seconds["files"])
    median_ratio = float(np.median(np.array(seconds["memory"]) / np.array(seconds["files"])))
    print("epoch seconds:", {k: [round(x, 2) for x in v] for k, v in seconds.items()})
    print(f"{records} records, {steps} steps per epoch")
    print(f"in memory:             {memory_rate:.2f} steps/s ({memory_rate * BATCH:.0f} samples/s)")
    print(f"from processed shards: {file_rate:.2f} steps/s ({file_rate * BATCH:.0f} samples/s)")
    print(
        f"ratio files / memory: {file_rate / memory_rate:.3f} (best epochs), {median_ratio:.3f} (median of the "
        f"{ROUNDS} paired epochs)   target >= 0.95"
    )
    clean(root)


if __name__ == "__main__":
    main()
