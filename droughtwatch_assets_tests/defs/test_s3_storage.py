"""The whole baseline chain stored in S3 (moto's server on loopback) through the same asset code."""

import boto3
import dagster as dg
import numpy as np
import onnxruntime as ort
import yaml

from droughtwatch_assets.definitions import assets
from droughtwatch_assets_tests.conftest import TINY_SAMPLE, run_config, run_predict, s3_resources


def test_baseline_chain_in_s3_publishes_and_skips_unchanged_uploads(tmp_path, s3_env, real_shard):
    config = run_config(TINY_SAMPLE, {"epochs": 1, "register_model": True, "model_name": "baseline", "tracker": "none"})

    def materialize(cache):
        result = dg.materialize(
            assets,
            partition_key="baseline",
            resources=s3_resources(cache, bucket="dw-assets", prefix="runs", registry_bucket="dw-registry"),
            run_config=config,
        )
        assert result.success
        return result

    materialize(tmp_path / "cache-1")
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    objects = {o["Key"]: o for o in client.list_objects_v2(Bucket="dw-assets")["Contents"]}
    keys = sorted(objects)
    for prefix in (
        "runs/raw_tfrecords/__all__/",
        "runs/processed_tfrecords/baseline/",
        "runs/trained_model/baseline/",
        "runs/onnx_model/baseline/",
        "runs/predictions/baseline/",
    ):
        assert f"{prefix}CURRENT" in keys
        assert any(k.startswith(f"{prefix}versions/") for k in keys)
    assert any(k.startswith("runs/raw_tfrecords/__all__/objects/train/part-r-00000/") for k in keys)
    assert any(k.startswith("runs/values/published_model/baseline") for k in keys)  # S3PickleIOManager

    body = client.get_object(Bucket="dw-registry", Key="baseline/model.onnx")["Body"].read()
    session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 65, 65, 4), np.float32)})[0]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    published_config = yaml.safe_load(
        client.get_object(Bucket="dw-registry", Key="baseline/config.yaml")["Body"].read()
    )
    assert published_config["features"] == ["B2", "B3", "B4", "B5"] and published_config["learning_rate"] == 5e-4
    version = client.get_object(Bucket="dw-registry", Key="baseline/CURRENT")["Body"].read().decode()
    versioned = client.get_object(Bucket="dw-registry", Key=f"baseline/versions/{version}/model.onnx")["Body"].read()
    assert versioned == body and published_config["published_version"] == version
    predicted = run_predict("s3://dw-registry/baseline/", real_shard, tmp_path / "out.parquet")
    assert predicted.returncode == 0, predicted.stderr  # the features come from the published config
    assert "79 predictions from 81 records" in predicted.stdout

    materialize(tmp_path / "cache-2")  # an unchanged rerun from an empty local cache
    after = {o["Key"]: o for o in client.list_objects_v2(Bucket="dw-assets")["Contents"]}
    raw_shards = [k for k in objects if k.startswith("runs/raw_tfrecords/__all__/objects/") and "/part-r-" in k]
    assert raw_shards and all(after[k]["LastModified"] == objects[k]["LastModified"] for k in raw_shards)
    new_raw = [k for k in after if k.startswith("runs/raw_tfrecords/__all__/objects/") and k not in objects]
    assert new_raw == []


def test_s3_clients_take_the_projects_retry_and_timeout_settings_and_the_given_region_and_endpoint():
    from droughtwatch_assets.storage import s3_client
    from droughtwatch_assets.wiring.resources import S3Connection

    credentials = {"aws_access_key_id": "key", "aws_secret_access_key": "secret"}
    clients = [
        s3_client.client("http://127.0.0.1:9", "us-east-1", **credentials),
        s3_client.client(None, "eu-west-1", **credentials),
        # dagster-aws's S3PickleIOManager asks the resource for its client
        S3Connection(endpoint_url="http://127.0.0.1:9", region_name="eu-central-1", **credentials).get_client(),
    ]
    assert [c.meta.region_name for c in clients] == ["us-east-1", "eu-west-1", "eu-central-1"]
    assert [c.meta.endpoint_url for c in clients] == [
        "http://127.0.0.1:9",
        "https://s3.eu-west-1.amazonaws.com",
        "http://127.0.0.1:9",
    ]
    assert all(hasattr(c, "upload_file") for c in clients)  # boto3's transfer methods, which storage uses
    assert all(c.meta.config.connect_timeout == 5 for c in clients)  # the project's settings, not dagster-aws's
    assert all(c.meta.config.retries == {"mode": "standard", "total_max_attempts": 5} for c in clients)  # 4 retries
