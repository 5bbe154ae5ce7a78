"""model_evaluation invoked on the real shard's processed val split with the original's published baseline."""

import shutil

import dagster as dg
import numpy as np
import pytest

from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.defs.assets.model_evaluation import EvaluationConfig, model_evaluation
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.predict import predict_processed
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets_tests.conftest import DATA_ASSETS, REAL_SHARD, REFERENCE_ONNX, assets_named, run_config


@pytest.fixture(scope="module")
def evaluation_inputs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("evaluation")
    for split in ("train", "val"):
        (tmp_path / "real" / split).mkdir(parents=True)
        shutil.copyfile(REAL_SHARD, tmp_path / "real" / split / "part-r-00012")
    raw = {"source": "folder", "folder": str(tmp_path / "real")}
    data_dir = tmp_path / "data"
    result = dg.materialize(
        assets_named(*DATA_ASSETS),
        partition_key="baseline",
        resources=local_resources(data_dir),
        run_config=run_config(raw),
    )
    assert result.success
    (tmp_path / "onnx").mkdir()
    shutil.copyfile(REFERENCE_ONNX, tmp_path / "onnx" / "model.onnx")
    processed = ShardedDataset.open(LocalArtifactStore(data_dir).current(("processed_tfrecords", "baseline")))
    return OnnxArtifact(tmp_path / "onnx"), processed


def evaluated(inputs, tta: bool) -> dg.Output:
    onnx_model, processed = inputs
    context = dg.build_asset_context(partition_key="baseline")
    return model_evaluation(context, EvaluationConfig(tta=tta), onnx_model, processed)


def test_evaluation_with_tta_scores_the_averaged_views_and_records_that_it_did(evaluation_inputs):
    onnx_model, processed = evaluation_inputs
    plain, averaged = evaluated(evaluation_inputs, tta=False), evaluated(evaluation_inputs, tta=True)
    assert (plain.metadata["tta"].value, averaged.metadata["tta"].value) == (False, True)
    for output, tta in ((plain, False), (averaged, True)):
        scores = predict_processed(onnx_model.onnx_path, processed.shards("val"), 4, tta=tta)
        assert output.value.accuracy == float((scores.probabilities.argmax(axis=1) == scores.labels).mean())
    assert EvaluationConfig().tta is False
    # the original model predicts 45, 6, 11 and 17 of the 79 val records as 0, 1, 2 and 3 (droughtwatch predict on
    # the same shard says so): the rates predictions are tested against, the same with tta, which they do not use
    rates = [45 / 79, 6 / 79, 11 / 79, 17 / 79]
    assert plain.value.predicted_class_rates == averaged.value.predicted_class_rates == rates
    assert plain.metadata["predicted_class_rates"].value == [0.5696, 0.0759, 0.1392, 0.2152]


def test_the_figures_agree_with_the_val_class_counts_and_with_each_other(evaluation_inputs):
    output = evaluated(evaluation_inputs, tta=False)
    record = output.value
    counts = evaluation_inputs[1].class_counts("val")
    assert counts == [46, 14, 14, 5] and record.records == 79  # the shard's 81 val records less 2 blank ones
    confusion = np.array(record.confusion_matrix)
    assert confusion.sum(axis=1).tolist() == counts  # rows are true classes
    assert record.majority_rate == 46 / 79
    hits = np.diag(confusion)
    assert record.accuracy == pytest.approx(hits.sum() / 79)
    called = confusion.sum(axis=0)
    assert record.precision == pytest.approx([h / c if c else 0 for h, c in zip(hits, called)])
    assert record.recall == pytest.approx([h / c if c else 0 for h, c in zip(hits, counts)])
    f1 = [2 * p * r / (p + r) if p + r else 0 for p, r in zip(record.precision, record.recall)]
    assert record.f1 == pytest.approx(f1)
    assert record.macro_f1 == pytest.approx(sum(f1) / 4) == output.metadata["macro_f1"].value
    assert output.metadata["majority_class_rate"].value == 46 / 79
