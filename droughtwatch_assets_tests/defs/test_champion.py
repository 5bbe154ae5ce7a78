"""The leaderboard and the champion on the embedded sample, with real training."""

import json
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from droughtwatch_assets.defs.assets.champion import champion_is_sound
from droughtwatch_assets.model.card import front_matter
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets.wiring.resources import TrackingResource
from droughtwatch_assets_tests.conftest import (
    DATA_ASSETS,
    assets_named,
    run_config,
    run_predict,
    s3_resources,
    table_rows,
)

EVALUATED = (*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation")


def train(data_dir: Path, instance: dg.DagsterInstance, feature_set: str, epochs: int, seed: int = 0) -> None:
    result = dg.materialize(
        assets_named(*EVALUATED),
        partition_key=feature_set,
        instance=instance,
        resources=local_resources(data_dir),
        run_config=run_config(training={"epochs": epochs, "tracker": "none"}),
    )
    assert result.success


def compare(data_dir: Path, instance: dg.DagsterInstance, tracking: TrackingResource | None = None):
    resources = {**local_resources(data_dir), "tracking": tracking or TrackingResource(default_tracker="none")}
    return dg.materialize(
        [*assets_named(*EVALUATED, "leaderboard", "champion"), champion_is_sound],
        selection=["leaderboard", "champion"],
        instance=instance,
        resources=resources,
    )


@pytest.mark.integration
def test_the_better_feature_set_becomes_champion_and_a_worse_challenger_leaves_it(tmp_path, mlflow_server, real_shard):
    instance = dg.DagsterInstance.ephemeral()
    train(tmp_path, instance, "baseline", epochs=2)  # learns the sample's signal
    train(tmp_path, instance, "rgb", epochs=0)  # an untrained model: no signal (it predicts one class)
    experiment = f"champion-{time.time_ns()}"
    tracking = TrackingResource(
        default_tracker="mlflow", mlflow_tracking_uri=mlflow_server, mlflow_experiment=experiment
    )
    first = compare(tmp_path, instance, tracking)
    rows = {
        row["feature set"]: row
        for row in table_rows(first.asset_materializations_for_node("leaderboard")[0].metadata["leaderboard"])
    }
    assert {name: row["status"] for name, row in rows.items()} == {
        "baseline": "candidate",
        "rgb": "candidate",
        "ndvi": "not trained",
        "all": "not trained",
    }
    assert rows["baseline"]["val accuracy"] > rows["baseline"]["majority class rate"] > rows["rgb"]["val accuracy"]
    outcome = first.output_for_node("champion")
    assert outcome["promoted"] and outcome["champion"]["feature_set"] == "baseline"
    published = yaml.safe_load((tmp_path / "registry" / "champion" / "config.yaml").read_text())
    assert published["features"] == ["B2", "B3", "B4", "B5"] and published["champion"]["feature_set"] == "baseline"
    checks = {e.asset_check_key.name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks == {"champion_is_sound": True}
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("droughtwatch", "champion")
    assert (
        version.tags["feature_set"] == "baseline"
        and version.tags["data_version"] == published["champion"]["data_version"]
    )
    card = (tmp_path / "registry" / "champion" / "MODEL_CARD.md").read_text()
    front = front_matter(card)
    metrics = {m["name"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert front["model_md5"] == published["model_md5"] and front["model_name"] == "champion"
    assert metrics["val accuracy"] == pytest.approx(published["champion"]["val_accuracy"], abs=1e-6)
    assert first.asset_materializations_for_node("champion")[0].metadata["model_card"].value == card
    logged = client.list_artifacts(version.run_id, "model_card/champion")
    assert [a.path for a in logged] == ["model_card/champion/MODEL_CARD.md"]

    train(tmp_path, instance, "ndvi", epochs=0, seed=2)  # a worse challenger
    second = compare(tmp_path, instance)
    outcome = second.output_for_node("champion")
    assert not outcome["promoted"] and outcome["champion"]["feature_set"] == "baseline"
    assert len(outcome["history"]) == 1
    assert second.asset_materializations_for_node("champion")[0].metadata["previous_champion"].value == "baseline"

    predicted = run_predict(tmp_path / "registry" / "champion", real_shard, tmp_path / "out.parquet")
    assert predicted.returncode == 0, predicted.stderr  # the features come from the champion's config
    assert "79 predictions from 81 records" in predicted.stdout


def test_a_run_that_trains_one_feature_set_and_promotes_another_records_the_promotion_in_a_child_mlflow_run(
    tmp_path, mlflow_server
):
    """As in experiments_job: the champion step joins the MLflow run its own run's training opened, and the winner's
    record (another feature set's data version) must not overwrite the params the training logged."""
    instance = dg.DagsterInstance.ephemeral()
    train(tmp_path, instance, "baseline", epochs=2)
    experiment = f"promotion-{time.time_ns()}"
    tracking = TrackingResource(
        default_tracker="mlflow", mlflow_tracking_uri=mlflow_server, mlflow_experiment=experiment
    )
    result = dg.materialize(
        [*assets_named(*EVALUATED, "leaderboard", "champion"), champion_is_sound],
        partition_key="rgb",
        instance=instance,
        resources={**local_resources(tmp_path), "tracking": tracking},
        run_config=run_config(training={"epochs": 0, "tracker": "mlflow"}),  # untrained: baseline stays the best
    )
    assert result.success
    assert result.output_for_node("champion")["champion"]["feature_set"] == "baseline"
    assert [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY] == []

    client = MlflowClient(mlflow_server)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    [run] = client.search_runs([experiment_id], f"tags.dagster_run_id = '{result.run_id}'")
    [promotion] = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert (run.info.status, promotion.info.status) == ("FINISHED", "FINISHED")
    assert run.data.params["feature_set"] == "rgb" and promotion.data.params["feature_set"] == "baseline"
    assert run.data.params["data_version"] != promotion.data.params["data_version"]
    assert client.get_model_version_by_alias("droughtwatch", "champion").tags["feature_set"] == "baseline"


@pytest.mark.integration
def test_a_model_that_does_not_beat_the_majority_class_is_never_champion(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    train(tmp_path, instance, "rgb", epochs=0)
    result = compare(tmp_path, instance)
    outcome = result.output_for_node("champion")
    assert not outcome["promoted"] and "does not beat always predicting the majority class" in outcome["reason"]
    assert not (tmp_path / "registry" / "champion").exists()


@pytest.mark.integration
def test_in_s3_the_champion_is_published_as_a_pair_an_inference_client_can_use(tmp_path, s3_env, real_shard):
    import boto3

    instance = dg.DagsterInstance.ephemeral()
    resources = s3_resources(tmp_path / "cache", bucket="dw-champion", registry_bucket="dw-champion-models")
    trained = dg.materialize(
        assets_named(*EVALUATED),
        partition_key="baseline",
        instance=instance,
        resources=resources,
        run_config=run_config(training={"epochs": 2, "tracker": "none"}),
    )
    assert trained.success
    result = dg.materialize(
        [*assets_named(*EVALUATED, "leaderboard", "champion"), champion_is_sound],
        selection=["leaderboard", "champion"],
        instance=instance,
        resources={**resources, "tracking": TrackingResource(default_tracker="none")},
    )
    assert result.output_for_node("champion")["promoted"]
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    version = client.get_object(Bucket="dw-champion-models", Key="champion/CURRENT")["Body"].read().decode()
    config = yaml.safe_load(
        client.get_object(Bucket="dw-champion-models", Key=f"champion/versions/{version}/config.yaml")["Body"].read()
    )
    assert config["champion"]["feature_set"] == "baseline" and config["features"] == ["B2", "B3", "B4", "B5"]
    key = f"champion/versions/{version}/drift_reference.json"  # the training data's, published with the model
    reference = json.loads(client.get_object(Bucket="dw-champion-models", Key=key)["Body"].read())
    assert reference["features"] == config["features"] and reference["data_version"] == config["data_version"]
    evaluation = trained.output_for_node("model_evaluation")  # the champion's own figures on val
    assert reference["predicted_class_rates"] == evaluation.predicted_class_rates
    assert sum(reference["predicted_class_rates"]) == pytest.approx(1)
    predicted = run_predict("s3://dw-champion-models/champion/", real_shard, tmp_path / "out.parquet")
    assert predicted.returncode == 0, predicted.stderr
    assert "79 predictions from 81 records" in predicted.stdout
    assert "class drift against the model's predicted class rates on val: chi-square " in predicted.stdout
