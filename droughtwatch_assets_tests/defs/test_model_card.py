"""The model card published with every model: its figures are the evaluation's own, and a torn set is caught."""

import shutil

import dagster as dg
import pytest

from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.definitions import assets
from droughtwatch_assets.defs.deployment import local_resources
from droughtwatch_assets.model.card import front_matter
from droughtwatch_assets.storage.registry import TornPair, fetch_published
from droughtwatch_assets_tests.conftest import TINY_SAMPLE, run_config, table_rows


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The baseline chain on a tiny sample, published: (the run's result, the data folder)."""
    data = tmp_path_factory.mktemp("data")
    result = dg.materialize(
        assets,
        partition_key="baseline",
        resources=local_resources(data),
        run_config=run_config(
            TINY_SAMPLE, {"epochs": 1, "model_name": "baseline", "register_model": True, "tracker": "none"}
        ),
    )
    assert result.success
    return result, data


def test_the_card_is_published_beside_the_model_and_shown_on_the_asset(published):
    result, data = published
    folder = data / "registry" / "baseline"
    version = (folder / "CURRENT").read_text().strip()
    card = (folder / "versions" / version / "MODEL_CARD.md").read_text()
    assert (folder / "MODEL_CARD.md").read_text() == card
    assert result.asset_materializations_for_node("published_model")[0].metadata["model_card"].value == card
    assert front_matter(card)["model_md5"] == md5_of(folder / "versions" / version / "model.onnx")


def test_every_figure_on_the_card_is_the_evaluations_own(published):
    result, data = published
    card = (data / "registry" / "baseline" / "MODEL_CARD.md").read_text()
    evaluation = result.asset_materializations_for_node("model_evaluation")[0].metadata
    front = front_matter(card)
    metrics = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["val accuracy"] == pytest.approx(evaluation["val_accuracy"].value, abs=1e-6)
    assert metrics["macro-F1"] == pytest.approx(evaluation["macro_f1"].value, abs=1e-6)
    assert front["model-index"][0]["results"][0]["dataset"]["split"] == "val"
    assert front["data_version"] == evaluation["data_version"].value
    assert front["model_md5"] == evaluation["model_md5"].value
    for row in table_rows(evaluation["per_class"]):
        label = f"{row['class']}{'+' if row['class'] == 3 else ''} animals"
        line = f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['F1']:.4f} | {row['support']} |"
        assert line in card
    for row in table_rows(evaluation["confusion_matrix"]):
        counts = " | ".join(str(row[f"predicted {k}"]) for k in range(4))
        assert f"| {row['true class']} | {counts} |" in card
    assert f"majority-class rate\n{evaluation['majority_class_rate'].value:.4f}" in card
    assert "the generated sample (synthetic" in card  # the embedded sample, not real data
    assert "channels B2, B3, B4, B5" in card and "| epochs | 1 |" in card
    parity = result.asset_materializations_for_node("onnx_model")[0].metadata["max_abs_diff_vs_keras"].value
    assert f"largest difference from Keras on a val batch: {parity:.3g}" in card
    run_id = result.run_id
    assert f"Dagster run that trained it: {run_id}" in card


def test_a_card_from_another_publication_is_detected(published, tmp_path):
    _, data = published
    folder = tmp_path / "baseline"
    shutil.copytree(data / "registry" / "baseline", folder)
    (folder / "CURRENT").unlink()  # a reader of the original layout only
    card = (folder / "MODEL_CARD.md").read_text()
    other = front_matter(card)["model_md5"]
    (folder / "MODEL_CARD.md").write_text(card.replace(other, "0" * 32, 1))  # the card of another model
    with pytest.raises(TornPair, match=r"MODEL_CARD\.md describes another model\.onnx"):
        fetch_published(str(folder), tmp_path / "scratch")
