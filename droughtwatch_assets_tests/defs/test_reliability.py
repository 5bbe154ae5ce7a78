"""Bad inputs, faults and data versions, through the real asset code."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from droughtwatch_assets.datasets import ShardedDataset
from droughtwatch_assets.definitions import assets
from droughtwatch_assets.defs.checks import asset_checks
from droughtwatch_assets.defs.resources import build_resources
from droughtwatch_assets.features import BANDS
from droughtwatch_assets.record_writer import RecordWriter
from droughtwatch_assets.records import encode_example, encode_raw_example, read_processed
from droughtwatch_assets.storage import LocalArtifactStore
from droughtwatch_assets_tests.conftest import REPO_ROOT, free_port
from droughtwatch_assets_tests.defs.assets.test_pipeline import TINY_SAMPLE, run_config

DATA_ASSETS = [a for a in assets if a.key.to_user_string() in ("raw_tfrecords", "processed_tfrecords")]


def write_bad_input(kind: str, real_shard: Path, target: Path) -> None:
    """One of the ways a shard arrives broken."""
    data = real_shard.read_bytes()
    if kind == "truncated shard":
        target.write_bytes(data[: len(data) // 2])
    elif kind == "corrupted CRC":
        corrupted = bytearray(data)
        corrupted[20_000] ^= 0xFF
        target.write_bytes(bytes(corrupted))
    elif kind == "empty file":
        target.write_bytes(b"")
    elif kind == "non-TFRecord file":
        target.write_text("shard list exported from a spreadsheet\n")
    else:
        bands = {band: bytes(range(256)) * 16 + bytes(129) for band in BANDS}  # 4,225 bytes each
        fields = {"missing band": {**bands, "label": 1},
                  "band of the wrong length": {**bands, "B7": bytes(100), "label": 1},
                  "label outside 0..3": {**bands, "label": 9}}[kind]
        if kind == "missing band":
            del fields["B4"]
        with RecordWriter(target) as writer:
            writer.write(encode_raw_example(np.full((11, 65, 65), 50, np.uint8), 0, "good-record"))
            writer.write(encode_example(fields))


BAD_INPUTS = {  # kind -> (the step that catches it, record index named in the error, what the error says)
    "truncated shard": ("raw_tfrecords", None, "truncated"),
    "corrupted CRC": ("raw_tfrecords", 0, "payload checksum mismatch"),
    "missing band": ("processed_tfrecords", 1, "missing band B4"),
    "band of the wrong length": ("processed_tfrecords", 1, "band B7 has 100 bytes"),
    "label outside 0..3": ("raw_tfrecords", 1, "label [9] is not one value in 0..3"),
    "empty file": ("raw_tfrecords", 0, "empty file"),
    "non-TFRecord file": ("raw_tfrecords", 0, "bad length checksum"),
}


def materialize_data(data_dir: Path, folder: Path, policy: str = "fail", **kwargs):
    config = dg.RunConfig(ops={
        "raw_tfrecords": {"config": {"source": "folder", "folder": str(folder), "on_bad_record": policy}},
        "processed_tfrecords": {"config": {"workers": 1, "on_bad_record": policy}}})
    return dg.materialize([*DATA_ASSETS, *asset_checks[:2]], partition_key="baseline",
                          resources=build_resources(str(data_dir)), run_config=config, **kwargs)


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_fails_naming_file_and_record_and_leaves_nothing_visible(kind, tmp_path, real_folder, real_shard):
    write_bad_input(kind, real_shard, real_folder / "train" / "part-r-00099")
    step, index, words = BAD_INPUTS[kind]
    result = materialize_data(tmp_path / "data", real_folder, raise_on_error=False)
    assert not result.success
    message = str(result.failure_data_for_node(step).error)
    assert "part-r-00099: record " in message and words in message, message
    if index is not None:
        assert f"part-r-00099: record {index}:" in message
    with pytest.raises(FileNotFoundError):
        LocalArtifactStore(tmp_path / "data").current(("processed_tfrecords", "baseline"))


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_skip_policy_drops_counts_and_lists_bad_records(kind, tmp_path, real_folder, real_shard):
    write_bad_input(kind, real_shard, real_folder / "train" / "part-r-00099")
    result = materialize_data(tmp_path / "data", real_folder, policy="skip")
    assert result.success
    step = BAD_INPUTS[kind][0]
    metadata = result.asset_materializations_for_node(step)[0].metadata
    assert metadata["skipped_records"].value >= 1
    assert "part-r-00099" in metadata["skipped"].value and BAD_INPUTS[kind][2] in metadata["skipped"].value
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["processed_values_are_valid"] is True  # records = raw - vetoed - skipped still holds
    processed = ShardedDataset.open(LocalArtifactStore(tmp_path / "data").current(("processed_tfrecords", "baseline")))
    assert processed.records("val") == 79


def run_until_then_kill(command: list, env: dict, started) -> None:
    """Start a materialisation and SIGKILL its whole process group once `started()` is true."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not started() and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def materialize_data_command(seed: int) -> list:
    """`dagster asset materialize` of raw + processed on a 6,000-record sample: long enough to be killed."""
    config = {"ops": {"raw_tfrecords": {"config": {"sample_train_records": 6000, "sample_records_per_shard": 1000,
                                                   "sample_seed": seed}},
                      "processed_tfrecords": {"config": {"workers": 1}}}}
    return [Path(sys.executable).parent / "dagster", "asset", "materialize", "-m", "droughtwatch_assets.definitions",
            "--select", "raw_tfrecords,processed_tfrecords", "--partition", "baseline",
            "--config-json", json.dumps(config)]


def run_to_the_end(command: list, env: dict) -> None:
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=600)


def test_a_run_killed_while_uploading_to_s3_leaves_the_previous_version_current(tmp_path, s3_env):
    import boto3

    env = {**os.environ, "DROUGHTWATCH_DATA_DIR": str(tmp_path / "cache"), "DAGSTER_HOME": str(tmp_path),
           "DROUGHTWATCH_TRACKER": "none", "DROUGHTWATCH_STORAGE": "s3", "DROUGHTWATCH_S3_BUCKET": "dw-kill",
           "DROUGHTWATCH_S3_CREATE_BUCKET": "true"}
    run_to_the_end(materialize_data_command(seed=0), env)
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    current_key = "droughtwatch/processed_tfrecords/baseline/CURRENT"
    before = client.get_object(Bucket="dw-kill", Key=current_key)["Body"].read()

    def processed_objects() -> int:
        listing = client.list_objects_v2(Bucket="dw-kill", Prefix="droughtwatch/processed_tfrecords/baseline/objects/")
        return listing.get("KeyCount", 0)

    known = processed_objects()
    command = materialize_data_command(seed=5)  # new data: new objects to upload
    run_until_then_kill(command, env, lambda: processed_objects() > known)
    assert client.get_object(Bucket="dw-kill", Key=current_key)["Body"].read() == before
    from droughtwatch_assets import s3
    from droughtwatch_assets.s3_store import S3ArtifactStore

    reader = S3ArtifactStore(s3.client(s3_env["AWS_ENDPOINT_URL"], "us-east-1", aws_access_key_id="testing",
                                       aws_secret_access_key="testing"), "dw-kill", "droughtwatch", tmp_path / "reader")
    dataset = ShardedDataset.open(reader.current(("processed_tfrecords", "baseline")))
    assert dataset.manifest["raw_data_version"] and len(read_processed(dataset.shards("val")[0], 4).labels) > 0
    run_to_the_end(command, env)  # a rerun succeeds
    assert client.get_object(Bucket="dw-kill", Key=current_key)["Body"].read() != before


def test_a_run_killed_while_writing_leaves_the_previous_version_readable(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "DROUGHTWATCH_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path),
           "DROUGHTWATCH_TRACKER": "none"}
    run_to_the_end(materialize_data_command(seed=0), env)
    store = LocalArtifactStore(data)
    before = store.current(("processed_tfrecords", "baseline"))

    command = materialize_data_command(seed=5)  # new data, so every shard is processed again
    run_until_then_kill(command, env, lambda: bool(list((data / ".staging").glob("*/train/part-r-00001"))))
    after = store.current(("processed_tfrecords", "baseline"))
    assert after == before
    dataset = ShardedDataset.open(after)
    assert len(read_processed(dataset.shards("train")[0], 4).labels) == dataset.manifest["splits"]["train"]["shards"][0]["records"]

    run_to_the_end(command, env)  # a rerun succeeds
    assert store.current(("processed_tfrecords", "baseline")) != before


def test_an_unavailable_s3_endpoint_is_retried_then_fails_clearly(tmp_path, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"
    for name, value in {"DROUGHTWATCH_STORAGE": "s3", "DROUGHTWATCH_S3_BUCKET": "dw-away", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    result = dg.materialize(DATA_ASSETS[:1], resources=build_resources(str(tmp_path)),
                            run_config=dg.RunConfig(ops={"raw_tfrecords": {"config": TINY_SAMPLE}}),
                            raise_on_error=False)
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
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in ("x", "y")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    current = store.current(("processed_tfrecords", "baseline"))
    assert errors == [] and (current / "a").read_text() == (current / "b").read_text()


def test_unchanged_raw_shards_keep_their_data_version_and_are_not_reprocessed(tmp_path):
    def run():
        return dg.materialize(DATA_ASSETS, partition_key="baseline", resources=build_resources(str(tmp_path)),
                              run_config=run_config(TINY_SAMPLE))

    first, second = run(), run()
    versions = [r.asset_materializations_for_node("raw_tfrecords")[0].tags["dagster/data_version"] for r in (first, second)]
    assert versions[0] == versions[1]
    processed = [r.asset_materializations_for_node("processed_tfrecords")[0].metadata for r in (first, second)]
    assert (processed[0]["shards_processed"].value, processed[0]["shards_reused"].value) == (3, 0)
    assert (processed[1]["shards_processed"].value, processed[1]["shards_reused"].value) == (0, 3)

    changed = dg.materialize(DATA_ASSETS, partition_key="baseline", resources=build_resources(str(tmp_path)),
                             run_config=run_config({**TINY_SAMPLE, "sample_seed": 1}))
    metadata = changed.asset_materializations_for_node("processed_tfrecords")[0].metadata
    assert metadata["shards_processed"].value == 3
    assert changed.asset_materializations_for_node("raw_tfrecords")[0].tags["dagster/data_version"] != versions[0]


def test_a_model_failing_the_onnx_parity_check_is_never_published(tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from droughtwatch_assets import export

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
    result = dg.materialize([*assets, *asset_checks], partition_key="baseline", resources=build_resources(str(tmp_path)),
                            run_config=run_config(TINY_SAMPLE, {"epochs": 1, "register_model": True,
                                                                "tracker": "none", "model_name": "baseline"}),
                            raise_on_error=False)
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["onnx_matches_keras"].passed is False
    assert checks["onnx_matches_keras"].metadata["max_abs_diff"].value > 1e-5
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "onnx_model" in materialized and "published_model" not in materialized
    assert not (tmp_path / "registry" / "baseline" / "model.onnx").exists()


def test_secrets_never_reach_metadata_logs_or_the_published_config(tmp_path, s3_env, monkeypatch):
    secret_key, secret_value = "AKIASECRETKEYID00001", "wJalrXUtnFEMI-not-a-real-secret-value"
    for name, value in {"DROUGHTWATCH_STORAGE": "s3", "DROUGHTWATCH_S3_BUCKET": "dw-secrets",
                        "DROUGHTWATCH_S3_CREATE_BUCKET": "true", "AWS_ACCESS_KEY_ID": secret_key,
                        "AWS_SECRET_ACCESS_KEY": secret_value}.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(assets, partition_key="baseline", resources=build_resources(str(tmp_path)),
                            instance=instance, run_config=run_config(TINY_SAMPLE, {
                                "epochs": 1, "register_model": True, "tracker": "none", "model_name": "baseline"}))
    assert result.success
    logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    metadata = "\n".join(str(e.event_specific_data) for e in result.all_events)
    files = "\n".join(p.read_text(errors="replace") for p in tmp_path.rglob("*")
                      if p.is_file() and p.suffix in (".json", ".yaml", ".txt", ".log"))
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=secret_key, aws_secret_access_key=secret_value)
    published = client.get_object(Bucket="dw-secrets", Key="baseline/config.yaml")["Body"].read().decode()
    run_config_text = str(instance.get_run_by_id(result.run_id).run_config)
    for text in (logs, metadata, files, published, run_config_text):
        assert secret_key not in text and secret_value not in text
    assert "learning_rate" in published and len(logs) > 1000
