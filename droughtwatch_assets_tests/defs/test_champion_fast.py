"""The leaderboard and the champion in process, on data a model learns in seconds: every image of a class is the
same, only the NIR band (B5) tells the classes apart, and val holds 8 records of each class. So the majority-class
rate is 8/32 = 0.25, and a model that predicts one class (rgb, untrained, sees the same image everywhere) scores
exactly that; the baseline bands include B5 and beat it after a few epochs."""

import shutil

import dagster as dg
import numpy as np
import onnxruntime as ort
import pytest
import yaml

from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.defs.assets.champion import champion_is_sound
from droughtwatch_assets.records.tfrecord import encode_raw_example
from droughtwatch_assets.records.writer import RecordWriter
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.storage.registry import LocalModelRegistry
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets.wiring.resources import LocalStore, TrackingResource
from droughtwatch_assets_tests.conftest import DATA_ASSETS, assets_named, run_config

EVALUATED = (*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation")
OTHER_BANDS, NIR_STEP = 60, 85  # B5 of class k is 85 * k at every pixel; every other band is 60


def class_image(label: int) -> np.ndarray:
    image = np.full((11, 65, 65), OTHER_BANDS, np.uint8)
    image[4] = NIR_STEP * label
    return image


def write_split(folder, per_class: int, seed: int) -> None:
    labels = np.random.default_rng(seed).permutation(np.tile(np.arange(4), per_class))
    folder.mkdir(parents=True)
    with RecordWriter(folder / "part-r-00000") as writer:
        for i, label in enumerate(labels):
            writer.write(encode_raw_example(class_image(int(label)), int(label), f"{folder.name}-{i}"))


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """baseline trained for 3 epochs, rgb untrained, then leaderboard and champion (with champion_is_sound)."""
    root = tmp_path_factory.mktemp("champion")
    write_split(root / "raw" / "train", 16, seed=0)
    write_split(root / "raw" / "val", 8, seed=1)
    raw = {"source": "folder", "folder": str(root / "raw")}
    data, instance = root / "data", dg.DagsterInstance.ephemeral()
    for feature_set, epochs in (("baseline", 3), ("rgb", 0)):
        training = {"epochs": epochs, "batch_size": 8, "learning_rate": 2e-3, "tracker": "none"}
        trained = dg.materialize(
            assets_named(*EVALUATED),
            partition_key=feature_set,
            instance=instance,
            resources=local_resources(data),
            run_config=run_config(raw, training, processing={"workers": 1}),
        )
        assert trained.success
    result = dg.materialize(
        [*assets_named(*EVALUATED, "leaderboard", "champion"), champion_is_sound],
        selection=["leaderboard", "champion"],
        instance=instance,
        resources={**local_resources(data), "tracking": TrackingResource(default_tracker="none")},
    )
    assert result.success
    return data, result


def accuracy_on_the_class_images(model) -> float:
    """Each class's 8 val records are one image: the model's accuracy is the share of the 4 it gets right."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    baseline_bands = [1, 2, 3, 4]  # B2..B5
    images = np.stack([class_image(k)[baseline_bands].transpose(1, 2, 0) for k in range(4)]).astype(np.float32) / 255
    predicted = session.run(None, {session.get_inputs()[0].name: images})[0].argmax(axis=1)
    return float((predicted == np.arange(4)).sum() / 4)


def test_the_feature_set_that_tells_the_classes_apart_becomes_champion_and_is_published(compared):
    data, result = compared
    rows = {row.feature_set: row for row in result.output_for_node("leaderboard")}
    assert [row.feature_set for row in result.output_for_node("leaderboard")][:2] == ["baseline", "rgb"]
    assert {name: row.status for name, row in rows.items()} == {
        "baseline": "candidate",
        "rgb": "candidate",
        "ndvi": "not trained",
        "all": "not trained",
    }
    assert rows["baseline"].majority_rate == rows["rgb"].majority_rate == 0.25
    assert rows["rgb"].val_accuracy == 0.25 and sorted(rows["rgb"].recall) == [0.0, 0.0, 0.0, 1.0]

    folder = data / "registry" / "champion"
    expected = accuracy_on_the_class_images(folder / "model.onnx")
    assert expected > 0.25, "the baseline did not learn the NIR band in 3 epochs"
    assert rows["baseline"].val_accuracy == expected

    outcome = result.output_for_node("champion")
    assert (outcome["promoted"], outcome["reason"]) == (True, "no champion yet")
    assert [entry["feature_set"] for entry in outcome["history"]] == ["baseline"]
    published = yaml.safe_load((folder / "config.yaml").read_text())
    assert published["features"] == ["B2", "B3", "B4", "B5"]
    assert published["champion"]["feature_set"] == "baseline" and published["champion"]["val_accuracy"] == expected
    assert published["model_md5"] == md5_of(folder / "model.onnx") == rows["baseline"].model_md5
    assert (folder / "CURRENT").read_text() == published["published_version"]
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"champion_is_sound": True}


def republished_champion(compared, tmp_path, model=None, **champion_fields) -> LocalStore:
    """A copy of the registry whose champion was published again, with another model file or record fields."""
    data, _ = compared
    shutil.copytree(data / "registry", tmp_path / "registry")
    registry = LocalModelRegistry(tmp_path / "registry")
    current_model, config = registry.current("champion")
    changed = config.model_copy(update={"champion": {**config.champion, **champion_fields}})
    registry.publish("champion", model or current_model, changed)
    return LocalStore(base_dir=str(tmp_path))


def test_champion_is_sound_fails_a_model_that_takes_other_channels_than_its_config_lists(compared, tmp_path):
    data, _ = compared
    rgb_model = LocalArtifactStore(data).current(("onnx_model", "rgb")) / "model.onnx"  # B4, B3, B2
    outcome = champion_is_sound(republished_champion(compared, tmp_path, rgb_model))
    assert outcome.passed is False
    assert outcome.metadata["problems"].value == ["the model takes 3 channels; its config lists 4 features"]


@pytest.mark.parametrize(
    ("parity", "passed"), [(9e-6, True), (1e-5, True), (float(np.nextafter(1e-5, 1)), False), (2e-5, False)]
)
def test_champion_is_sound_passes_an_onnx_keras_difference_up_to_1e_5(compared, tmp_path, parity, passed):
    outcome = champion_is_sound(republished_champion(compared, tmp_path, parity=parity))
    assert outcome.passed is passed
    problems = [] if passed else [f"ONNX/Keras max abs diff {parity} > 1e-05"]
    assert outcome.metadata["problems"].value == problems
