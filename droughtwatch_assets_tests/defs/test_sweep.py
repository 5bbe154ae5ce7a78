"""A sweep inside one partition: every combination trained, the best on a hold-out carved from train kept, each
combination tracked as its own run (MLflow child runs on a real server, W&B offline runs in one group)."""

import glob
import os
import subprocess
import time

import dagster as dg
import keras
import pytest
import yaml
from mlflow import MlflowClient

from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.model.network import compile_model
from droughtwatch_assets.model.sweep import holdout_mask
from droughtwatch_assets.model.train import evaluate_loss_accuracy, tfrecord_dataset
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets.wiring.resources import TrackingResource
from droughtwatch_assets_tests.conftest import (
    REPO_ROOT,
    TINY_SAMPLE,
    TRAINING_CHAIN,
    assets_named,
    materialize_command,
    run_config,
    table_rows,
)
from droughtwatch_assets_tests.defs.test_tracking import wandb_records

GRID = {"learning_rate": [1e-3, 1e-4], "epochs": [1, 2]}


def sweep(data_dir, tracking: TrackingResource, training: dict):
    return dg.materialize(
        assets_named(*TRAINING_CHAIN),
        partition_key="baseline",
        resources={**local_resources(data_dir), "tracking": tracking},
        run_config=run_config(TINY_SAMPLE, training),
    )


@pytest.mark.integration
def test_every_combination_is_trained_and_the_best_on_a_holdout_from_train_is_kept(tmp_path):
    result = sweep(tmp_path, TrackingResource(default_tracker="none"), {"sweep": GRID})
    metadata = result.asset_materializations_for_node("trained_model")[0].metadata
    rows = table_rows(metadata["sweep"])
    assert [(r["learning_rate"], r["epochs"]) for r in rows] == [(1e-3, 1), (1e-3, 2), (1e-4, 1), (1e-4, 2)]
    [kept] = [r for r in rows if r["selected"]]
    assert kept["holdout_accuracy"] == max(r["holdout_accuracy"] for r in rows)
    assert metadata["selected_trial"].value == kept["trial"]
    assert (metadata["learning_rate"].value, metadata["epochs"].value) == (kept["learning_rate"], kept["epochs"])

    model_dir = tmp_path / "trained_model" / "baseline" / "current"
    config = yaml.safe_load((model_dir / "training_config.yaml").read_text())
    assert (config["learning_rate"], config["batch_size"], config["epochs"]) == (
        kept["learning_rate"],
        64,
        kept["epochs"],
    )
    assert config["sweep"]["combinations"] == 4 and config["sweep"]["selected_trial"] == kept["trial"]

    # the hold-out is the seeded share of *train*: the kept model scores there exactly what the sweep recorded
    processed = ShardedDataset.open(tmp_path / "processed_tfrecords" / "baseline" / "current")
    model = compile_model(keras.saving.load_model(model_dir / "model.keras", compile=False), kept["learning_rate"])
    mask = holdout_mask(processed.records("train"), 0.2, 0)
    holdout = tfrecord_dataset(processed.shards("train"), 4, 256, select=mask)
    assert model.evaluate(holdout, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        kept["holdout_accuracy"], abs=1e-4
    )
    # and val, never used to choose, is scored once, on the kept model
    _, val_accuracy = evaluate_loss_accuracy(model, processed.shards("val"), 4, processed.records("val"))
    assert metadata["val_accuracy"].value == pytest.approx(val_accuracy, abs=1e-4)
    # the ONNX model's config, which publishing copies, names the chosen combination too
    exported = yaml.safe_load((tmp_path / "onnx_model" / "baseline" / "current" / "config.yaml").read_text())
    assert exported["learning_rate"] == kept["learning_rate"] and exported["epochs"] == kept["epochs"]


@pytest.mark.integration
def test_each_combination_is_an_mlflow_child_run_of_the_training_run(tmp_path, mlflow_server):
    """Through `dagster asset materialize` (a process per step): onnx_model, in its own process, must find the
    training run by its Dagster run id, not one of the sweep's child runs."""
    experiment = f"sweep-{time.time_ns()}"
    (tmp_path / "home").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "mlflow",
        "MLFLOW_TRACKING_URI": mlflow_server,
        "DROUGHTWATCH_MLFLOW_EXPERIMENT": experiment,
    }
    config = {
        "ops": {
            "raw_tfrecords": {"config": TINY_SAMPLE},
            "trained_model": {"config": {"sweep": {"learning_rate": [1e-3, 1e-4], "epochs": [1]}}},
        }
    }
    command = materialize_command(",".join(TRAINING_CHAIN), "baseline", config)
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    [run] = instance.get_runs()
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_model"))
    parent_id = event.asset_materialization.metadata["mlflow_run_id"].value

    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 2
    assert sorted(float(c.data.params["learning_rate"]) for c in children) == [1e-4, 1e-3]
    assert sorted(c.data.tags["selected"] for c in children) == ["false", "true"]
    assert all(c.info.status == "FINISHED" and "holdout_accuracy" in c.data.metrics for c in children)
    [chosen] = [c for c in children if c.data.tags["selected"] == "true"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["dagster_run_id"] == run.run_id
    assert parent.data.params["learning_rate"] == chosen.data.params["learning_rate"]
    assert {"val_accuracy", "holdout_accuracy"} <= set(parent.data.metrics)
    logged = {m.name for m in client.search_logged_models([experiment_id]) if m.source_run_id == parent_id}
    assert "onnx" in logged  # the export joined the training run


@pytest.mark.integration
def test_each_combination_is_a_wandb_run_in_the_training_runs_group(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracking = TrackingResource(
        default_tracker="wandb", wandb_project="droughtwatch-test", wandb_dir=str(tmp_path / "wandb")
    )
    result = sweep(tmp_path, tracking, {"sweep": {"learning_rate": [1e-3, 1e-4], "epochs": [1]}})
    metadata = result.asset_materializations_for_node("trained_model")[0].metadata
    training_dir = metadata["wandb_run_dir"].value
    runs = {
        run_dir: wandb_records(run_dir, "run")[0]
        for run_dir in glob.glob(f"{tmp_path}/**/offline-run-*", recursive=True)
    }
    group = runs[training_dir].run_group
    assert group.startswith("baseline-") and result.run_id.startswith(group.removeprefix("baseline-"))
    trials = [run for run in runs.values() if run.job_type == "sweep"]
    assert len(trials) == 2 and {run.run_group for run in trials} == {group}
