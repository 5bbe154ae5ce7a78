"""Experiment tracking against the real backends: an `mlflow server` on loopback, and W&B offline."""

import glob
import json
import logging
import struct
import time
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient
from wandb.proto import wandb_internal_pb2

from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets.wiring.resources import TrackingResource
from droughtwatch_assets_tests.conftest import TINY_SAMPLE, TRAINING_CHAIN, assets_named, free_port, run_config


def materialize(data_dir, training: dict, raise_on_error: bool = True, instance=None, **tracking):
    return dg.materialize(
        assets_named(*TRAINING_CHAIN),
        partition_key="baseline",
        resources={
            **local_resources(data_dir),
            "tracking": TrackingResource(**{"wandb_dir": str(data_dir / "wandb"), **tracking}),
        },
        run_config=run_config(TINY_SAMPLE, {"epochs": 2, **training}),
        raise_on_error=raise_on_error,
        instance=instance,
    )


@pytest.fixture
def mlflow_env(mlflow_server):
    return {
        "default_tracker": "mlflow",
        "mlflow_tracking_uri": mlflow_server,
        "mlflow_experiment": f"test-{time.time_ns()}",
    }


def test_mlflow_run_has_metrics_params_artifacts_and_a_registered_version(tmp_path, mlflow_env):
    model_name = f"baseline-{time.time_ns()}"
    result = materialize(
        tmp_path, {"tracker": "mlflow", "register_model": True, "model_name": model_name}, **mlflow_env
    )
    metadata = result.asset_materializations_for_node("trained_model")[0].metadata
    run_id = metadata["mlflow_run_id"].value
    assert metadata["mlflow_run_url"].value.startswith(f"{mlflow_env['mlflow_tracking_uri']}/#/experiments/")

    client = MlflowClient(mlflow_env["mlflow_tracking_uri"])
    run = client.get_run(run_id)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "pr_0_at_0.50", "val_re_3_at_0.50"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [0, 1]
    params = run.data.params
    assert params["learning_rate"] == "0.0005" and params["batch_size"] == "64" and params["epochs"] == "2"
    assert json.loads(params["features"]) == ["B2", "B3", "B4", "B5"] and params["feature_set"] == "baseline"
    assert params["dagster_run_id"] == result.run_id and len(params["data_version"]) == 16
    assert run.data.tags["dagster_run_id"] == result.run_id

    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "keras")
    }
    assert "keras/model.keras" in artifacts
    curves = json.loads(Path(client.download_artifacts(run_id, "pr_re/epoch_002.json", str(tmp_path))).read_text())
    assert len(curves["pr_0"]) == 99 and len(curves["val_re_3"]) == 99
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert {m.name for m in logged} >= {"onnx", "registered_onnx"}

    [version] = client.search_model_versions(f"name='{model_name}'")
    assert version.run_id == run_id
    assert version.tags["published_uri"].endswith(f"registry/{model_name}/model.onnx")


def test_unregistered_configurations_are_not_registered(tmp_path, mlflow_env):
    model_name = f"dummy-{time.time_ns()}"
    result = materialize(
        tmp_path, {"tracker": "mlflow", "register_model": False, "model_name": model_name, "epochs": 0}, **mlflow_env
    )
    assert result.asset_materializations_for_node("published_model")[0].metadata["published"].value is False
    assert (
        MlflowClient(mlflow_env["mlflow_tracking_uri"]).search_registered_models(filter_string=f"name='{model_name}'")
        == []
    )


def test_an_unreachable_mlflow_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = materialize(
        tmp_path,
        {"tracker": "mlflow"},
        raise_on_error=False,
        mlflow_tracking_uri=f"http://user:secret@{uri.removeprefix('http://')}",
    )
    assert not result.success and time.monotonic() - started < 120
    message = str(result.failure_data_for_node("trained_model").error)
    assert f"MLflow tracker at {uri} is unreachable" in message and "tracking_required" in message
    assert "secret" not in message  # credentials in the URI stay out of messages


@pytest.mark.integration
def test_tracking_required_false_trains_and_warns(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(
        tmp_path, {"tracker": "mlflow", "tracking_required": False}, instance=instance, mlflow_tracking_uri=uri
    )
    assert result.success
    assert result.asset_materializations_for_node("trained_model")[0].metadata["tracker"].value == "none"
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and entry.step_key == "trained_model"
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"MLflow tracker at {uri} is unreachable (")
    assert warnings[0].endswith(
        "Connection refused); training without experiment tracking (tracking_required is false)"
    )


def wandb_records(run_dir: str, record_type: str) -> list:
    """The records of one type in an offline run's .wandb file (a leveldb-style log of protobuf records)."""
    data = Path(glob.glob(f"{run_dir}/*.wandb")[0]).read_bytes()
    found, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            if record.WhichOneof("record_type") == record_type:
                found.append(getattr(record, record_type))
    return found


def wandb_history(run_dir: str) -> list[dict]:
    """History rows of an offline run."""
    return [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in history.item}
        for history in wandb_records(run_dir, "history")
    ]


@pytest.mark.integration
def test_wandb_runs_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    result = materialize(
        tmp_path,
        {"tracker": "wandb", "register_model": True, "model_name": "baseline"},
        wandb_project="droughtwatch-test",
    )
    metadata = result.asset_materializations_for_node("trained_model")[0].metadata
    run_dir = metadata["wandb_run_dir"].value
    assert Path(run_dir).name.startswith("offline-run-") and Path(run_dir).is_relative_to(tmp_path)
    assert metadata["wandb_sync"].value == f"wandb sync {run_dir}"
    history = [row for row in wandb_history(run_dir) if "loss" in row]
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "pr_0", "re_3", "val_pr_2"} <= set(history[-1])
    assert len(history[-1]["val_pr_2"]) == 99
    published = result.asset_materializations_for_node("published_model")[0].metadata
    assert Path(published["wandb_run_dir"].value).is_dir()  # the publish run with the model reference
