"""onnxruntime against Keras predict on the baseline CNN: throughput at batch 64 and batch-1 latency."""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))
from common import SCRATCH, header  # noqa: E402

import numpy as np  # noqa: E402

from droughtwatch_assets.export import export_onnx, onnx_session  # noqa: E402
from droughtwatch_assets.model import build_model  # noqa: E402


def timed(function, repeats: int) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    header("inference: baseline CNN (4 channels), onnxruntime vs Keras predict")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model = build_model(4, seed=0)
    path = SCRATCH / "bench.onnx"
    export_onnx(model, path)
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).random((64, 65, 65, 4), dtype=np.float32)
    single = batch[:1]

    keras_64 = min(timed(lambda: model.predict(batch, batch_size=64, verbose=0), 20))
    onnx_64 = min(timed(lambda: session.run(None, {name: batch}), 50))
    keras_1 = statistics.median(timed(lambda: model.predict(single, verbose=0), 50))
    keras_call_1 = statistics.median(timed(lambda: model(single, training=False), 50))
    onnx_1 = statistics.median(timed(lambda: session.run(None, {name: single}), 200))
    print(f"batch 64: Keras predict {64 / keras_64:,.0f} images/s, onnxruntime {64 / onnx_64:,.0f} images/s "
          f"-> {keras_64 / onnx_64:.1f}x   target >= 6x")
    print(f"batch 1 latency (median): onnxruntime {onnx_1 * 1e3:.2f} ms, Keras predict {keras_1 * 1e3:.1f} ms, "
          f"Keras direct call {keras_call_1 * 1e3:.1f} ms")
    os.remove(path)


if __name__ == "__main__":
    main()
