"""The original baseline CNN, its class weights and metrics."""

from __future__ import annotations

import keras
import numpy as np

from droughtwatch_assets.core.features import IMAGE_SIZE, NUM_CLASSES

PR_THRESHOLDS: list[float] = [round(t, 2) for t in np.arange(0.0, 0.99, 0.01)]  # 0.00, 0.01, ..., 0.98


def build_model(channels: int, seed: int | None = None) -> keras.Model:
    """Input(65, 65, C) -> 5 convolutions -> Dense(50) -> softmax over the 4 classes."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, channels), name="input"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(128, 3, activation="relu"),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(50, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities"),
        ],
        name="droughtwatch_cnn",
    )


def class_metrics() -> list[keras.metrics.Metric]:
    """Per-class precision and recall at thresholds 0.00..0.98, named pr_<class> / re_<class>."""
    metrics: list[keras.metrics.Metric] = []
    for k in range(NUM_CLASSES):
        metrics.append(keras.metrics.Precision(thresholds=PR_THRESHOLDS, class_id=k, name=f"pr_{k}"))
        metrics.append(keras.metrics.Recall(thresholds=PR_THRESHOLDS, class_id=k, name=f"re_{k}"))
    return metrics


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy", *class_metrics()],
    )
    return model
