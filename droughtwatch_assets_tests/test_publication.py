"""Publishing a model, the one way every published model goes out (model/publication.py), and the one parity
tolerance."""

import contextlib
import json
import math
import shutil

import numpy as np
import pytest
import yaml

from droughtwatch_assets.core.configurations import parity_problem
from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.card import front_matter
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.model.publication import Listing, NotEvaluated, publish_model
from droughtwatch_assets.storage.registry import LocalModelRegistry
from droughtwatch_assets.tracking import NullTracker
from droughtwatch_assets_tests.conftest import model_config


@pytest.mark.parametrize(
    ("diff", "problem"),
    [
        (9e-6, None),
        (1e-5, None),
        (float(np.nextafter(1e-5, 1)), "ONNX/Keras max abs diff 1.0000000000000003e-05 > 1e-05"),
        (math.nan, "ONNX/Keras max abs diff nan > 1e-05"),
    ],
)
def test_an_export_may_differ_from_keras_by_up_to_1e_5(diff, problem):
    assert parity_problem(diff) == problem


@pytest.fixture
def onnx_model(tmp_path, reference_onnx) -> OnnxArtifact:
    """An onnx_model version as the store holds it: v-<id>/ with the model, its config, parity and drift reference."""
    root = tmp_path / "store" / "onnx_model" / "baseline" / "v-20260101T000000000000-abcdef"
    root.mkdir(parents=True)
    shutil.copyfile(reference_onnx, root / "model.onnx")
    artifact = OnnxArtifact(root)
    artifact.write_config(model_config(model_name="baseline-small"))
    artifact.write_parity(3e-7, 64)
    artifact.drift_reference_path.write_text(json.dumps(TRAINING_REFERENCE))
    return artifact


# a drift reference as training writes it (small bins, made up), before the model's val rates are known
TRAINING_REFERENCE = {
    "features": ["B2", "B3", "B4", "B5"],
    "data_version": "processed-1",
    "split": "train",
    "seed": 0,
    "sample_records": 2,
    "sample_pixels": 4,
    "records": 2,
    "pixels": 4,
    "quantiles": [0.5],
    "edges": [[0.5]] * 4,
    "expected": [[0.5, 0.5]] * 4,
    "means": [0.5] * 4,
    "vetoed_fraction": 0.0,
    "class_priors": [0.4, 0.2, 0.2, 0.2],
    "predicted_class_rates": None,
}
VAL_RATES = [0.5, 0.25, 0.125, 0.125]


def evaluation_of(model_md5: str) -> EvaluationRecord:
    confusion = [[5, 1, 0, 0], [1, 3, 0, 0], [0, 1, 2, 1], [0, 0, 1, 4]]  # 20 records, 14 right
    return EvaluationRecord(
        model_md5, "raw-1", 20, 0.7, 0.3, [5 / 6, 0.6, 2 / 3, 0.8], [5 / 6, 0.75, 0.5, 0.8], [5 / 6, 2 / 3, 4 / 7, 0.8],
        confusion, VAL_RATES,
    )  # fmt: skip


class Steps:
    """What publishing did, in order: each entry names the step and the CURRENT the registry had then."""

    def __init__(self, registry_folder):
        self.folder, self.seen = registry_folder, []

    def current(self) -> str | None:
        path = self.folder / "CURRENT"
        return path.read_text() if path.exists() else None

    def retain(self):
        self.seen.append(("retain", self.current()))

    @contextlib.contextmanager
    def track(self):
        self.seen.append(("track", self.current()))
        yield NullTracker()


def test_a_model_is_published_with_its_source_version_card_and_attachments_with_the_tracker_open(tmp_path, onnx_model):
    registry = LocalModelRegistry(tmp_path / "registry")
    steps = Steps(tmp_path / "registry" / "baseline-small")
    evaluation = evaluation_of(md5_of(onnx_model.onnx_path))
    published = publish_model(
        registry, onnx_model, evaluation, "baseline-small", Listing("baseline-small"), steps.track, steps.retain
    )
    version = published.publication.version
    # the tracker opened first (one that is away fails the step before the store is written), then retention
    assert steps.seen == [("track", None), ("retain", version)]
    folder = tmp_path / "registry" / "baseline-small" / "versions" / version
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "config.yaml",
        "drift_reference.json",
        "model.onnx",
    ]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["source_versions"] == {"onnx_model/baseline": "v-20260101T000000000000-abcdef"}
    assert config["model_md5"] == md5_of(onnx_model.onnx_path) == front_matter(published.card)["model_md5"]
    assert (folder / "MODEL_CARD.md").read_text() == published.card
    assert "largest difference from Keras on a val batch: 3e-07" in published.card
    # the training data's reference with the model's predicted class rates on val (its evaluation's) added
    published_reference = json.loads((folder / "drift_reference.json").read_text())
    assert published_reference == {**TRAINING_REFERENCE, "predicted_class_rates": VAL_RATES}
    assert "| 0 animals | 0.4000 | 0.5000 |" in published.card.splitlines()  # label prior beside the val rate


@pytest.mark.parametrize(
    ("evaluated_md5", "chosen_md5"), [("0" * 32, None), (None, None), ("model", "0" * 32)], ids=str
)
def test_an_evaluation_of_another_model_file_is_refused_before_anything_is_published(
    tmp_path, onnx_model, evaluated_md5, chosen_md5
):
    actual = md5_of(onnx_model.onnx_path)
    evaluation = None if evaluated_md5 is None else evaluation_of(actual if evaluated_md5 == "model" else evaluated_md5)
    steps = Steps(tmp_path / "registry" / "champion")
    with pytest.raises(NotEvaluated) as refused:
        publish_model(
            LocalModelRegistry(tmp_path / "registry"),
            onnx_model,
            evaluation,
            "champion",
            Listing("droughtwatch", champion=True),
            steps.track,
            steps.retain,
            chosen_md5=chosen_md5,
        )
    assert str(refused.value) == (
        "model_evaluation partition 'baseline' judged another model than the current onnx_model baseline (it changed "
        "after it was evaluated); materialise model_evaluation for baseline again"
    )
    assert steps.seen == [] and not (tmp_path / "registry").exists()
