"""The S3 raw source end to end, as on Kubernetes: raw shards read from S3, assets stored in S3 (moto's server
on loopback); the sensor sees a new shard, and the run it asks for processes only that shard."""

import uuid

import boto3
import dagster as dg

from droughtwatch_assets.definitions import assets
from droughtwatch_assets.defs.jobs import configuration_jobs
from droughtwatch_assets.defs.sensors import CHANGED_TAG, TRIGGER_TAG, new_raw_shards
from droughtwatch_assets_tests.conftest import DATA_ASSETS, assets_named, s3_resources


def test_raw_and_processed_from_the_s3_source_and_a_new_shard_processed_alone(tmp_path, s3_env, real_shard):
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    raw_bucket = f"raw-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=raw_bucket)
    data = real_shard.read_bytes()
    for key in ("landsat/train/part-r-00000", "landsat/train/part-r-00001", "landsat/val/part-r-00000"):
        client.put_object(Bucket=raw_bucket, Key=key, Body=data)
    uri = f"s3://{raw_bucket}/landsat"
    resources = s3_resources(tmp_path / "cache", bucket="dw-raw-e2e", raw_source="s3", raw_uri=uri)
    instance = dg.DagsterInstance.ephemeral()

    def materialize(tags=None):
        result = dg.materialize(
            assets_named(*DATA_ASSETS),
            partition_key="baseline",
            resources=resources,
            instance=instance,
            tags=tags,
        )
        assert result.success
        raw = result.asset_materializations_for_node("raw_tfrecords")[0].metadata
        processed = result.asset_materializations_for_node("processed_tfrecords")[0].metadata
        logs = [e.message for e in instance.all_logs(result.run_id) if "unchanged (ETag)" in (e.message or "")]
        return raw, processed, logs

    raw, processed, logs = materialize()
    assert logs == [f"{uri}: 3 shards, 3 downloaded, 0 unchanged (ETag) from the cache"]
    assert processed["shards_reused"].value == 0
    assert (raw["train_records"].value, raw["val_records"].value) == (162, 81)
    stored = [o["Key"] for o in client.list_objects_v2(Bucket="dw-raw-e2e")["Contents"]]
    assert any(k.startswith("droughtwatch/raw_tfrecords/__all__/objects/val/part-r-00000/") for k in stored)

    # The sensor starts watching (raw_tfrecords is materialised on this instance), then a shard arrives.
    defs = dg.Definitions(assets=assets, jobs=list(configuration_jobs.values()), resources=resources)
    cursor = None

    def tick():
        nonlocal cursor
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources={"raw_source": resources["raw_source"]}
        ) as context:
            result = new_raw_shards.evaluate_tick(context)
        cursor = result.cursor
        return result

    assert tick().skip_message.startswith("first tick: watching 3 shards")
    client.put_object(Bucket=raw_bucket, Key="landsat/train/part-r-00002", Body=data)
    assert tick().run_requests == []
    (request,) = tick().run_requests
    assert request.tags[CHANGED_TAG] == "train/part-r-00002"

    raw, processed, logs = materialize(request.tags)
    assert logs == [f"{uri}: 4 shards, 1 downloaded, 3 unchanged (ETag) from the cache"]
    assert (processed["shards_processed"].value, processed["shards_reused"].value) == (1, 3)
    assert raw["train_records"].value == 243
    assert instance.get_runs()[0].tags[TRIGGER_TAG] == "new_raw_shards"
    assert tick().skip_message == "no change: 4 shards watched"
