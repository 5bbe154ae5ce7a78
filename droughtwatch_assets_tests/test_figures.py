"""The evaluation figures (model.evaluate) against a confusion matrix worked out by hand."""

import numpy as np
import pytest

from droughtwatch_assets.model.evaluate import EvaluationRecord, evaluate, pr_curve

# (true, predicted) for 12 records; class 3 is never predicted:
#               predicted 0  1  2  3   row sums
CONFUSION = [
    [3, 1, 0, 0],  # true 0:   4
    [2, 2, 1, 0],  # true 1:   5  (the majority class)
    [0, 0, 1, 0],  # true 2:   1
    [1, 0, 1, 0],  # true 3:   2
]  # column sums:  6  3  3  0


def records_of(confusion):
    """Labels and probabilities whose argmax gives `confusion`, the records interleaved rather than sorted."""
    pairs = [(t, p) for t in range(4) for p in range(4) for _ in range(confusion[t][p])]
    order = np.random.default_rng(0).permutation(len(pairs))
    labels = np.array([pairs[i][0] for i in order])
    probabilities = np.full((len(pairs), 4), 0.1, np.float32)
    probabilities[np.arange(len(pairs)), [pairs[i][1] for i in order]] = 0.7
    return probabilities, labels


@pytest.fixture(scope="module")
def evaluation():
    return evaluate(*records_of(CONFUSION))


def test_the_confusion_matrix_counts_true_classes_in_rows_and_predictions_in_columns(evaluation):
    assert evaluation.confusion.tolist() == CONFUSION


def test_accuracy_is_the_diagonal_over_all_records(evaluation):
    assert evaluation.accuracy == pytest.approx((3 + 2 + 1 + 0) / 12)


def test_precision_is_per_predicted_class_and_a_class_never_predicted_scores_zero(evaluation):
    # true positives 3, 2, 1, 0 over column sums 6, 3, 3, 0 (0/0 for class 3)
    assert evaluation.precision.tolist() == pytest.approx([1 / 2, 2 / 3, 1 / 3, 0])


def test_recall_is_per_true_class(evaluation):
    # true positives 3, 2, 1, 0 over row sums 4, 5, 1, 2
    assert evaluation.recall.tolist() == pytest.approx([3 / 4, 2 / 5, 1, 0])


def test_f1_is_the_harmonic_mean_of_precision_and_recall(evaluation):
    # class 0: 2 * 1/2 * 3/4 / (1/2 + 3/4) = (3/4) / (5/4); class 1: (8/15) / (16/15); class 2: (2/3) / (4/3);
    # class 3: 0 / 0
    assert evaluation.f1.tolist() == pytest.approx([3 / 5, 1 / 2, 1 / 2, 0])


def test_the_majority_rate_is_the_share_of_the_most_frequent_true_class(evaluation):
    assert evaluation.majority_rate == pytest.approx(5 / 12)  # class 1; the most predicted class would give 6/12


def test_the_majority_rate_counts_a_class_absent_from_val():
    # no record of class 3 at all: the smallest class count is 0, the largest 3 (class 0)
    probabilities, labels = records_of([[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    result = evaluate(probabilities, labels)
    assert result.majority_rate == pytest.approx(3 / 7) and result.accuracy == pytest.approx(5 / 7)
    assert result.recall.tolist() == pytest.approx([2 / 3, 1, 1 / 2, 0])


def test_the_record_carries_the_figures_and_the_macro_f1_averages_all_four_classes(evaluation):
    record = evaluation.record("md5", "v1")
    assert record.records == 12 and record.confusion_matrix == CONFUSION
    assert (record.model_md5, record.data_version) == ("md5", "v1")
    assert record.accuracy == pytest.approx(1 / 2) and record.majority_rate == pytest.approx(5 / 12)
    assert record.precision == pytest.approx([1 / 2, 2 / 3, 1 / 3, 0])
    assert record.recall == pytest.approx([3 / 4, 2 / 5, 1, 0])
    assert record.f1 == pytest.approx([3 / 5, 1 / 2, 1 / 2, 0])
    assert record.macro_f1 == pytest.approx((3 / 5 + 1 / 2 + 1 / 2 + 0) / 4)  # 0.4; over three classes 0.533


def test_the_macro_f1_of_a_record_is_the_plain_mean_of_its_f1s():
    record = EvaluationRecord("m", "v", 1, 1.0, 1.0, [0.0] * 4, [0.0] * 4, [0.8, 0.4, 0.0, 0.0], [[0] * 4] * 4)
    assert record.macro_f1 == pytest.approx(0.3)


def test_pr_curve_counts_a_score_equal_to_the_threshold_as_predicted():
    scores = np.array([0.9, 0.8, 0.4, 0.2])
    positives = np.array([True, False, True, False])
    precision, recall = pr_curve(scores, positives, np.array([0.0, 0.4, 0.5, 0.85, 0.95]))
    # predicted at each threshold: all four (2 positives), three (2), two (1), one (1), none
    assert precision.tolist() == pytest.approx([2 / 4, 2 / 3, 1 / 2, 1, 1])  # nothing predicted: precision 1
    assert recall.tolist() == pytest.approx([1, 1, 1 / 2, 1 / 2, 0])
