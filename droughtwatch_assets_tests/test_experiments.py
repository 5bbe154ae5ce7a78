"""Choosing a champion among the feature sets' candidates."""

from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.model.selection import Candidate, candidate, choose, ranked


def evaluation(accuracy: float, version: str = "v1", md5: str = "m", majority: float = 0.6) -> EvaluationRecord:
    """An evaluation whose macro-F1 is accuracy / 2 (each class's F1 is)."""
    return EvaluationRecord(md5, version, 100, accuracy, majority, [0.5] * 4, [0.5] * 4, [accuracy / 2] * 4, [])


def test_candidates_on_other_data_are_stale_and_untrained_sets_are_listed():
    rows = ranked(
        [
            candidate("rgb", None, "v2"),
            candidate("ndvi", evaluation(0.9, "v1"), "v2"),
            candidate("baseline", evaluation(0.7, "v2"), "v2"),
        ],
        "val_accuracy",
    )
    assert [(c.feature_set, c.status) for c in rows] == [
        ("baseline", "candidate"),
        ("ndvi", "stale"),
        ("rgb", "not trained"),
    ]
    assert choose(rows, "val_accuracy", 0.0, None).winner.feature_set == "baseline"  # the stale 0.9 is left out


def test_the_best_must_beat_the_majority_class():
    decision = choose([candidate("ndvi", evaluation(0.6), "v1")], "val_accuracy", 0.0, None)
    assert decision.winner is None and "does not beat always predicting the majority class" in decision.reason


def test_a_challenger_must_beat_the_champion_by_the_margin_on_the_same_data():
    current = {"feature_set": "baseline", "val_accuracy": 0.75, "macro_f1": 0.4, "data_version": "v1", "model_md5": "a"}
    challenger = [candidate("rgb", evaluation(0.77, md5="b"), "v1")]
    assert choose(challenger, "val_accuracy", 0.05, current).winner is None
    decision = choose(challenger, "val_accuracy", 0.0, current)
    assert decision.winner.feature_set == "rgb" and abs(decision.won_by - 0.02) < 1e-9
    assert choose(challenger, "val_accuracy", 0.05, {**current, "data_version": "v0"}).winner.feature_set == "rgb"
    same = [candidate("baseline", evaluation(0.75, md5="a"), "v1")]
    assert choose(same, "val_accuracy", 0.0, current).winner is None


def test_the_metric_decides():
    rows = [
        Candidate("a", "candidate", 0.8, 0.3, [], 0.6, "v1", "x"),
        Candidate("b", "candidate", 0.7, 0.5, [], 0.6, "v1", "y"),
    ]
    assert choose(rows, "val_accuracy", 0.0, None).winner.feature_set == "a"
    assert choose(rows, "macro_f1", 0.0, None).winner.feature_set == "b"
