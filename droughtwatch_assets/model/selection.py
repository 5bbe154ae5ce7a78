"""Comparing the feature sets' models and choosing a champion.

Each feature set's candidate is its current evaluated model. Only candidates evaluated on the current raw
data version compete; the best one by the chosen metric becomes champion if it beats always predicting the
majority class and beats the current champion (on the same data version) by more than the margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from droughtwatch_assets.model.evaluate import EvaluationRecord

Metric = Literal["val_accuracy", "macro_f1"]
Status = Literal["candidate", "stale", "not trained"]


@dataclass(frozen=True)
class Candidate:
    feature_set: str
    status: Status
    val_accuracy: float | None = None
    macro_f1: float | None = None
    recall: list[float] = field(default_factory=list)
    majority_rate: float | None = None
    data_version: str = ""  # the raw data version the model was evaluated on
    model_md5: str = ""

    def score(self, metric: Metric) -> float:
        value = getattr(self, metric)
        return float("-inf") if value is None else value


def candidate(feature_set: str, evaluation: EvaluationRecord | None, data_version: str) -> Candidate:
    """A partition's candidate from its current evaluation (None: never evaluated)."""
    if evaluation is None:
        return Candidate(feature_set, "not trained")
    status: Status = "candidate" if evaluation.data_version == data_version else "stale"
    return Candidate(
        feature_set,
        status,
        evaluation.accuracy,
        evaluation.macro_f1,
        list(evaluation.recall),
        evaluation.majority_rate,
        evaluation.data_version,
        evaluation.model_md5,
    )


def ranked(candidates: list[Candidate], metric: Metric) -> list[Candidate]:
    """Competing candidates best first, then stale ones, then partitions never trained."""
    order = {"candidate": 0, "stale": 1, "not trained": 2}
    return sorted(candidates, key=lambda c: (order[c.status], -c.score(metric), c.feature_set))


@dataclass(frozen=True)
class Decision:
    winner: Candidate | None  # None: the current champion stays (or there is none)
    reason: str
    won_by: float | None = None  # the winner's lead over the current champion on the same data version


def choose(candidates: list[Candidate], metric: Metric, margin: float, current: dict | None) -> Decision:
    """`current`: the current champion's record (feature_set, metric values, data_version, model_md5) or None."""
    competing = [c for c in candidates if c.status == "candidate"]
    if not competing:
        return Decision(None, "no feature set has a model evaluated on the current data version")
    best = ranked(competing, metric)[0]
    if not best.val_accuracy > best.majority_rate:
        return Decision(
            None,
            f"the best model ({best.feature_set}, val accuracy {best.val_accuracy:.4f}) does not "
            f"beat always predicting the majority class ({best.majority_rate:.4f})",
        )
    if current is None or current.get("data_version") != best.data_version:
        return Decision(
            best,
            "no champion yet"
            if current is None
            else f"the champion was chosen on data version {current.get('data_version')}",
        )
    if current.get("model_md5") == best.model_md5:
        return Decision(None, f"the best model is the champion already ({best.feature_set})")
    lead = best.score(metric) - float(current.get(metric, float("-inf")))
    if lead <= margin:
        return Decision(
            None,
            f"{best.feature_set} leads the champion ({current.get('feature_set')}) by {lead:+.4f} "
            f"{metric}, not more than the margin {margin}",
        )
    return Decision(
        best, f"{best.feature_set} beats the champion ({current.get('feature_set')}) by {lead:+.4f} {metric}", lead
    )


HISTORY_FIELDS = ("promoted_at", "feature_set", "metric", "model_md5")


def champion_record(
    decision: Decision, metric: Metric, features: list[str], parity: float, now: datetime | None = None
) -> dict:
    """What a newly promoted champion's config records about it (the decision must have a winner)."""
    winner = decision.winner
    return {
        "feature_set": winner.feature_set,
        "features": list(features),
        "metric": metric,
        "val_accuracy": winner.val_accuracy,
        "macro_f1": winner.macro_f1,
        "data_version": winner.data_version,
        "model_md5": winner.model_md5,
        "won_by": decision.won_by,
        "parity": parity,
        "promoted_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
    }


def with_promotion(history: list[dict], record: dict) -> list[dict]:
    """The champion history with one more promotion: when, which feature set, by which metric and its value."""
    return [*history, {**{k: record[k] for k in HISTORY_FIELDS}, record["metric"]: record[record["metric"]]}]
