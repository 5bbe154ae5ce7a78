"""Choosing the champion: who competes, in which order, and the two bars a winner must clear (the majority class,
and the current champion by more than the margin), at and on both sides of each comparison. Scores are sums of
powers of two, so that equal means equal in floating point."""

from datetime import UTC, datetime

import pytest

from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.model.selection import (
    Candidate,
    Decision,
    candidate,
    champion_record,
    choose,
    ranked,
    with_promotion,
)

CURRENT_DATA = "d2"


def evaluated(
    name: str, accuracy: float, majority: float = 0.5, f1: float = 0.25, data: str = CURRENT_DATA
) -> Candidate:
    return Candidate(name, "candidate", accuracy, f1, [1.0, 0.5, 0.25, 0.0], majority, data, f"md5-{name}")


def champion(name: str = "baseline", accuracy: float = 0.625, f1: float = 0.25, data: str = CURRENT_DATA) -> dict:
    return {
        "feature_set": name,
        "val_accuracy": accuracy,
        "macro_f1": f1,
        "data_version": data,
        "model_md5": f"md5-{name}",
    }


def test_an_evaluation_on_the_current_data_version_competes_and_one_on_another_is_stale():
    evaluation = EvaluationRecord(
        model_md5="abc",
        data_version="d1",
        records=8,
        accuracy=0.75,
        majority_rate=0.625,
        precision=[0.5, 0.5, 0.5, 0.5],
        recall=[1.0, 0.5, 0.25, 0.0],
        f1=[0.25, 0.5, 0.75, 0.5],  # macro-F1 (0.25 + 0.5 + 0.75 + 0.5) / 4 = 0.5
        confusion_matrix=[],  # the candidate reads only the figures above
    )
    assert candidate("ndvi", evaluation, "d1") == Candidate(
        "ndvi", "candidate", 0.75, 0.5, [1.0, 0.5, 0.25, 0.0], 0.625, "d1", "abc"
    )
    assert candidate("ndvi", evaluation, "d2").status == "stale"
    assert candidate("rgb", None, "d2") == Candidate("rgb", "not trained")


def test_the_ranking_puts_competitors_best_first_then_stale_models_then_feature_sets_never_trained():
    rows = [
        Candidate("all", "not trained"),
        Candidate("rgb", "stale", 0.875),  # better than any competitor, evaluated on other data
        evaluated("ndvi", 0.625),
        Candidate("baseline", "not trained"),
        evaluated("b5", 0.75),
        evaluated("b2", 0.625),  # ties ndvi: the names decide
        Candidate("b4", "stale", 0.25),
    ]
    assert [c.feature_set for c in ranked(rows, "val_accuracy")] == [
        "b5",
        "b2",
        "ndvi",
        "rgb",
        "b4",
        "all",
        "baseline",
    ]


def test_the_ranking_follows_the_chosen_metric():
    rows = [evaluated("ndvi", 0.75, f1=0.25), evaluated("rgb", 0.625, f1=0.5)]
    assert [c.feature_set for c in ranked(rows, "val_accuracy")] == ["ndvi", "rgb"]
    assert [c.feature_set for c in ranked(rows, "macro_f1")] == ["rgb", "ndvi"]


def test_the_best_competitor_wins_when_there_is_no_champion_yet():
    decision = choose([evaluated("rgb", 0.625), evaluated("ndvi", 0.75)], "val_accuracy", 0.0, None)
    assert decision == Decision(evaluated("ndvi", 0.75), "no champion yet", None)


def test_a_stale_model_never_competes_however_good():
    stale = Candidate("rgb", "stale", 0.875, 0.75, [], 0.5, "d1", "md5-rgb")
    decision = choose([stale, evaluated("ndvi", 0.625)], "val_accuracy", 0.0, None)
    assert decision.winner.feature_set == "ndvi"
    alone = choose([stale, Candidate("all", "not trained")], "val_accuracy", 0.0, None)
    assert alone == Decision(None, "no feature set has a model evaluated on the current data version")


def test_a_model_that_only_equals_the_majority_class_rate_is_not_promoted():
    decision = choose([evaluated("rgb", 0.5, majority=0.5)], "val_accuracy", 0.0, None)
    assert decision == Decision(
        None,
        "the best model (rgb, val accuracy 0.5000) does not beat always predicting the majority class (0.5000)",
    )
    assert choose([evaluated("rgb", 0.375, majority=0.5)], "val_accuracy", 0.0, None).winner is None
    assert choose([evaluated("rgb", 0.5625, majority=0.5)], "val_accuracy", 0.0, None).winner.feature_set == "rgb"


def test_the_majority_bar_is_on_val_accuracy_whatever_the_metric():
    # best by macro-F1, but no better than always predicting the majority class
    rows = [evaluated("rgb", 0.5, majority=0.5, f1=0.75), evaluated("ndvi", 0.625, majority=0.5, f1=0.25)]
    decision = choose(rows, "macro_f1", 0.0, None)
    assert decision.winner is None and decision.reason.startswith("the best model (rgb, val accuracy 0.5000)")


@pytest.mark.parametrize(
    ("margin", "promoted"),
    [
        (0.0625, True),  # lead 0.75 - 0.625 = 0.125 > 0.0625
        (0.125, False),  # lead == margin: not more than it
        (0.25, False),
    ],
)
def test_a_challenger_must_lead_the_champion_by_more_than_the_margin(margin, promoted):
    decision = choose([evaluated("ndvi", 0.75)], "val_accuracy", margin, champion("baseline", 0.625))
    if promoted:
        assert decision == Decision(
            evaluated("ndvi", 0.75), "ndvi beats the champion (baseline) by +0.1250 val_accuracy", 0.125
        )
    else:
        assert decision == Decision(
            None,
            f"ndvi leads the champion (baseline) by +0.1250 val_accuracy, not more than the margin {margin}",
        )


def test_with_no_margin_a_challenger_that_only_ties_the_champion_leaves_it():
    decision = choose([evaluated("ndvi", 0.75)], "val_accuracy", 0.0, champion("baseline", 0.75))
    assert decision.winner is None and decision.reason.endswith("by +0.0000 val_accuracy, not more than the margin 0.0")
    beaten = choose([evaluated("ndvi", 0.75)], "val_accuracy", 0.0, champion("baseline", 0.6875))
    assert beaten.winner.feature_set == "ndvi" and beaten.won_by == 0.0625


def test_the_lead_is_measured_in_the_chosen_metric():
    current = champion("baseline", accuracy=0.5, f1=0.5)
    # 0.25 ahead in accuracy, 0.125 in macro-F1: a margin of 0.125 stops it only by macro-F1
    challenger = evaluated("ndvi", 0.75, majority=0.5, f1=0.625)
    assert choose([challenger], "val_accuracy", 0.125, current).won_by == 0.25
    assert choose([challenger], "macro_f1", 0.125, current).winner is None


def test_a_champion_chosen_on_other_data_is_replaced_without_the_margin():
    decision = choose([evaluated("ndvi", 0.5625)], "val_accuracy", 0.25, champion("baseline", 0.875, data="d1"))
    assert decision == Decision(evaluated("ndvi", 0.5625), "the champion was chosen on data version d1", None)


def test_the_champion_itself_is_not_promoted_again():
    decision = choose([evaluated("baseline", 0.75)], "val_accuracy", 0.0, champion("baseline", 0.625))
    assert decision == Decision(None, "the best model is the champion already (baseline)")


def test_the_champion_record_and_the_history_entry_carry_the_winners_figures():
    winner = evaluated("ndvi", 0.75, f1=0.375)
    decision = Decision(winner, "ndvi beats the champion (baseline) by +0.1250 val_accuracy", 0.125)
    now = datetime(2024, 5, 1, 12, 30, 15, 999, tzinfo=UTC)
    record = champion_record(decision, "macro_f1", ["B4", "B5", "NDVI"], 2.5e-6, now)
    assert record == {
        "feature_set": "ndvi",
        "features": ["B4", "B5", "NDVI"],
        "metric": "macro_f1",
        "val_accuracy": 0.75,
        "macro_f1": 0.375,
        "data_version": "d2",
        "model_md5": "md5-ndvi",
        "won_by": 0.125,
        "parity": 2.5e-6,
        "promoted_at": "2024-05-01T12:30:15+00:00",
    }
    past = [{"promoted_at": "2024-04-01T00:00:00+00:00", "feature_set": "baseline", "metric": "val_accuracy"}]
    assert with_promotion(past, record) == [
        past[0],
        {
            "promoted_at": "2024-05-01T12:30:15+00:00",
            "feature_set": "ndvi",
            "metric": "macro_f1",
            "model_md5": "md5-ndvi",
            "macro_f1": 0.375,
        },
    ]
    assert past == [{"promoted_at": "2024-04-01T00:00:00+00:00", "feature_set": "baseline", "metric": "val_accuracy"}]
