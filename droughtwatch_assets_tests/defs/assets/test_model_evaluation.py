"""model_evaluation invoked on the real shard's processed val split with the original's published baseline."""

import shutil

import dagster as dg
import pytest

from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.defs.assets.model_evaluation import EvaluationConfig, model_evaluation
from droughtwatch_assets.defs.deployment import local_resources
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.predict import predict_processed
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets_tests.conftest import DATA_ASSETS, assets_named, run_config


@pytest.fixture
def evaluation_inputs(tmp_path, real_folder, reference_onnx):
    raw = {"source": "folder", "folder": str(real_folder)}
    data_dir = tmp_path / "data"
    result = dg.materialize(
        assets_named(*DATA_ASSETS),
        partition_key="baseline",
        resources=local_resources(data_dir),
        run_config=run_config(raw),
    )
    assert result.success
    (tmp_path / "onnx").mkdir()
    shutil.copyfile(reference_onnx, tmp_path / "onnx" / "model.onnx")
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
        probabilities, labels = predict_processed(onnx_model.onnx_path, processed.shards("val"), 4, tta=tta)
        assert output.value.accuracy == float((probabilities.argmax(axis=1) == labels).mean())
    assert EvaluationConfig().tta is False
