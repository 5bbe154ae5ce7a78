"""Faults and data versions, through the real asset code and `dagster asset materialize`."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.data.sample import SampleSpec, write_sample
from droughtwatch_assets.definitions import assets
from droughtwatch_assets.defs.checks import asset_checks
from droughtwatch_assets.records.tfrecord import read_processed
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.wiring.deployment import build_resources, local_resources
from droughtwatch_assets_tests.conftest import (
    DATA_ASSETS,
    REPO_ROOT,
    TINY_SAMPLE,
    assets_named,
    free_port,
    materialize_command,
    run_config,
    s3_resources,
)


def run_until_then_kill(command: list, env: dict, started, check_stopped=None) -> None:
    """Start a command in its own process group; once `started()` holds, freeze the whole group (SIGSTOP),
    let `check_stopped()` confirm the moment it was caught in, then SIGKILL it."""
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not started() and process.poll() is None:
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGSTOP)
        if check_stopped:
            check_stopped()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def materialize_data_command(seed: int, records: int = 8000, per_shard: int = 500) -> list:
    """raw + processed on a generated sample, with the default processing config."""
    return materialize_command(
        "raw_tfrecords,processed_tfrecords",
        "baseline",
        {
            "ops": {
                "raw_tfrecords": {
                    "config": {
                        "sample_train_records": records,
                        "sample_records_per_shard": per_shard,
                        "sample_seed": seed,
                    }
                }
            }
        },
    )


def run_to_the_end(command: list, env: dict) -> None:
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


@pytest.mark.integration
def test_a_run_killed_while_uploading_to_s3_leaves_the_previous_version_current(tmp_path, s3_env):
    import boto3

    env = {
        **os.environ,
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "cache"),
        "DAGSTER_HOME": str(tmp_path),
        "DROUGHTWATCH_TRACKER": "none",
        "DROUGHTWATCH_DEPLOYMENT": "s3",
        "DROUGHTWATCH_S3_BUCKET": "dw-kill",
        "DROUGHTWATCH_S3_CREATE_BUCKET": "true",
    }
    run_to_the_end(materialize_data_command(seed=0, records=6000, per_shard=1000), env)
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    current_key = "droughtwatch/processed_tfrecords/baseline/CURRENT"
    before = client.get_object(Bucket="dw-kill", Key=current_key)["Body"].read()

    def processed_objects() -> int:
        listing = client.list_objects_v2(Bucket="dw-kill", Prefix="droughtwatch/processed_tfrecords/baseline/objects/")
        return listing.get("KeyCount", 0)

    known = processed_objects()
    command = materialize_data_command(seed=5, records=6000, per_shard=1000)  # new data: new objects to upload
    run_until_then_kill(command, env, lambda: processed_objects() > known)
    assert client.get_object(Bucket="dw-kill", Key=current_key)["Body"].read() == before
    from droughtwatch_assets.storage import s3_client as s3
    from droughtwatch_assets.storage.s3 import S3ArtifactStore

    reader = S3ArtifactStore(
        s3.client(
            s3_env["AWS_ENDPOINT_URL"], "us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        ),
        "dw-kill",
        "droughtwatch",
        tmp_path / "reader",
    )
    dataset = ShardedDataset.open(reader.current(("processed_tfrecords", "baseline")))
    assert dataset.manifest.raw_data_version and len(read_processed(dataset.shards("val")[0], 4).labels) > 0
    run_to_the_end(command, env)  # a rerun succeeds
    assert client.get_object(Bucket="dw-kill", Key=current_key)["Body"].read() != before


@pytest.mark.integration
def test_a_run_killed_while_processing_writes_leaves_the_previous_version_current(tmp_path):
    data = tmp_path / "data"
    env = {
        **os.environ,
        "DROUGHTWATCH_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path),
        "DROUGHTWATCH_TRACKER": "none",
    }
    run_to_the_end(materialize_data_command(seed=0), env)
    store = LocalArtifactStore(data)
    raw_before = store.current(("raw_tfrecords", "__all__"))
    before = store.current(("processed_tfrecords", "baseline"))

    def processing_is_writing() -> bool:
        # the new raw version is committed (so every staging shard now is a processed one being written)
        return store.location(("raw_tfrecords", "__all__")).joinpath("current").resolve() != raw_before and any(
            (data / ".staging").glob("*/*/part-r-*")
        )

    def caught_mid_write() -> None:
        staging = [p for p in (data / ".staging").iterdir() if any(p.glob("*/part-r-*"))]
        assert staging and not any((p / "manifest.json").exists() for p in staging), "processing had finished"
        assert store.current(("processed_tfrecords", "baseline")) == before

    command = materialize_data_command(seed=5)  # new data, so every shard is processed again
    run_until_then_kill(command, env, processing_is_writing, caught_mid_write)
    after = store.current(("processed_tfrecords", "baseline"))
    assert after == before
    dataset = ShardedDataset.open(after)
    first = dataset.manifest.splits["train"].shards[0]
    assert len(read_processed(dataset.shards("train")[0], 4).labels) == first.records

    run_to_the_end(command, env)  # a rerun succeeds
    assert store.current(("processed_tfrecords", "baseline")) != before


@pytest.mark.integration
def test_a_run_killed_while_saving_the_trained_model_leaves_the_previous_model_current(tmp_path):
    data = tmp_path / "data"
    env = {
        **os.environ,
        "DROUGHTWATCH_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path),
        "DROUGHTWATCH_TRACKER": "none",
    }

    def command(seed: int) -> list:
        return materialize_command(
            "raw_tfrecords,processed_tfrecords,trained_model",
            "baseline",
            {
                "ops": {
                    "raw_tfrecords": {"config": TINY_SAMPLE},
                    "trained_model": {"config": {"epochs": 1, "seed": seed}},
                }
            },
        )

    run_to_the_end(command(0), env)
    store = LocalArtifactStore(data)
    before = store.current(("trained_model", "baseline"))

    def saving() -> bool:
        return any((data / ".staging").glob("*/model.keras"))

    def caught_before_commit() -> None:
        assert store.current(("trained_model", "baseline")) == before, "the new model was already committed"

    run_until_then_kill(command(1), env, saving, caught_before_commit)
    assert store.current(("trained_model", "baseline")) == before
    import keras

    assert keras.saving.load_model(before / "model.keras", compile=False).count_params() == 257_022

    run_to_the_end(command(1), env)  # a rerun succeeds
    assert store.current(("trained_model", "baseline")) != before


@pytest.mark.integration
def test_an_unavailable_s3_endpoint_is_retried_then_fails_clearly(tmp_path, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    result = dg.materialize(
        assets_named("raw_tfrecords"),
        resources=s3_resources(tmp_path, bucket="dw-away"),
        run_config=dg.RunConfig(ops={"raw_tfrecords": {"config": TINY_SAMPLE}}),
        raise_on_error=False,
    )
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 2
    message = str(result.failure_data_for_node("raw_tfrecords").error)
    assert f"bucket 'dw-away' at {endpoint}" in message


def test_two_writers_of_one_partition_both_commit_whole_versions(tmp_path):
    store = LocalArtifactStore(tmp_path)
    errors = []

    def write(value: str) -> None:
        try:
            for _ in range(20):
                staging = store.new_staging_dir()
                (staging / "a").write_text(value)
                (staging / "b").write_text(value)
                store.commit(staging, ("processed_tfrecords", "baseline"))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in ("x", "y")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    current = store.current(("processed_tfrecords", "baseline"))
    assert errors == [] and (current / "a").read_text() == (current / "b").read_text()


def test_unchanged_raw_shards_keep_their_data_version_and_are_not_reprocessed(tmp_path):
    def run():
        return dg.materialize(
            assets_named(*DATA_ASSETS),
            partition_key="baseline",
            resources=local_resources(tmp_path),
            run_config=run_config(TINY_SAMPLE),
        )

    first, second = run(), run()
    raw = [r.asset_materializations_for_node("raw_tfrecords")[0] for r in (first, second)]
    versions = [m.tags["dagster/data_version"] for m in raw]
    assert versions[0] == versions[1]
    assert [m.metadata["source_unchanged"].value for m in raw] == [False, True]  # the second kept the shards
    processed = [r.asset_materializations_for_node("processed_tfrecords")[0].metadata for r in (first, second)]
    assert (processed[0]["shards_processed"].value, processed[0]["shards_reused"].value) == (3, 0)
    assert (processed[1]["shards_processed"].value, processed[1]["shards_reused"].value) == (0, 3)

    changed = dg.materialize(
        assets_named(*DATA_ASSETS),
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config({**TINY_SAMPLE, "sample_seed": 1}),
    )
    metadata = changed.asset_materializations_for_node("processed_tfrecords")[0].metadata
    assert metadata["shards_processed"].value == 3
    assert changed.asset_materializations_for_node("raw_tfrecords")[0].tags["dagster/data_version"] != versions[0]
    assert changed.asset_materializations_for_node("raw_tfrecords")[0].metadata["source_unchanged"].value is False


def test_an_unchanged_source_keeps_the_current_raw_shards_as_a_new_version_unless_a_rebuild_is_asked(tmp_path):
    def run(**raw):
        run_config = dg.RunConfig(ops={"raw_tfrecords": {"config": raw}})
        result = dg.materialize(
            assets_named("raw_tfrecords"), resources=local_resources(tmp_path), run_config=run_config
        )
        [materialisation] = result.asset_materializations_for_node("raw_tfrecords")
        current = LocalArtifactStore(tmp_path).current(("raw_tfrecords", "__all__"))
        return materialisation.metadata["source_unchanged"].value, current

    folder = tmp_path / "shards"
    write_sample(folder, SampleSpec(train_records=192, val_records=64, records_per_shard=128))
    source = {"source": "folder", "folder": str(folder)}
    (built, first), (kept, second) = run(**source), run(**source)
    assert (built, kept) == (False, True) and first != second  # a new version ...
    shard = Path("train", "part-r-00000")
    assert (second / shard).stat().st_ino == (first / shard).stat().st_ino  # ... sharing the first one's files
    assert run(**source, rebuild=True)[0] is False
    assert run(**source, on_bad_record="skip")[0] is False  # read again under another policy
    (folder / "val" / "part-r-00000").write_bytes((folder / "val" / "part-r-00000").read_bytes())  # a new mtime
    assert run(**source, on_bad_record="skip")[0] is False
    kept, current = run(**source, on_bad_record="skip")
    assert kept is True
    (current / "val" / "part-r-00000").unlink()  # a current version damaged since: read again
    assert run(**source, on_bad_record="skip")[0] is False


def test_a_model_failing_the_onnx_parity_check_is_never_published(tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from droughtwatch_assets.model import export

    real_export = export.export_onnx

    def export_then_corrupt(model, path):
        info = real_export(model, path)
        graph = onnx.load(str(path))
        weights = max(graph.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
        array = numpy_helper.to_array(weights).copy()
        weights.CopyFrom(numpy_helper.from_array(array + 0.5, weights.name))
        onnx.save(graph, str(path))
        return info

    monkeypatch.setattr(export, "export_onnx", export_then_corrupt)
    result = dg.materialize(
        [*assets, *asset_checks],
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config(
            TINY_SAMPLE, {"epochs": 1, "register_model": True, "tracker": "none", "model_name": "baseline"}
        ),
        raise_on_error=False,
    )
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["onnx_matches_keras"].passed is False
    assert checks["onnx_matches_keras"].metadata["max_abs_diff"].value > 1e-5
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "onnx_model" in materialized and "published_model" not in materialized
    assert not (tmp_path / "registry" / "baseline" / "model.onnx").exists()


def all_file_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_aws_and_wandb_secrets_never_reach_metadata_logs_files_or_the_published_config(tmp_path, s3_env, monkeypatch):
    secret_key, secret_value = "AKIASECRETKEYID00001", "wJalrXUtnFEMI-not-a-real-secret-value"
    wandb_key = "wandbkey" + "7" * 32  # W&B keys are 40 characters
    secrets = (secret_key, secret_value, wandb_key)
    for name, value in {
        "DROUGHTWATCH_DEPLOYMENT": "s3",
        "DROUGHTWATCH_S3_BUCKET": "dw-secrets",
        "DROUGHTWATCH_S3_CREATE_BUCKET": "true",
        "AWS_ACCESS_KEY_ID": secret_key,
        "AWS_SECRET_ACCESS_KEY": secret_value,
        "WANDB_API_KEY": wandb_key,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb"),
    }.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        assets,
        partition_key="baseline",
        resources=build_resources(tmp_path / "cache"),  # the deployment the environment describes, as users set it
        instance=instance,
        run_config=run_config(
            TINY_SAMPLE, {"epochs": 1, "register_model": True, "tracker": "wandb", "model_name": "baseline"}
        ),
    )
    assert result.success
    assert result.asset_materializations_for_node("trained_model")[0].metadata["tracker"].value == "wandb"
    logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    metadata = "\n".join(str(e.event_specific_data) for e in result.all_events)
    files = all_file_bytes(tmp_path).decode("latin-1")
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=secret_key,
        aws_secret_access_key=secret_value,
    )
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="dw-secrets")
        for o in page["Contents"]
    ]
    assert any("/objects/" in key and "/part-r-" in key for key in keys), "the shards are scanned too"
    stored = b"\n".join(client.get_object(Bucket="dw-secrets", Key=key)["Body"].read() for key in keys).decode(
        "latin-1"
    )  # every object: shards, models, manifests, indexes, configs, values
    published = client.get_object(Bucket="dw-secrets", Key="baseline/config.yaml")["Body"].read().decode()
    run_config_text = str(instance.get_run_by_id(result.run_id).run_config)
    places = {
        "logs": logs,
        "metadata": metadata,
        "local files": files,
        "objects in the bucket": stored,
        "published config": published,
        "run config": run_config_text,
    }
    leaks = [(place, secret[:8]) for place, text in places.items() for secret in secrets if secret in text]
    assert leaks == []
    assert "learning_rate" in published and len(logs) > 1000 and "offline-run-" in files
