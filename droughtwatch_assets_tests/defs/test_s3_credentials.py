"""A bucket without credentials: one clear failure that names the variables to set, never retried and never blamed
on the endpoint. botocore refuses to sign before it connects, so no server is needed."""

import dagster as dg
import pytest

from droughtwatch_assets.wiring.resources import S3Connection, S3Store
from droughtwatch_assets_tests.conftest import TINY_SAMPLE, assets_named, s3_resources


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup either
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def test_a_store_without_credentials_fails_once_naming_the_variables_not_the_endpoint(no_credentials, tmp_path):
    store = S3Store(base_dir=str(tmp_path), s3=S3Connection(endpoint_url="http://127.0.0.1:9"), bucket="b")
    with pytest.raises(dg.Failure) as failure:
        store.new_staging_dir()
    assert not failure.value.allow_retries
    assert "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in failure.value.description
    assert "reachable" not in failure.value.description


def test_a_run_on_a_bucket_without_credentials_fails_in_its_first_step_without_retrying(no_credentials, tmp_path):
    result = dg.materialize(
        assets_named("raw_tfrecords"),
        resources=s3_resources(tmp_path, bucket="b"),
        run_config=dg.RunConfig(ops={"raw_tfrecords": {"config": TINY_SAMPLE}}),
        raise_on_error=False,
    )
    assert not result.success
    events = [event.event_type_value for event in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events and events.count("STEP_FAILURE") == 1
    [failure] = [event for event in result.all_events if event.event_type_value == "STEP_FAILURE"]
    assert "no AWS credentials found" in str(failure.event_specific_data.error)
