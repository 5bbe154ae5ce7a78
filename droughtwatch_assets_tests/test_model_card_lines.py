"""model_card() line by line, on an evaluation and a config made by hand: each figure lands in its own place."""

import pytest

from droughtwatch_assets.core.model_config import ModelConfig, SweepRecord
from droughtwatch_assets.model.card import front_matter, model_card
from droughtwatch_assets.model.drift import DriftReference
from droughtwatch_assets.model.evaluate import EvaluationRecord

# rows: true class, columns: predicted class; 20 records
CONFUSION = [
    [7, 1, 0, 0],  # support 8, predicted as 0: 7 + 2 + 1 + 0 = 10
    [2, 1, 1, 0],  # support 4, predicted as 1: 1 + 1 + 0 + 0 = 2
    [1, 0, 2, 1],  # support 4, predicted as 2: 0 + 1 + 2 + 1 = 4
    [0, 0, 1, 3],  # support 4, predicted as 3: 0 + 0 + 1 + 3 = 4
]
EVALUATION = EvaluationRecord(
    model_md5="0123456789abcdef0123456789abcdef",
    data_version="raw-v1",
    records=20,
    accuracy=0.65,  # (7 + 1 + 2 + 3) / 20
    majority_rate=0.4,  # class 0: 8 / 20
    precision=[0.7, 0.5, 0.5, 0.75],  # 7/10, 1/2, 2/4, 3/4
    recall=[0.875, 0.25, 0.5, 0.75],  # 7/8, 1/4, 2/4, 3/4
    f1=[7 / 9, 1 / 3, 0.5, 0.75],  # 2PR / (P + R): 1.225 / 1.575, 0.25 / 0.75, 0.5 / 1, 1.125 / 1.5
    confusion_matrix=CONFUSION,
)
CONFIG = ModelConfig(
    model_name="baseline",
    feature_set="baseline",
    features=["B2", "B3", "B4", "B5"],
    learning_rate=0.0005,
    batch_size=64,
    epochs=2,
    augment="none",
    seed=7,
    register_model=True,
    tracker="mlflow",
    class_weights={0: 1.0, 1: 4.0, 2: 4.0, 3: 6.0},
    data_version="processed-v2",
    dagster_run_id="run-42",
    data_source="folder",
    tracker_run={"run_id": "abc", "url": "http://mlflow/abc"},
)


def test_the_front_matter_holds_the_raw_data_version_and_the_val_figures():
    front = front_matter(model_card(CONFIG, EVALUATION, 2.384185791015625e-07, "champion"))
    assert front["model_name"] == "champion" and front["model_md5"] == "0123456789abcdef0123456789abcdef"
    assert front["data_version"] == "raw-v1"
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "DroughtWatch, data version raw-v1"
    # macro-F1: (7/9 + 1/3 + 1/2 + 3/4) / 4 = 2.361111 / 4 = 0.590278
    assert result["metrics"] == [
        {"type": "accuracy", "name": "val accuracy", "value": 0.65},
        {"type": "f1", "name": "macro-F1", "value": 0.590278},
    ]


def test_every_line_of_the_card_body_shows_its_own_figure():
    card = model_card(CONFIG, EVALUATION, 2.384185791015625e-07, "champion")
    lines = card.splitlines()
    assert "# champion" in lines
    assert "- Trained on real DroughtWatch shards (raw source: folder)." in lines
    assert "- Val accuracy 0.6500, against 0.4000 for always predicting the most frequent" in lines
    start = lines.index("| setting | value |")
    assert lines[start + 2 : start + 12] == [
        "| raw data version | raw-v1 |",
        "| processed data version | processed-v2 |",
        "| feature set | baseline (4 channels) |",
        "| learning rate | 0.0005 |",
        "| batch size | 64 |",
        "| epochs | 2 |",
        "| augmentation | none |",
        "| seed | 7 |",
        "| class weights | 0: 1, 1: 4, 2: 4, 3: 6 |",
        "| hyperparameters | no sweep |",
    ]
    assert "## Evaluation on val (20 records)" in lines
    assert "Accuracy 0.6500, macro-F1 0.5903, majority-class rate\n0.4000." in card
    start = lines.index("| class | precision | recall | F1 | support |")
    assert lines[start + 2 : start + 6] == [
        "| 0 animals | 0.7000 | 0.8750 | 0.7778 | 8 |",
        "| 1 animals | 0.5000 | 0.2500 | 0.3333 | 4 |",
        "| 2 animals | 0.5000 | 0.5000 | 0.5000 | 4 |",
        "| 3+ animals | 0.7500 | 0.7500 | 0.7500 | 4 |",
    ]
    start = lines.index("| true | 0 | 1 | 2 | 3 |")
    assert lines[start + 2 : start + 6] == [
        "| 0 | 7 | 1 | 0 | 0 |",
        "| 1 | 2 | 1 | 1 | 0 |",
        "| 2 | 1 | 0 | 2 | 1 |",
        "| 3 | 0 | 0 | 1 | 3 |",
    ]
    assert (
        "ONNX (`model.onnx`, md5 0123456789abcdef0123456789abcdef); largest difference from Keras on a val batch: "
        "2.38e-07." in lines
    )
    assert "- Dagster run that trained it: run-42" in lines
    assert "- Tracker run (mlflow): run_id: abc, url: http://mlflow/abc" in lines


@pytest.mark.parametrize(
    "source, line",
    [
        ("sample", "- Trained on the generated sample (synthetic data embedded in the package): it has learned"),
        ("", "- Trained on real DroughtWatch shards (raw source: unknown)."),
    ],
)
def test_the_card_says_what_data_the_model_learned(source, line):
    card = model_card(CONFIG.model_copy(update={"data_source": source}), EVALUATION, 0.0, "baseline")
    assert any(text.startswith(line) for text in card.splitlines())


def test_a_swept_model_names_its_grid_hold_out_and_trial():
    sweep = SweepRecord(
        combinations=4,
        learning_rate=[0.001, 0.0005],
        batch_size=[32, 64],
        epochs=[2],
        holdout_fraction=0.25,
        holdout_seed=0,
        selected_trial=3,
        holdout_accuracy=0.6,
    )
    card = model_card(CONFIG.model_copy(update={"sweep": sweep}), EVALUATION, 0.0, "baseline")
    assert "| hyperparameters | chosen by a sweep of 4 combinations on a 25% hold-out of train (trial 3) |" in card


def reference(rates):
    """A drift reference with the label priors 0.6, 0.2, 0.15, 0.05 (and bins that the card does not show)."""
    return DriftReference(
        features=["B2"],
        data_version="processed-v2",
        split="train",
        seed=0,
        sample_records=10,
        sample_pixels=10,
        records=10,
        pixels=10,
        quantiles=[0.5],
        edges=[[0.5]],
        expected=[[0.5, 0.5]],
        means=[0.5],
        vetoed_fraction=0.0,
        class_priors=[0.6, 0.2, 0.15, 0.05],
        predicted_class_rates=rates,
    )


def test_the_card_shows_the_predicted_class_rates_on_val_beside_the_label_priors():
    # predicted as each class, from CONFUSION's columns: 10, 2, 4, 4 of 20
    card = model_card(CONFIG, EVALUATION, 0.0, "baseline", reference([0.5, 0.1, 0.2, 0.2]))
    lines = card.splitlines()
    assert "## Class rates" in lines and lines.index("## Class rates") < lines.index("## Export")
    start = lines.index("| class | training label share | predicted share on val |")
    assert lines[start + 2 : start + 7] == [
        "| 0 animals | 0.6000 | 0.5000 |",
        "| 1 animals | 0.2000 | 0.1000 |",
        "| 2 animals | 0.1500 | 0.2000 |",
        "| 3+ animals | 0.0500 | 0.2000 |",
        "",
    ]


def test_a_card_without_predicted_class_rates_or_without_a_reference_says_what_it_knows():
    lines = model_card(CONFIG, EVALUATION, 0.0, "baseline", reference(None)).splitlines()
    start = lines.index("| class | training label share | predicted share on val |")
    assert lines[start + 2] == "| 0 animals | 0.6000 | unknown |"
    assert "## Class rates" not in model_card(CONFIG, EVALUATION, 0.0, "baseline").splitlines()
