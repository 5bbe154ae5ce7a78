"""The model card published with every model: each figure on it is checked against a source of its own (the run
config the test gives, the data versions its inputs were recorded under, and the published model.onnx scored on val
by hand), and a torn set is caught."""

import copy
import hashlib
import json
import shutil

import dagster as dg
import numpy as np
import onnxruntime as ort
import pytest
import yaml

from droughtwatch_assets.definitions import asset_checks, assets
from droughtwatch_assets.defs.jobs import configuration_jobs
from droughtwatch_assets.model.card import front_matter
from droughtwatch_assets.records.tfrecord import read_processed
from droughtwatch_assets.storage.registry import TornPair, fetch_published
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets_tests.conftest import TINY_SAMPLE

# Over the baseline job's preset (2 epochs, registered as "baseline"): settings other than the defaults, so that a
# card showing a default instead of what training received goes red.
TRAINING = {"learning_rate": 0.0007, "batch_size": 32, "seed": 3, "augment": "dihedral", "tracker": "none"}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """baseline_job on a tiny sample, published: (the run's result, the data folder)."""
    data = tmp_path_factory.mktemp("data")
    bound = dg.Definitions(
        assets=assets, asset_checks=asset_checks, jobs=[configuration_jobs["baseline"]], resources=local_resources(data)
    )
    job = bound.resolve_job_def("baseline_job")
    config = copy.deepcopy(job.partitioned_config.get_run_config_for_partition_key("baseline"))
    config["ops"]["trained_model"]["config"].update(TRAINING)
    config["ops"]["raw_tfrecords"] = {"config": TINY_SAMPLE}
    config["ops"]["processed_tfrecords"] = {"config": {"workers": 1}}
    result = job.execute_in_process(partition_key="baseline", run_config=config)
    assert result.success
    return result, data


def current(data, asset: str):
    """The store's current version of the asset's baseline partition."""
    return data / asset / "baseline" / "current"


def published_file(data, name: str):
    folder = data / "registry" / "baseline"
    return folder / "versions" / (folder / "CURRENT").read_text().strip() / name


def test_the_card_is_published_beside_the_model_and_shown_on_the_asset(published):
    result, data = published
    card = published_file(data, "MODEL_CARD.md").read_text()
    assert (data / "registry" / "baseline" / "MODEL_CARD.md").read_text() == card
    assert result.asset_materializations_for_node("published_model")[0].metadata["model_card"].value == card


def test_the_baseline_job_trains_two_epochs_and_records_the_class_weights_1_4_4_6(published):
    _, data = published
    trained = current(data, "trained_model")
    history = json.loads((trained / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_accuracy"]) == 2
    for path in (trained / "training_config.yaml", published_file(data, "config.yaml")):
        recorded = yaml.safe_load(path.read_text())
        assert {int(k): w for k, w in recorded["class_weights"].items()} == {0: 1, 1: 4, 2: 4, 3: 6}
        assert (recorded["epochs"], recorded["learning_rate"], recorded["batch_size"]) == (2, 0.0007, 32)


def by_hand(data) -> dict:
    """The published model.onnx run on the val records, and its figures worked out here with numpy."""
    import keras  # TensorFlow loads when the test runs, not when it is collected

    val = [read_processed(shard, 4) for shard in sorted((current(data, "processed_tfrecords") / "val").iterdir())]
    images, labels = np.concatenate([r.images for r in val]), np.concatenate([r.labels for r in val])
    session = ort.InferenceSession(str(published_file(data, "model.onnx")), providers=["CPUExecutionProvider"])
    predicted = session.run(None, {session.get_inputs()[0].name: images})[0].argmax(axis=1)
    confusion = np.zeros((4, 4), int)
    for true, guess in zip(labels, predicted):
        confusion[true, guess] += 1
    figures = {"records": len(labels), "confusion": confusion, "precision": [], "recall": [], "f1": []}
    for k in range(4):
        hits, predicted_k, actual_k = confusion[k, k], confusion[:, k].sum(), confusion[k, :].sum()
        p = hits / predicted_k if predicted_k else 0.0
        r = hits / actual_k if actual_k else 0.0
        figures["precision"].append(p)
        figures["recall"].append(r)
        figures["f1"].append(2 * p * r / (p + r) if p + r else 0.0)
    figures["predicted_rates"] = confusion.sum(axis=0) / len(labels)
    train = [read_processed(s, 4) for s in sorted((current(data, "processed_tfrecords") / "train").iterdir())]
    train_labels = np.concatenate([r.labels for r in train])
    figures["label_priors"] = np.bincount(train_labels, minlength=4) / len(train_labels)
    figures["accuracy"] = np.trace(confusion) / len(labels)
    figures["majority"] = confusion.sum(axis=1).max() / len(labels)
    figures["macro_f1"] = sum(figures["f1"]) / 4
    keras_model = keras.saving.load_model(current(data, "trained_model") / "model.keras", compile=False)
    keras_probabilities = keras_model.predict(images[:64], batch_size=len(images[:64]), verbose=0)
    onnx_probabilities = session.run(None, {session.get_inputs()[0].name: images[:64]})[0]
    figures["parity"] = float(np.abs(keras_probabilities - onnx_probabilities).max())
    return figures


def test_every_figure_on_the_card_is_checked_against_its_own_source(published):
    result, data = published
    card = published_file(data, "MODEL_CARD.md").read_text()
    lines = card.splitlines()
    # the versions each input was recorded under when it was materialised
    raw_version = result.asset_materializations_for_node("raw_tfrecords")[0].tags["dagster/data_version"]
    processed_version = result.asset_materializations_for_node("processed_tfrecords")[0].tags["dagster/data_version"]
    assert raw_version != processed_version
    model_md5 = hashlib.md5(published_file(data, "model.onnx").read_bytes()).hexdigest()
    hand = by_hand(data)

    front = front_matter(card)
    results = front.pop("model-index")[0]["results"]
    assert front == {
        "model_name": "baseline",
        "library_name": "onnx",
        "pipeline_tag": "image-classification",
        "tags": ["droughtwatch", "landsat-8", "forage-quality", "baseline"],
        "model_md5": model_md5,
        "data_version": raw_version,
    }
    assert results[0]["dataset"] == {
        "type": "droughtwatch",
        "name": f"DroughtWatch, data version {raw_version}",
        "split": "val",
    }
    metrics = {m["name"]: (m["type"], m["value"]) for m in results[0]["metrics"]}
    assert metrics.keys() == {"val accuracy", "macro-F1"}
    assert metrics["val accuracy"] == ("accuracy", pytest.approx(hand["accuracy"], abs=1e-6))
    assert metrics["macro-F1"] == ("f1", pytest.approx(hand["macro_f1"], abs=1e-6))

    assert "Feature set `baseline`: channels B2, B3, B4, B5." in lines
    assert "- Trained on the generated sample (synthetic data embedded in the package): it has learned" in card
    assert (
        f"- Val accuracy {hand['accuracy']:.4f}, against {hand['majority']:.4f} for always predicting the most "
        "frequent\n  class" in card
    )
    training_table = [
        f"| raw data version | {raw_version} |",
        f"| processed data version | {processed_version} |",
        "| feature set | baseline (4 channels) |",
        "| learning rate | 0.0007 |",
        "| batch size | 32 |",
        "| epochs | 2 |",
        "| augmentation | dihedral |",
        "| seed | 3 |",
        "| class weights | 0: 1, 1: 4, 2: 4, 3: 6 |",
        "| hyperparameters | no sweep |",
    ]
    start = lines.index("| setting | value |")
    assert lines[start + 2 : start + 2 + len(training_table)] == training_table

    assert f"## Evaluation on val ({hand['records']} records)" in lines
    assert (
        f"Accuracy {hand['accuracy']:.4f}, macro-F1 {hand['macro_f1']:.4f}, majority-class rate\n"
        f"{hand['majority']:.4f}." in card
    )
    confusion = hand["confusion"]
    per_class = [
        f"| {label} | {hand['precision'][k]:.4f} | {hand['recall'][k]:.4f} | {hand['f1'][k]:.4f} "
        f"| {confusion[k].sum()} |"
        for k, label in enumerate(["0 animals", "1 animals", "2 animals", "3+ animals"])
    ]
    start = lines.index("| class | precision | recall | F1 | support |")
    assert lines[start + 2 : start + 6] == per_class
    start = lines.index("| true | 0 | 1 | 2 | 3 |")
    assert lines[start + 2 : start + 6] == [f"| {k} | " + " | ".join(map(str, confusion[k])) + " |" for k in range(4)]

    assert (
        f"ONNX (`model.onnx`, md5 {model_md5}); largest difference from Keras on a val batch: {hand['parity']:.3g}."
        in lines
    )
    # beside the label priors, the classes the model predicts on val: what prediction drift is measured against
    class_rates = [
        f"| {label} | {hand['label_priors'][k]:.4f} | {hand['predicted_rates'][k]:.4f} |"
        for k, label in enumerate(["0 animals", "1 animals", "2 animals", "3+ animals"])
    ]
    start = lines.index("| class | training label share | predicted share on val |")
    assert lines[start + 2 : start + 6] == class_rates
    assert f"- Dagster run that trained it: {result.run_id}" in lines
    assert "- Tracker run (none): not tracked" in lines


def test_the_published_drift_reference_holds_the_models_predicted_class_rates_and_its_val_split_shows_no_drift(
    published,
):
    result, data = published
    hand = by_hand(data)
    reference = json.loads(published_file(data, "drift_reference.json").read_text())
    assert reference["predicted_class_rates"] == pytest.approx(hand["predicted_rates"].tolist(), abs=1e-12)
    assert reference["class_priors"] == pytest.approx(hand["label_priors"].tolist(), abs=1e-12)
    # the job's predictions score the raw val split: the model's own val records, so the same classes
    predictions = result.asset_materializations_for_node("predictions")[0].metadata
    assert predictions["class_drift_against"].value == "the model's predicted class rates on val"
    assert predictions["class_drift_chi_square"].value == pytest.approx(0, abs=1e-9)
    assert predictions["class_drift"].value.endswith("consistent with the predictions on val")


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
