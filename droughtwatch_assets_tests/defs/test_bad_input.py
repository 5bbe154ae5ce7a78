"""The README's bad-input table, row by row, with the default settings: processing in one process per core,
at least two shards to process, the bad shard in train/ or in val/ (first, where the raw preview reads)."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pytest

from droughtwatch_assets.core.features import BANDS
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.data.processing import default_workers
from droughtwatch_assets.records.tfrecord import encode_example, encode_raw_example
from droughtwatch_assets.records.writer import RecordWriter
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.wiring.deployment import AWS_VARIABLES, local_resources
from droughtwatch_assets_tests.conftest import (
    DATA_ASSETS,
    REPO_ROOT,
    assets_named,
    checks_named,
    dagster_home,
    materialize_command,
    run_config,
    table_rows,
)


def write_bad_input(kind: str, real_shard: Path, target: Path) -> None:
    """One of the ways a shard arrives broken."""
    data = real_shard.read_bytes()
    if kind == "truncated shard":
        target.write_bytes(data[: len(data) // 2])
    elif kind == "corrupted CRC":
        corrupted = bytearray(data)
        corrupted[20_000] ^= 0xFF  # inside record 0's payload (each record is 46,743 bytes framed)
        target.write_bytes(bytes(corrupted))
    elif kind == "empty file":
        target.write_bytes(b"")
    elif kind == "non-TFRecord file":
        target.write_text("shard list exported from a spreadsheet\n")
    else:
        bands = {band: bytes(range(256)) * 16 + bytes(129) for band in BANDS}  # 4,225 bytes each
        fields = {
            "missing band": {**bands, "label": 1},
            "band of the wrong length": {**bands, "B7": bytes(100), "label": 1},
            "label outside 0..3": {**bands, "label": 9},
        }[kind]
        if kind == "missing band":
            del fields["B4"]
        with RecordWriter(target) as writer:
            writer.write(encode_raw_example(np.full((11, 65, 65), 50, np.uint8), 0, "good-record"))
            writer.write(encode_example(fields))


# kind -> (the step that catches it in train/, record index named in the error, what the error says,
#          records of the bad shard that processing keeps under skip)
# The real shard holds 81 records of 46,727 payload bytes; records 39 and 46 are blank and vetoed.
BAD_INPUTS = {
    "truncated shard": ("raw_tfrecords", 40, "truncated", 39),  # 40 whole records in the first half, 39 vetoed
    "corrupted CRC": ("raw_tfrecords", 0, "payload checksum mismatch", 78),  # 81 - record 0 - 2 vetoed
    "missing band": ("processed_tfrecords", 1, "missing band B4", 1),
    "band of the wrong length": ("processed_tfrecords", 1, "band B7 has 100 bytes", 1),
    "label outside 0..3": ("raw_tfrecords", 1, "label [9] is not one value in 0..3", 1),
    "empty file": ("raw_tfrecords", 0, "empty file", 0),
    "non-TFRecord file": ("raw_tfrecords", 0, "bad length checksum", 0),
}
REAL_SHARD_KEPT = 79
BAD_SHARD = {"train": "part-r-00099", "val": "part-r-00000"}  # val: sorts first, so the raw preview reads it


def add_new_shards(kind: str, split: str, folder: Path, real_shard: Path) -> None:
    """Two new shards in one split, as new data arrives: a good one and a bad one, so that processing has
    at least two shards to run in its process pool even when the others are reused."""
    shutil.copyfile(real_shard, folder / split / "part-r-00050")
    write_bad_input(kind, real_shard, folder / split / BAD_SHARD[split])


def materialize_data(data_dir: Path, folder: Path, policy: str | None = None, **kwargs):
    """raw + processed + their checks, with the default processing config unless a policy is given."""
    raw = {"source": "folder", "folder": str(folder), **({"on_bad_record": policy} if policy else {})}
    return dg.materialize(
        [*assets_named(*DATA_ASSETS), *checks_named("processed_values_are_valid")],
        partition_key="baseline",
        resources=local_resources(data_dir),
        run_config=run_config(raw),
        **kwargs,
    )


@pytest.fixture(scope="module")
def committed_data(tmp_path_factory, real_shard):
    """A data directory whose processed `baseline` version was committed from good shards."""
    root = tmp_path_factory.mktemp("committed")
    for split in ("train", "val"):
        (root / "good" / split).mkdir(parents=True)
        shutil.copyfile(real_shard, root / "good" / split / "part-r-00012")
    assert materialize_data(root / "data", root / "good").success
    return root / "data"


@pytest.fixture
def data_dir(committed_data, tmp_path) -> Path:
    shutil.copytree(committed_data, tmp_path / "data", symlinks=True)
    return tmp_path / "data"


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_fails_once_naming_file_record_and_reason_and_the_previous_version_stays(
    kind, split, data_dir, real_folder, real_shard
):
    add_new_shards(kind, split, real_folder, real_shard)
    store = LocalArtifactStore(data_dir)
    before = store.current(("processed_tfrecords", "baseline"))
    step, index, words, _ = BAD_INPUTS[kind]
    if split == "val":
        step = "raw_tfrecords"  # the raw preview reads the first val records with the same policy

    result = materialize_data(data_dir, real_folder, raise_on_error=False)

    assert not result.success
    failure = result.failure_data_for_node(step)
    assert failure is not None, f"{step} did not fail"
    message = str(failure.error)
    assert f"{BAD_SHARD[split]}: record {index}: {words}" in message, message
    assert "on_bad_record: fail" in message and "BrokenProcessPool" not in message
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == [], "bad data is not retried"
    assert store.current(("processed_tfrecords", "baseline")) == before


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_skip_keeps_exactly_the_good_records_of_a_bad_shard(kind, split, tmp_path, real_folder, real_shard):
    add_new_shards(kind, split, real_folder, real_shard)
    result = materialize_data(tmp_path / "data", real_folder, policy="skip")
    assert result.success
    _, index, words, kept = BAD_INPUTS[kind]
    processed = ShardedDataset.open(LocalArtifactStore(tmp_path / "data").current(("processed_tfrecords", "baseline")))
    other = "val" if split == "train" else "train"
    assert processed.records(split) == 2 * REAL_SHARD_KEPT + kept
    assert processed.records(other) == REAL_SHARD_KEPT
    shard = next(s for s in processed.manifest.splits[split].shards if s.name == BAD_SHARD[split])
    assert shard.records == kept
    assert [(row.record, words in row.problem) for row in shard.skipped] == [(index, True)]
    metadata = result.asset_materializations_for_node("processed_tfrecords")[0].metadata
    assert metadata["skipped_records"].value == 1
    assert [(row["split"], row["file"], row["record"]) for row in table_rows(metadata["skipped"])] == [
        (split, BAD_SHARD[split], index)
    ]
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["processed_values_are_valid"] is True  # records = raw - vetoed - skipped holds


@pytest.mark.parametrize("kind", ["truncated shard", "missing band"])
def test_skip_holds_for_the_preview_and_the_predictions_over_a_bad_val_shard(kind, tmp_path, real_folder, real_shard):
    write_bad_input(kind, real_shard, real_folder / "val" / BAD_SHARD["val"])
    chain = assets_named(*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation", "predictions")
    result = dg.materialize(
        chain,
        partition_key="baseline",
        resources=local_resources(tmp_path / "data"),
        run_config=run_config(
            {"source": "folder", "folder": str(real_folder), "on_bad_record": "skip"}, {"epochs": 0, "tracker": "none"}
        ),
    )
    assert result.success
    raw = result.asset_materializations_for_node("raw_tfrecords")[0].metadata
    assert raw["on_bad_record"].value == "skip" and "preview" in raw
    predictions = result.asset_materializations_for_node("predictions")[0].metadata
    kept = BAD_INPUTS[kind][3]
    assert predictions["skipped_records"].value == 1
    assert predictions["rows"].value == REAL_SHARD_KEPT + kept


def step_failures(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the error message of its failure, from the run's event log."""
    return {
        event.step_key: event.dagster_event.step_failure_data.error.to_string()
        for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    }


@pytest.mark.integration
@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_through_dagster_asset_materialize_bad_input_fails_once_naming_file_record_and_reason(
    kind, data_dir, tmp_path, real_folder, real_shard
):
    """The same table through the default path: `dagster asset materialize` (the multiprocess executor, a process
    per step), processing with its default workers, the deployment read from the environment."""
    add_new_shards(kind, "train", real_folder, real_shard)
    store = LocalArtifactStore(data_dir)
    before = store.current(("processed_tfrecords", "baseline"))
    home = dagster_home(tmp_path / "home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DROUGHTWATCH_DATA_DIR": str(data_dir)}
    raw = {"source": "folder", "folder": str(real_folder)}
    command = materialize_command(",".join(DATA_ASSETS), "baseline", {"ops": {"raw_tfrecords": {"config": raw}}})

    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)

    assert completed.returncode != 0
    instance = dg.DagsterInstance.from_config(str(home))
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.FAILURE
    step, index, words, _ = BAD_INPUTS[kind]
    failures = step_failures(instance, run.run_id)
    assert list(failures) == [step], failures
    assert f"{BAD_SHARD['train']}: record {index}: {words}" in failures[step], failures[step]
    assert "on_bad_record: fail" in failures[step] and "BrokenProcessPool" not in failures[step]
    assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY) == [], "not retried"
    assert store.current(("processed_tfrecords", "baseline")) == before
    if step == "processed_tfrecords":  # the two new shards went to the default pool: one process per core
        messages = [e.user_message for e in instance.all_logs(run.run_id) if e.step_key == step]
        processes = min(default_workers(), 2)
        assert f"2 shards to process in {processes} process{'es' if processes > 1 else ''}" in messages, messages


# The S3 raw source, on moto's server: the rows of the table that the raw step catches as it reads the shards.
S3_BAD_INPUTS = ["truncated shard", "corrupted CRC", "empty file", "non-TFRecord file"]


def upload_folder(client, bucket: str, prefix: str, folder: Path) -> None:
    for path in sorted(folder.glob("*/part-*")):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.parent.name}/{path.name}", Body=path.read_bytes())


def materialize_raw_from_s3(data_dir: Path, uri: str, **kwargs):
    aws_variables = tuple(name for name in AWS_VARIABLES if os.environ.get(name))
    return dg.materialize(
        assets_named("raw_tfrecords"),
        resources=local_resources(data_dir, aws_variables=aws_variables),
        run_config=dg.RunConfig(ops={"raw_tfrecords": {"config": {"source": "s3", "uri": uri}}}),
        **kwargs,
    )


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("kind", S3_BAD_INPUTS)
def test_bad_input_from_the_s3_source_names_the_s3_key_and_commits_nothing(
    kind, split, tmp_path, real_folder, real_shard, s3_env
):
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    bucket = f"raw-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/drought"
    upload_folder(client, bucket, "drought", real_folder)
    assert materialize_raw_from_s3(tmp_path / "data", uri).success
    store = LocalArtifactStore(tmp_path / "data")
    before = store.current(("raw_tfrecords", "__all__"))

    add_new_shards(kind, split, real_folder, real_shard)
    upload_folder(client, bucket, "drought", real_folder)
    result = materialize_raw_from_s3(tmp_path / "data", uri, raise_on_error=False)

    assert not result.success
    failure = result.failure_data_for_node("raw_tfrecords")
    message = str(failure.error)
    _, index, words, _ = BAD_INPUTS[kind]
    assert f"{uri}/{split}/{BAD_SHARD[split]}: record {index}: {words}" in message, message
    assert "on_bad_record: fail" in message
    assert failure.user_failure_data.metadata["file"].value == f"{uri}/{split}/{BAD_SHARD[split]}"
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    assert store.current(("raw_tfrecords", "__all__")) == before, "nothing partial is committed"
    assert ShardedDataset.open(before).manifest.source == {"type": "s3", "uri": uri}
