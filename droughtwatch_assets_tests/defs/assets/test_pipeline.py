"""The asset chain through Dagster's materialize(), into a temporary data directory."""

import shutil

import dagster as dg
import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
import yaml

from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.definitions import assets
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets_tests.conftest import DATA_ASSETS, TINY_SAMPLE, assets_named, run_config, table_rows


def test_baseline_chain_on_a_tiny_sample(tmp_path):
    result = dg.materialize(
        assets,
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config(TINY_SAMPLE, {"epochs": 1, "model_name": "tiny"}),
    )
    assert result.success
    store = LocalArtifactStore(tmp_path)
    raw = ShardedDataset.open(store.current(("raw_tfrecords", "__all__")))
    processed = ShardedDataset.open(store.current(("processed_tfrecords", "baseline")))
    assert raw.records("train") == 192 and raw.records("val") == 64
    vetoed = processed.manifest.splits["train"].vetoed
    assert processed.records("train") == 192 - vetoed
    assert processed.features == ("B2", "B3", "B4", "B5")
    assert (store.current(("trained_model", "baseline")) / "model.keras").exists()
    onnx_dir = store.current(("onnx_model", "baseline"))
    onnx.checker.check_model(str(onnx_dir / "model.onnx"))
    config = yaml.safe_load((onnx_dir / "config.yaml").read_text())
    assert config["model_name"] == "tiny" and config["features"] == ["B2", "B3", "B4", "B5"] and config["epochs"] == 1
    raw_meta = result.asset_materializations_for_node("raw_tfrecords")[0].metadata
    assert raw_meta["train_records"].value == 192
    shards = table_rows(raw_meta["shards"])
    assert [(s["split"], s["records"]) for s in shards] == [("train", 128), ("train", 64), ("val", 64)]
    assert all(len(s["md5"]) == 32 for s in shards)
    balance = {row["split"]: row for row in table_rows(raw_meta["class_balance"])}
    assert sum(balance["train"][f"class {k}"] for k in range(4)) == 192
    model_meta = result.asset_materializations_for_node("trained_model")[0].metadata
    assert model_meta["parameters"].value == 257_022
    history = table_rows(model_meta["history"])
    assert [row["epoch"] for row in history] == [1]
    onnx_meta = result.asset_materializations_for_node("onnx_model")[0].metadata
    assert onnx_meta["max_abs_diff_vs_keras"].value <= 1e-5 and onnx_meta["opset"].value >= 13
    table = pq.read_table(store.current(("predictions", "baseline")) / "predictions.parquet")
    assert table.num_rows == processed.records("val")
    labels, predicted = table.column("label").to_numpy(), table.column("P_label").to_numpy()
    assert set(labels) <= {0, 1, 2, 3}
    probabilities = np.stack([table.column(f"P_{k}").to_numpy() for k in range(4)], axis=1)
    assert (predicted == probabilities.argmax(axis=1)).all()
    predictions_meta = result.asset_materializations_for_node("predictions")[0].metadata
    distribution = table_rows(predictions_meta["prediction_distribution"])
    assert sum(row["predicted"] for row in distribution) == table.num_rows
    assert abs(sum(row["training share"] for row in distribution) - 1) < 1e-3
    # the model's own val records, tested against its own predicted class rates on val: the same classes, no drift
    shares = [float(np.mean(predicted == k)) for k in range(4)]
    assert [row["expected share"] for row in distribution] == pytest.approx(shares, abs=5e-5)
    assert predictions_meta["class_drift_against"].value == "the model's predicted class rates on val"
    assert predictions_meta["class_drift_chi_square"].value == pytest.approx(0, abs=1e-9)
    assert predictions_meta["class_drift_p_value"].value == pytest.approx(1)
    png = "](data:image/png;base64,iVBORw0KGgo"  # a PNG embedded in markdown
    assert png in raw_meta["preview"].value and png in model_meta["training_curves"].value
    processed_meta = result.asset_materializations_for_node("processed_tfrecords")[0].metadata
    assert png in processed_meta["preview"].value
    stats = table_rows(processed_meta["feature_stats"])
    assert [row["feature"] for row in stats] == ["B2", "B3", "B4", "B5"]
    assert all(0 <= row["min"] <= row["mean"] <= row["max"] <= 1 for row in stats)
    evaluation = result.asset_materializations_for_node("model_evaluation")[0].metadata
    assert png in evaluation["confusion_matrix_plot"].value and png in evaluation["pr_curves"].value
    assert evaluation["val_records"].value == processed.records("val")
    assert evaluation["predicted_class_rates"].value == pytest.approx(shares, abs=5e-5)
    # the figures again from the predictions of the same model on the same val records, by their definitions
    confusion = [[int(np.sum((labels == t) & (predicted == p))) for p in range(4)] for t in range(4)]
    rows = table_rows(evaluation["confusion_matrix"])
    assert [[row["true class"]] + [row[f"predicted {k}"] for k in range(4)] for row in rows] == [
        [t, *confusion[t]] for t in range(4)
    ]
    hits, n = np.diag(confusion), len(labels)
    called, support = np.sum(confusion, axis=0), np.sum(confusion, axis=1)
    precision = [hits[k] / called[k] if called[k] else 0.0 for k in range(4)]
    recall = [hits[k] / support[k] if support[k] else 0.0 for k in range(4)]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
    per_class = table_rows(evaluation["per_class"])
    assert [row["class"] for row in per_class] == [0, 1, 2, 3]
    assert [row["support"] for row in per_class] == support.tolist()
    assert [row["precision"] for row in per_class] == pytest.approx(precision, abs=5e-5)
    assert [row["recall"] for row in per_class] == pytest.approx(recall, abs=5e-5)
    assert [row["F1"] for row in per_class] == pytest.approx(f1, abs=5e-5)
    assert evaluation["macro_f1"].value == pytest.approx(sum(f1) / 4)
    assert evaluation["val_accuracy"].value == pytest.approx(hits.sum() / n)
    assert evaluation["majority_class_rate"].value == pytest.approx(max(np.sum(labels == k) for k in range(4)) / n)
    assert history[0]["val_accuracy"] == pytest.approx(hits.sum() / n, abs=5e-5)  # Keras' own count, same model


@pytest.mark.integration
def test_default_sample_trains_a_model_that_beats_the_majority_class(tmp_path):
    chain = assets_named(*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation")
    result = dg.materialize(
        chain,
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config(training={"tracker": "none"}),
    )
    assert result.success
    metadata = result.asset_materializations_for_node("model_evaluation")[0].metadata
    majority = metadata["majority_class_rate"].value
    assert 0.5 < majority < 0.7
    assert metadata["val_accuracy"].value > majority + 0.05


def test_real_shards_from_a_folder(tmp_path, real_folder):
    raw = {"source": "folder", "folder": str(real_folder)}
    result = dg.materialize(
        assets_named(*DATA_ASSETS),
        partition_key="all",
        resources=local_resources(tmp_path / "data"),
        run_config=run_config(raw),
    )
    assert result.success
    processed = ShardedDataset.open(LocalArtifactStore(tmp_path / "data").current(("processed_tfrecords", "all")))
    assert processed.records("val") == 79 and processed.manifest.splits["val"].vetoed == 2
    assert processed.manifest.splits["val"].shards[0].vetoed_indices == [39, 46]
    assert len(processed.features) == 14


def test_a_stray_non_tfrecord_file_fails_naming_file_and_record(tmp_path, real_folder):
    (real_folder / "train" / "part-r-00099").write_text("not a shard")
    result = dg.materialize(
        assets_named(*DATA_ASSETS),
        partition_key="baseline",
        resources=local_resources(tmp_path / "data"),
        run_config=run_config({"source": "folder", "folder": str(real_folder)}),
        raise_on_error=False,
    )
    assert not result.success
    message = str(result.failure_data_for_node("raw_tfrecords").error)
    assert "part-r-00099: record 0" in message


def test_a_band_of_the_wrong_length_fails_processing_naming_file_and_record(tmp_path, real_folder):
    from droughtwatch_assets.core.features import BANDS
    from droughtwatch_assets.records.tfrecord import encode_example
    from droughtwatch_assets.records.writer import RecordWriter

    with RecordWriter(real_folder / "val" / "part-r-00013") as writer:
        writer.write(encode_example({**{b: bytes(4225) for b in BANDS}, "label": 0}))
        writer.write(encode_example({**{b: bytes(4225) for b in BANDS}, "B5": bytes(65), "label": 2}))
    result = dg.materialize(
        assets_named(*DATA_ASSETS),
        partition_key="baseline",
        resources=local_resources(tmp_path / "data"),
        run_config=run_config({"source": "folder", "folder": str(real_folder)}),
        raise_on_error=False,
    )
    assert not result.success
    message = str(result.failure_data_for_node("processed_tfrecords").error)
    assert "part-r-00013: record 1: band B5 has 65 bytes" in message
    with pytest.raises(FileNotFoundError):  # nothing half-written became current
        LocalArtifactStore(tmp_path / "data").current(("processed_tfrecords", "baseline"))
    shutil.rmtree(real_folder)
