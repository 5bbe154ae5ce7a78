"""Resources, chosen per environment from env vars: local disk by default, S3 when DROUGHTWATCH_STORAGE=s3."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3PickleIOManager, S3Resource
from pydantic import PrivateAttr

from droughtwatch_assets import s3
from droughtwatch_assets.defs.tracking import build_tracking_resources
from droughtwatch_assets.model_registry import LocalModelRegistry, Publication, S3ModelRegistry
from droughtwatch_assets.s3_store import S3ArtifactStore
from droughtwatch_assets.storage import UNPARTITIONED, LocalArtifactStore

DATA_DIR_ENV = "DROUGHTWATCH_DATA_DIR"
DEFAULT_DATA_DIR = ".droughtwatch"
REGISTRY = "registry"


def default_data_dir() -> str:
    return str(Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().absolute())


class ArtifactStore(dg.ConfigurableResource):
    """Where asset files live: versioned directories on local disk, or in an S3 bucket with a local cache.

    In S3 mode `base_dir` is the local cache and scratch space.
    """

    base_dir: str
    s3: S3Resource
    storage: str = "local"  # local | s3
    bucket: str = ""
    prefix: str = "droughtwatch"
    registry_bucket: str = ""  # where published models go; defaults to `bucket`
    create_bucket: bool = False

    _backend: LocalArtifactStore | S3ArtifactStore | None = PrivateAttr(default=None)

    def _client(self):
        return s3.client(
            self.s3.endpoint_url,
            self.s3.region_name,
            aws_access_key_id=self.s3.aws_access_key_id,
            aws_secret_access_key=self.s3.aws_secret_access_key,
            aws_session_token=self.s3.aws_session_token,
        )

    @property
    def backend(self) -> LocalArtifactStore | S3ArtifactStore:
        if self._backend is None:
            if self.storage == "s3":
                if not self.bucket:
                    raise dg.Failure("DROUGHTWATCH_STORAGE=s3 needs a bucket (DROUGHTWATCH_S3_BUCKET)")
                self._backend = S3ArtifactStore(
                    self._client(), self.bucket, self.prefix, self.base_dir, self.create_bucket
                )
            elif self.storage == "local":
                self._backend = LocalArtifactStore(self.base_dir)
            else:
                raise dg.Failure(f"storage {self.storage!r} is not 'local' or 's3' (DROUGHTWATCH_STORAGE)")
        return self._backend

    def new_staging_dir(self) -> Path:
        return self.backend.new_staging_dir()

    def publish(self, model_name: str, onnx_path: Path, config: dict) -> Publication:
        """Publish a model and its config as <model name>/ in the registry, as a pair (see model_registry.py)."""
        if self.storage == "s3":
            store = S3ArtifactStore(
                self.backend.client, self.registry_bucket or self.bucket, "", self.base_dir, self.create_bucket
            )
            return S3ModelRegistry(store).publish(model_name, onnx_path, config)
        return LocalModelRegistry(Path(self.base_dir, REGISTRY)).publish(model_name, onnx_path, config)

    def file_uri(self, key: tuple[str, ...], relative: str) -> str:
        """Where a file of an asset's current version really is: a local path, or its s3:// object."""
        return self.backend.file_uri(key, relative)


def artifact_key(context: dg.InputContext | dg.OutputContext) -> tuple[str, ...]:
    partition = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED
    return (*context.asset_key.path, partition)


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores directory artifacts (datasets, models) and opens them again as their annotated type.

    An asset returns an artifact whose `root` is a staging directory from the store; committing moves
    (or uploads) it into place atomically. Loading resolves the current version and calls `<type>.open(path)`.
    """

    store: ArtifactStore

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        location = self.store.backend.commit(obj.root, artifact_key(context))
        context.add_output_metadata({"location": dg.MetadataValue.path(str(location))})

    def load_input(self, context: dg.InputContext):
        artifact_type = context.dagster_type.typing_type
        return artifact_type.open(self.store.backend.current(artifact_key(context)))


def _env(name: str) -> dg.EnvVar | None:
    """An EnvVar for a variable that is set, so secrets never become config values."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(data_dir: str | None = None) -> dict:
    """Every resource the assets need, for the environment the env vars describe."""
    return {**build_storage_resources(data_dir), **build_tracking_resources()}


def build_storage_resources(data_dir: str | None = None) -> dict:
    data_dir = data_dir or default_data_dir()
    storage = os.environ.get("DROUGHTWATCH_STORAGE", "local")
    if storage != "s3":
        store = ArtifactStore(base_dir=data_dir, storage=storage, s3=S3Resource())
        values = dg.FilesystemIOManager(base_dir=str(Path(data_dir, "values")))
        return {"store": store, "io_manager": ArtifactIOManager(store=store), "value_io_manager": values}
    s3_resource = S3Resource(
        endpoint_url=_env("AWS_ENDPOINT_URL"),
        region_name=_env("AWS_REGION") or _env("AWS_DEFAULT_REGION"),
        aws_access_key_id=_env("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env("AWS_SESSION_TOKEN"),
        max_attempts=4,
    )
    bucket = os.environ.get("DROUGHTWATCH_S3_BUCKET", "")
    prefix = os.environ.get("DROUGHTWATCH_S3_PREFIX", "droughtwatch")
    store = ArtifactStore(
        base_dir=data_dir,
        storage="s3",
        s3=s3_resource,
        bucket=bucket,
        prefix=prefix,
        registry_bucket=os.environ.get("DROUGHTWATCH_REGISTRY_BUCKET", ""),
        create_bucket=os.environ.get("DROUGHTWATCH_S3_CREATE_BUCKET", "").lower() in ("1", "true", "yes"),
    )
    values = S3PickleIOManager(s3_resource=s3_resource, s3_bucket=bucket, s3_prefix=f"{prefix}/values".strip("/"))
    return {"store": store, "io_manager": ArtifactIOManager(store=store), "value_io_manager": values}
