"""S3 access shared by the artifact store, the model registry and the CLI: clients with bounded retries,
and errors that name the endpoint and the bucket."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

RETRY_CONFIG = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=60)


class S3Error(RuntimeError):
    """An S3 call that failed; `retryable` is False where trying again cannot help (credentials, permissions, a
    missing bucket)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


CREDENTIAL_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "403",
    "InvalidToken",
    "ExpiredToken",
)
MISSING_BUCKET_CODES = ("NoSuchBucket", "404")


def client(endpoint_url: str | None = None, region_name: str | None = None, **credentials):
    """A boto3 S3 client; unset arguments fall back to the standard AWS env vars and config files."""
    return boto3.session.Session(**{k: v for k, v in credentials.items() if v}).client(
        "s3", endpoint_url=endpoint_url or None, region_name=region_name or None, config=RETRY_CONFIG
    )


def describe_failure(s3_client, bucket: str, action: str, exc: Exception) -> S3Error:
    endpoint = s3_client.meta.endpoint_url
    retryable = True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        detail = f"{code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code in CREDENTIAL_CODES:
            detail += " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            retryable = False
        elif code in MISSING_BUCKET_CODES:
            detail += " (create the bucket, or allow the store to create it)"
            retryable = False
    elif isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        detail = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        retryable = False
    elif isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        detail = f"{type(exc).__name__}: {exc} (is the endpoint reachable?)"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return S3Error(f"S3 {action} failed for bucket {bucket!r} at {endpoint}: {detail}", retryable)


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
