"""Training steps/s from processed TFRecords against the same data held in memory, and the cost of the dihedral
augmentation: training steps/s, and records/s through the input pipeline alone, with augment dihedral against none.

Beside each wall-clock ratio, the ratio of CPU time spent (process time), which other work on a shared machine
sways far less: on a dedicated machine kept busy, the throughput ratio tends to it."""

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

BATCH, ROUNDS, PASSES = 64, 7, 15
FEATURES = ("B2", "B3", "B4", "B5")


def epoch_seconds(model, dataset) -> tuple[float, float]:
    """(wall, CPU) seconds of one epoch."""
    started, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, class_weight=CLASS_WEIGHTS, verbose=0, shuffle=False)
    return time.perf_counter() - started, time.process_time() - cpu


def pass_seconds(dataset) -> tuple[float, float]:
    """(wall, CPU) seconds of one pass over the input pipeline alone."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in dataset:
        pass
    return time.perf_counter() - started, time.process_time() - cpu


def alternate(inputs: dict, rounds: int, run) -> dict[str, np.ndarray]:
    """[round, (wall, CPU)] seconds of `run` on each input, in alternation so that drifts in machine speed bill
    all alike; the first round traces the graphs and is not counted."""
    seconds: dict[str, list] = {name: [] for name in inputs}
    for round_ in range(rounds + 1):
        for name, value in inputs.items():
            took = run(value)
            if round_:
                seconds[name].append(took)
    return {name: np.array(took) for name, took in seconds.items()}


def ratio_line(label: str, seconds: dict[str, np.ndarray], name: str, reference: str, target: float) -> str:
    """Throughput of `name` over `reference`: best rounds, the median of paired rounds, and of their CPU times."""
    wall, reference_wall = seconds[name][:, 0], seconds[reference][:, 0]
    best = reference_wall.min() / wall.min()
    paired = float(np.median(reference_wall / wall))
    cpu_ratio = float(np.median(seconds[reference][:, 1] / seconds[name][:, 1]))
    return (
        f"{label}: {best:.3f} (best rounds), {paired:.3f} (median of {len(wall)} paired rounds), {cpu_ratio:.3f} "
        f"(median of their CPU times)   target >= {target}"
    )


def input_pipeline(processed, records: int) -> None:
    """The input pipeline alone (read, shuffle, parse, augment)."""
    inputs = {
        augment: tfrecord_dataset(processed, len(FEATURES), BATCH, shuffle_seed=0, records=records, augment=augment)
        for augment in ("none", "dihedral")
    }
    seconds = alternate(inputs, PASSES, pass_seconds)
    for name, took in seconds.items():
        print(
            f"input pipeline, augment {name}: {records / took[:, 0].min():.0f} records/s at best, median "
            f"{records / np.median(took[:, 0]):.0f}; {np.median(took[:, 1]) / records * 1e6:.0f} us of CPU a record"
        )
    print(ratio_line("input pipeline alone, augment dihedral / none", seconds, "dihedral", "none", 0.9))


def main() -> None:
    header(
        f"training input: baseline CNN, batch {BATCH}, {ROUNDS} epochs from each input after a warm-up epoch; "
        f"input pipeline alone, {PASSES} passes of each after a warm-up pass"
    )
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
    dihedral = tfrecord_dataset(processed, len(FEATURES), BATCH, shuffle_seed=0, records=records, augment="dihedral")
    # One model per input, trained an epoch at a time.
    inputs = {"memory": in_memory, "files": from_files, "dihedral": dihedral}
    models = {name: compile_model(build_model(len(FEATURES), seed=0), 5e-4) for name in inputs}
    seconds = alternate({name: (models[name], inputs[name]) for name in inputs}, ROUNDS, lambda m: epoch_seconds(*m))
    rate = {name: steps / took[:, 0].min() for name, took in seconds.items()}
    print("epoch seconds (wall):", {k: [round(float(x), 2) for x in v[:, 0]] for k, v in seconds.items()})
    print(f"{records} records, {steps} steps per epoch")
    print(f"in memory:             {rate['memory']:.2f} steps/s ({rate['memory'] * BATCH:.0f} samples/s)")
    print(f"from processed shards: {rate['files']:.2f} steps/s ({rate['files'] * BATCH:.0f} samples/s)")
    print(f"the same, dihedral:    {rate['dihedral']:.2f} steps/s ({rate['dihedral'] * BATCH:.0f} samples/s)")
    print(ratio_line("ratio files / memory", seconds, "files", "memory", 0.95))
    print(ratio_line("training, augment dihedral / none", seconds, "dihedral", "files", 0.9))
    input_pipeline(processed, records)
    clean(root)


if __name__ == "__main__":
    main()
