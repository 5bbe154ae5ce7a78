"""S3 access shared by the artifact store, the model registry and the CLI: clients with bounded retries,
and errors that name the endpoint and the bucket."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlparse

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

RETRY_CONFIG = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=60)


class S3Error(RuntimeError):
    pass


class _ModelLoader(botocore.loaders.Loader):
    """botocore's loader of its JSON models (the S3 API, its endpoint rules, the partitions), one per process for
    every client: a new session's own loader parses them again, ~0.3 s of CPU, most of a short step's own time.
    boto3 appends its data folder to each session's loader; here it is in from the start, and the append goes to a
    copy."""

    @property
    def search_paths(self) -> list[str]:
        return list(self._search_paths)


@functools.cache
def _models() -> _ModelLoader:
    data_path = botocore.session.get_session().get_config_variable("data_path")  # AWS_DATA_PATH, as botocore reads it
    extra = [os.path.expanduser(path) for path in (data_path or "").split(os.pathsep) if path]
    return _ModelLoader(extra_search_paths=[*extra, os.path.join(os.path.dirname(boto3.__file__), "data")])


def client(endpoint_url: str | None = None, region_name: str | None = None, **credentials):
    """A boto3 S3 client; unset arguments fall back to the standard AWS env vars and config files."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _models())
    return boto3.session.Session(botocore_session=core, **{k: v for k, v in credentials.items() if v}).client(
        "s3", endpoint_url=endpoint_url or None, region_name=region_name or None, config=RETRY_CONFIG
    )


def preload_models() -> None:
    """Parses the models a client needs, once: the step fork servers do it before their steps fork. boto3's default
    session shares them too, where dagster-aws's S3 compute log manager makes its client in every process that
    opens the instance (deploy/dagster-cluster.yaml)."""
    preload = {"region_name": "us-east-1", "aws_access_key_id": "preload", "aws_secret_access_key": "preload"}
    client(**preload)
    core = botocore.session.get_session()
    core.register_component("data_loader", _models())
    boto3.setup_default_session(botocore_session=core)
    boto3.resource("s3", **preload)


def describe_failure(s3_client, bucket: str, action: str, exc: Exception) -> S3Error:
    endpoint = s3_client.meta.endpoint_url
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        detail = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            detail += " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        elif code in ("NoSuchBucket", "404"):
            detail += " (create the bucket, or allow the store to create it)"
    else:
        detail = f"{type(exc).__name__}: {exc} (is the endpoint reachable?)"
    return S3Error(f"S3 {action} failed for bucket {bucket!r} at {endpoint}: {detail}")


def split_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def download_uri(uri: str, destination: str | os.PathLike, s3_client=None) -> Path:
    bucket, key = split_uri(uri)
    s3_client = s3_client or client()
    try:
        s3_client.download_file(bucket, key, os.fspath(destination))
    except (ClientError, BotoCoreError) as exc:
        raise describe_failure(s3_client, bucket, f"download of {uri}", exc) from None
    return Path(destination)
