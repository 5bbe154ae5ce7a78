"""Classification metrics on validation predictions: confusion matrix, per-class P/R/F1, PR curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from droughtwatch_assets.core.features import NUM_CLASSES


@dataclass
class Evaluation:
    confusion: np.ndarray  # [true, predicted]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    accuracy: float
    majority_rate: float  # accuracy of always predicting the most frequent class

    def record(
        self, model_md5: str, data_version: str, predicted_class_rates: list[float] | None = None
    ) -> EvaluationRecord:
        return EvaluationRecord(
            model_md5=model_md5,
            data_version=data_version,
            records=int(self.confusion.sum()),
            accuracy=self.accuracy,
            majority_rate=self.majority_rate,
            precision=self.precision.tolist(),
            recall=self.recall.tolist(),
            f1=self.f1.tolist(),
            confusion_matrix=self.confusion.tolist(),
            predicted_class_rates=predicted_class_rates,
        )


@dataclass(frozen=True)
class EvaluationRecord:
    """What model_evaluation hands on: one model file's figures on val (what its model card reports)."""

    model_md5: str
    data_version: str  # the raw data version the model was evaluated on
    records: int
    accuracy: float
    majority_rate: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    confusion_matrix: list[list[int]]  # [true][predicted]
    # the share of val records predicted as each class without test-time augmentation, as predictions and
    # `droughtwatch predict` score: what their class drift is measured against. None in a record made before.
    predicted_class_rates: list[float] | None = None

    @property
    def macro_f1(self) -> float:
        return sum(self.f1) / len(self.f1)


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    labels = np.asarray(labels)
    outside = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if len(outside):
        # numpy would count label -1 as class 3 (negative indexing): refuse instead
        raise ValueError(
            f"{len(outside)} label(s) outside 0..{NUM_CLASSES - 1} (first: {labels[outside[0]]} at "
            f"position {outside[0]}); evaluation needs labelled records"
        )
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(probabilities)} predictions for {len(labels)} labels")
    if not len(labels):
        raise ValueError("no records to evaluate: the validation split is empty")
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positive = np.diag(confusion).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positive / confusion.sum(axis=0))
        recall = np.nan_to_num(true_positive / confusion.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    total = max(1, len(labels))
    return Evaluation(
        confusion,
        precision,
        recall,
        f1,
        float(true_positive.sum() / total),
        float(np.bincount(labels, minlength=NUM_CLASSES).max() / total),
    )


def class_rates(predicted: np.ndarray) -> list[float]:
    """The share of predicted classes (0..3) that are each class."""
    counts = np.bincount(np.asarray(predicted, np.int64), minlength=NUM_CLASSES)
    return (counts / max(1, len(predicted))).tolist()


def pr_curve(scores: np.ndarray, positives: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of `score >= t` for each threshold t (one class against the rest)."""
    predicted = scores[None, :] >= thresholds[:, None]
    tp = (predicted & positives[None, :]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted.sum(axis=1) > 0, tp / predicted.sum(axis=1), 1.0)
        recall = tp / max(1, positives.sum())
    return precision, recall
