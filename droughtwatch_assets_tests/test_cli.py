"""The command lines a user types, as subprocesses in a fresh DAGSTER_HOME and data directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from droughtwatch_assets_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def cli_env(tmp_path) -> dict:
    (tmp_path / "home").mkdir()
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data")}


def test_dagster_asset_materialize_the_baseline_partition(tmp_path):
    config = {
        "ops": {
            "raw_tfrecords": {"config": {"sample_train_records": 256, "sample_val_records": 64}},
            "trained_model": {"config": {"epochs": 1}},
        }
    }
    result = subprocess.run(
        [
            BIN / "dagster",
            "asset",
            "materialize",
            "-m",
            "droughtwatch_assets.definitions",
            "--select",
            "*",
            "--partition",
            "baseline",
            "--config-json",
            json.dumps(config),
        ],
        cwd=REPO_ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RUN_SUCCESS" in result.stdout + result.stderr
    onnx_path = tmp_path / "data" / "onnx_model" / "baseline" / "current" / "model.onnx"
    assert ort.InferenceSession(str(onnx_path)).get_inputs()[0].shape[1:] == [65, 65, 4]


def test_dagster_asset_materialize_of_an_unchanged_source_keeps_the_raw_shards(tmp_path):
    """The multiprocess executor and a real instance: the second run's raw_tfrecords keeps the first one's shards."""
    import dagster as dg

    env = cli_env(tmp_path)
    config = json.dumps({"ops": {"raw_tfrecords": {"config": {"sample_train_records": 256, "sample_val_records": 64}}}})
    command = [BIN / "dagster", "asset", "materialize", "-m", "droughtwatch_assets.definitions"]
    for _ in range(2):
        result = subprocess.run(
            [*command, "--select", "raw_tfrecords", "--config-json", config],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(dg.AssetKey("raw_tfrecords"), limit=2).records
    unchanged = [r.asset_materialization.metadata["source_unchanged"].value for r in records]  # newest first
    assert unchanged == [True, False]


def test_droughtwatch_run_prints_where_the_onnx_file_is(tmp_path):
    result = subprocess.run(
        [BIN / "droughtwatch", "run", "--configuration", "dummy"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("ONNX model:"))
    onnx_path = Path(line.split(":", 1)[1].strip())
    assert onnx_path == tmp_path / "data" / "onnx_model" / "baseline" / "current" / "model.onnx"
    assert onnx_path.exists() and "model_name: dummy" in (onnx_path.parent / "config.yaml").read_text()


def test_droughtwatch_run_in_s3_mode_prints_where_the_model_is_in_the_bucket(tmp_path, s3_env):
    import boto3

    env = {
        **cli_env(tmp_path),
        "DROUGHTWATCH_DEPLOYMENT": "s3",
        "DROUGHTWATCH_S3_BUCKET": "dw-cli-run",
        "DROUGHTWATCH_S3_CREATE_BUCKET": "true",
        "DROUGHTWATCH_TRACKER": "none",
    }
    result = subprocess.run(
        [BIN / "droughtwatch", "run", "--configuration", "dummy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if line.startswith(("ONNX model", "config")))
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    for uri in lines.values():
        bucket, key = uri.strip().removeprefix("s3://").split("/", 1)
        assert bucket == "dw-cli-run" and key.startswith("droughtwatch/onnx_model/baseline/objects/"), uri
        client.head_object(Bucket=bucket, Key=key)  # it is there
    assert set(lines) == {"ONNX model", "config"}


def test_droughtwatch_experiments_ranks_the_feature_sets_and_names_the_champion(tmp_path):
    env = {**cli_env(tmp_path), "DROUGHTWATCH_TRACKER": "none"}
    result = subprocess.run(
        [BIN / "droughtwatch", "experiments", "--feature-sets", "rgb,baseline"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "experiments_job: 2 feature sets in" in result.stdout
    board = {line.split()[0]: line.split()[1] for line in lines if line.startswith("  ")}
    assert board == {"baseline": "candidate", "rgb": "candidate", "ndvi": "not", "all": "not"}
    assert lines[-1].startswith("champion: ")

    unknown = subprocess.run(
        [BIN / "droughtwatch", "experiments", "--feature-sets", "rgb,infrared"], env=env, capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "no feature set infrared; known: baseline, ndvi, rgb, all" in unknown.stderr


def test_dagster_asset_materialize_one_feature_sets_experiment(tmp_path):
    """The README's command for one partition of experiments_job: its chain, then the leaderboard and champion."""
    import dagster as dg

    from droughtwatch_assets_tests.conftest import TINY_SAMPLE, materialize_command

    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}, "trained_model": {"config": {"epochs": 1}}}}
    result = subprocess.run(
        materialize_command("*champion", "rgb", config),
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
    materialized = {
        key.to_user_string()
        for key in ("model_evaluation", "leaderboard", "champion")
        for key in [dg.AssetKey(key)]
        if instance.fetch_materializations(key, limit=1).records
    }
    assert materialized == {"model_evaluation", "leaderboard", "champion"}


USER_ERRORS = {  # the mistake: (command, extra environment, what the one line says)
    "a deployment that does not exist": (
        ["run"],
        {"DROUGHTWATCH_DEPLOYMENT": "bogus"},
        "droughtwatch run: DROUGHTWATCH_DEPLOYMENT='bogus' is not one of local, s3, k8s, dask",
    ),
    "the same, under experiments": (
        ["experiments"],
        {"DROUGHTWATCH_DEPLOYMENT": "bogus"},
        "droughtwatch experiments: DROUGHTWATCH_DEPLOYMENT='bogus' is not one of",
    ),
    "a retention setting that is not a number": (
        ["gc", "--dry-run"],
        {"DROUGHTWATCH_KEEP_VERSIONS": "many"},
        "droughtwatch gc: DROUGHTWATCH_KEEP_VERSIONS='many' is not a whole number of 0 or more",
    ),
    "gc on S3 with no bucket": (
        ["gc", "--dry-run"],
        {"DROUGHTWATCH_DEPLOYMENT": "s3"},
        "droughtwatch gc: S3 storage needs a bucket: set DROUGHTWATCH_S3_BUCKET",
    ),
    "a feature set given as a configuration": (
        ["run", "-c", "rgb"],
        {},
        "'rgb' is a feature set: train it with `droughtwatch experiments --feature-sets rgb`",
    ),
    "predictions into a folder that does not exist": (
        ["predict", "--model", "m.onnx", "--input", "shards", "--output", "missing/p.parquet"],
        {},
        "droughtwatch predict: --output missing/p.parquet: the folder",
    ),
    "a backfill with no instance to ask": (
        ["experiments", "--backfill"],
        {"DAGSTER_HOME": ""},
        "droughtwatch experiments --backfill: DAGSTER_HOME is not set",
    ),
}


@pytest.mark.parametrize("mistake", list(USER_ERRORS))
def test_a_mistake_a_user_can_make_is_one_line_saying_what_to_do_with_exit_code_2(mistake, tmp_path):
    command, extra, expected = USER_ERRORS[mistake]
    env = {**cli_env(tmp_path), **extra}
    result = subprocess.run([BIN / "droughtwatch", *command], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr[-2000:]
