"""PNG pictures for asset metadata: sample previews, training curves, confusion matrix, PR curves."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from droughtwatch_assets.core.features import NUM_CLASSES
from droughtwatch_assets.data.processing import compute_features, keep_mask
from droughtwatch_assets.model.evaluate import Evaluation, pr_curve
from droughtwatch_assets.records.tfrecord import BadRecords, iter_raw_blocks, read_processed_records


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def markdown_image(data: bytes, alt: str) -> str:
    """A PNG embedded in markdown, which the Dagster UI renders inline."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"


def _stretch(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [2, 98])
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def preview_grid(
    rgb: np.ndarray | None,
    ndvi: np.ndarray | None,
    labels: np.ndarray,
    other: np.ndarray | None = None,
    other_name: str = "",
) -> bytes:
    """One column per sample: an RGB composite and an NDVI colour map (or the first feature), titled with the label."""
    rows = [
        (name, images)
        for name, images in (("RGB (B4,B3,B2)", rgb), ("NDVI", ndvi), (other_name, other))
        if images is not None
    ]
    n = len(labels)
    figure, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(n):
            axis = axes[r][c]
            if name == "NDVI":
                axis.imshow(images[c], cmap="RdYlGn", vmin=-0.2, vmax=0.8)
            elif images[c].ndim == 3:
                axis.imshow(_stretch(images[c]))
            else:
                axis.imshow(images[c], cmap="gray")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(f"label {labels[c]}", fontsize=9)
        axes[r][0].set_ylabel(name, fontsize=9)
    return png(figure)


def training_curves(history: dict) -> bytes:
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(8, 3))
    for key, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
        axis.plot(epochs, history.get(key, []), marker="o", label="train")
        for held_out in ("holdout", "val"):  # a sweep's kept model was validated on the hold-out
            if f"{held_out}_{key}" in history:
                axis.plot(epochs, history[f"{held_out}_{key}"], marker="o", label=held_out)
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    return png(figure)


def confusion_matrix(evaluation: Evaluation) -> bytes:
    matrix = evaluation.confusion
    figure, axis = plt.subplots(figsize=(4, 3.5))
    image = axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_xticks(range(NUM_CLASSES))
    axis.set_yticks(range(NUM_CLASSES))
    axis.set_title(f"confusion matrix (accuracy {evaluation.accuracy:.1%})")
    figure.colorbar(image)
    return png(figure)


def pr_curves(probabilities: np.ndarray, labels: np.ndarray) -> bytes:
    thresholds = np.linspace(0, 0.99, 100)
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    for k in range(NUM_CLASSES):
        precision, recall = pr_curve(probabilities[:, k], labels == k, thresholds)
        axis.plot(recall, precision, label=f"class {k}")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title("precision-recall, one class vs rest")
    axis.legend(fontsize=8)
    return png(figure)


def raw_preview(shards: list, on_bad_record: str = "fail", count: int = 6) -> bytes | None:
    """RGB composites and NDVI maps of the first non-blank records of raw shards, read with the run's
    on_bad_record policy; None when no shard holds a readable non-blank record."""
    bands, labels = [], []
    for shard in shards:
        for block in iter_raw_blocks(shard, block_size=64, bad=BadRecords(on_bad_record)):
            chosen = np.flatnonzero(keep_mask(block.bands))[: count - len(labels)]
            bands.append(block.bands[chosen].copy())
            labels.extend(block.labels[chosen].tolist())
            if len(labels) == count:
                break
        if len(labels) == count:
            break
    if not labels:
        return None
    features = compute_features(np.concatenate(bands), ("B4", "B3", "B2", "NDVI"))
    return preview_grid(features[..., :3], features[..., 3], np.asarray(labels))


def processed_preview(shards: list, features: tuple[str, ...], count: int = 6) -> bytes | None:
    """The same pictures from processed records, from whichever features the set has; None without records."""
    records = read_processed_records(shards, len(features), count)
    if not len(records.labels):
        return None
    channel = {feature: records.images[..., c] for c, feature in enumerate(features)}
    rgb = np.stack([channel[b] for b in ("B4", "B3", "B2")], axis=-1) if {"B4", "B3", "B2"} <= set(channel) else None
    ndvi = channel.get("NDVI")
    if ndvi is None and {"B4", "B5"} <= set(channel):
        ndvi = (channel["B5"] - channel["B4"]) / (channel["B5"] + channel["B4"] + np.float32(1e-7))
    other = records.images[..., 0] if rgb is None and ndvi is None else None
    return preview_grid(rgb, ndvi, records.labels, other, features[0])


def leaderboard_chart(candidates: list, metric: str) -> bytes:
    """One bar per feature set with a model, and the majority-class rate as a line per bar."""
    shown = [c for c in candidates if c.status != "not trained"]
    figure, axis = plt.subplots(figsize=(1.2 * max(3, len(shown)) + 1, 3))
    positions = np.arange(len(shown))
    colours = ["tab:green" if c.status == "candidate" else "tab:gray" for c in shown]
    axis.bar(positions, [c.score(metric) for c in shown], color=colours)
    for x, c in zip(positions, shown):
        axis.hlines(
            c.majority_rate,
            x - 0.4,
            x + 0.4,
            colors="tab:red",
            linestyles="dashed",
            label="majority class" if x == 0 else None,
        )
    axis.set_xticks(positions, [c.feature_set + ("" if c.status == "candidate" else f"\n({c.status})") for c in shown])
    axis.set_ylim(0, 1)
    axis.set_ylabel(metric.replace("_", " "))
    if shown:
        axis.legend(fontsize=8, loc="lower right")
    return png(figure)
