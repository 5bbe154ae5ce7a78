"""What the data checks and the steps after processing do with values or splits they cannot use."""

import os
import subprocess

import dagster as dg
import onnxruntime as ort
import pytest
import yaml

from droughtwatch_assets.core import features
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets_tests.conftest import (
    DATA_ASSETS,
    REPO_ROOT,
    TINY_SAMPLE,
    assets_named,
    checks_named,
    materialize_command,
    run_config,
    write_blank_shard,
)


def test_the_blocking_value_check_fails_on_out_of_range_values_and_nothing_downstream_runs(tmp_path, monkeypatch):
    # An NDVI formula gone wrong (three times too large) stands for any bug that puts values out of range.
    ndvi = features.INDICES["NDVI"]
    monkeypatch.setitem(
        features.INDICES, "NDVI", features.Index("NDVI", ndvi.bands, lambda b: 3 * ndvi.compute(b), ndvi.value_range)
    )
    selection = [*assets_named(*DATA_ASSETS, "trained_model"), *checks_named("processed_values_are_valid")]
    result = dg.materialize(
        selection,
        partition_key="ndvi",
        resources=local_resources(tmp_path),
        run_config=run_config(
            TINY_SAMPLE, {"epochs": 1, "tracker": "none"}, {"workers": 1}
        ),  # the patched formula lives in this process
        raise_on_error=False,
    )
    check = next(
        e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "processed_values_are_valid"
    )
    assert check.passed is False
    assert any(
        p.startswith("NDVI: values in [") and "outside [-1.0, 1.0]" in p for p in check.metadata["problems"].value
    )
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "trained_model" not in started and not (tmp_path / "trained_model").exists()


def test_an_all_blank_val_shard_among_others_is_handled(tmp_path, real_folder):
    write_blank_shard(real_folder / "val" / "part-r-00000")  # sorts first: the parity batch must look further
    chain = assets_named(*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation", "predictions")
    result = dg.materialize(
        chain,
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config({"source": "folder", "folder": str(real_folder)}, {"epochs": 1, "tracker": "none"}),
    )
    assert result.success
    processed = ShardedDataset.open(LocalArtifactStore(tmp_path).current(("processed_tfrecords", "baseline")))
    assert [s.records for s in processed.manifest.splits["val"].shards] == [0, 79]
    onnx_meta = result.asset_materializations_for_node("onnx_model")[0].metadata
    assert onnx_meta["parity_batch"].value == 64 and onnx_meta["parity_split"].value == "val"
    assert result.asset_materializations_for_node("model_evaluation")[0].metadata["val_records"].value == 79


@pytest.mark.parametrize("split, task", [("val", "validate"), ("train", "fit")])
def test_a_split_with_no_records_fails_training_clearly_and_is_not_retried(split, task, tmp_path, real_folder):
    (real_folder / split / "part-r-00012").unlink()
    write_blank_shard(real_folder / split / "part-r-00000")
    chain = assets_named(*DATA_ASSETS, "trained_model")
    result = dg.materialize(
        chain,
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config({"source": "folder", "folder": str(real_folder)}, {"epochs": 1, "tracker": "none"}),
        raise_on_error=False,
    )
    message = str(result.failure_data_for_node("trained_model").error)
    assert f"the processed {split} split has no records" in message and f"nothing to {task} on" in message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_an_untrained_model_on_an_all_blank_val_split_exports_and_refuses_evaluation(tmp_path, real_folder):
    (real_folder / "val" / "part-r-00012").unlink()
    write_blank_shard(real_folder / "val" / "part-r-00000")
    chain = assets_named(*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation")
    result = dg.materialize(
        chain,
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config({"source": "folder", "folder": str(real_folder)}, {"epochs": 0, "tracker": "none"}),
        raise_on_error=False,
    )
    onnx_meta = result.asset_materializations_for_node("onnx_model")[0].metadata
    assert onnx_meta["parity_split"].value == "train" and onnx_meta["parity_batch"].value == 64
    message = str(result.failure_data_for_node("model_evaluation").error)
    assert "has no val records" in message and "nothing to evaluate on" in message


@pytest.mark.integration
def test_a_new_line_in_the_feature_set_file_is_a_new_partition_that_materialises(tmp_path):
    sets = yaml.safe_load(features.FEATURE_SETS_FILE.read_text())
    sets["swir"] = ["B6", "B7", "NDMI"]
    (tmp_path / "feature_sets.yaml").write_text(yaml.safe_dump(sets))
    env = {
        **os.environ,
        "DROUGHTWATCH_FEATURE_SETS": str(tmp_path / "feature_sets.yaml"),
        "DAGSTER_HOME": str(tmp_path),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }
    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}, "trained_model": {"config": {"epochs": 1}}}}
    command = materialize_command("raw_tfrecords,processed_tfrecords,trained_model,onnx_model", "swir", config)
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    store = LocalArtifactStore(tmp_path / "data")
    processed = ShardedDataset.open(store.current(("processed_tfrecords", "swir")))
    assert processed.features == ("B6", "B7", "NDMI") and processed.manifest.image_shape == [65, 65, 3]
    session = ort.InferenceSession(str(store.current(("onnx_model", "swir")) / "model.onnx"))
    assert session.get_inputs()[0].shape[1:] == [65, 65, 3]
