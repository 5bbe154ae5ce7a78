"""onnxruntime against Keras predict on the baseline CNN: throughput at batch 64 and batch-1 latency."""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
import keras
import numpy as np
import onnxruntime as ort
from common import SCRATCH, header

from droughtwatch_assets.model.export import export_onnx, onnx_session
from droughtwatch_assets.model.network import build_model


def timed(function, repeats: int) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def multiply_accumulates(model) -> int:
    """Multiply-adds per image of the convolutions and dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            height, width, filters = layer.output.shape[1:]
            total += height * width * filters * int(np.prod(layer.kernel.shape[:3]))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def main() -> None:
    header("inference: baseline CNN (4 channels), onnxruntime vs Keras predict")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model = build_model(4, seed=0)
    path = SCRATCH / "bench.onnx"
    export_onnx(model, path)
    session = onnx_session(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    one_thread = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).random((64, 65, 65, 4), dtype=np.float32)
    single = batch[:1]

    keras_64 = min(timed(lambda: model.predict(batch, batch_size=64, verbose=0), 20))
    keras_call_64 = min(timed(lambda: model(batch, training=False), 20))
    onnx_64 = min(timed(lambda: session.run(None, {name: batch}), 50))
    onnx_64_one_thread = min(timed(lambda: one_thread.run(None, {name: batch}), 20))
    keras_1 = statistics.median(timed(lambda: model.predict(single, verbose=0), 50))
    keras_call_1 = statistics.median(timed(lambda: model(single, training=False), 50))
    onnx_1 = statistics.median(timed(lambda: session.run(None, {name: single}), 200))
    print(
        f"batch 64: Keras predict {64 / keras_64:,.0f} images/s, onnxruntime {64 / onnx_64:,.0f} images/s "
        f"-> {keras_64 / onnx_64:.1f}x   target >= 6x"
    )
    macs = multiply_accumulates(model)
    print(
        f"batch 64: Keras direct call (no predict loop) {64 / keras_call_64:,.0f} images/s; the CNN is "
        f"{macs / 1e6:.1f} M multiply-adds per image, so onnxruntime runs {64 * macs / onnx_64 / 1e9:.0f} GMAC/s "
        f"on {os.cpu_count()} cores, and {64 * macs / onnx_64_one_thread / 1e9:.0f} GMAC/s on one thread"
    )
    print(
        f"batch 1 latency (median): onnxruntime {onnx_1 * 1e3:.2f} ms, Keras predict {keras_1 * 1e3:.1f} ms, "
        f"Keras direct call {keras_call_1 * 1e3:.1f} ms"
    )
    os.remove(path)


if __name__ == "__main__":
    main()
