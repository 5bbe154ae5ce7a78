"""Resources, chosen per environment from env vars."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from droughtwatch_assets.storage import UNPARTITIONED, LocalArtifactStore

DATA_DIR_ENV = "DROUGHTWATCH_DATA_DIR"
DEFAULT_DATA_DIR = ".droughtwatch"


def default_data_dir() -> str:
    return str(Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().absolute())


class ArtifactStore(dg.ConfigurableResource):
    """Versioned artifact directories under base_dir (see storage.py for the layout)."""

    base_dir: str

    @property
    def backend(self) -> LocalArtifactStore:
        return LocalArtifactStore(self.base_dir)

    def new_staging_dir(self) -> Path:
        return self.backend.new_staging_dir()


def artifact_key(context: dg.InputContext | dg.OutputContext) -> tuple[str, ...]:
    partition = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED
    return (*context.asset_key.path, partition)


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores directory artifacts (datasets, models) and opens them again as their annotated type.

    An asset returns an artifact whose `root` is a staging directory from the store; committing moves
    it into place atomically. Loading resolves the current version and calls `<type>.open(path)`.
    """

    store: ArtifactStore

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self.store.backend.commit(obj.root, artifact_key(context))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path.resolve()))})

    def load_input(self, context: dg.InputContext):
        artifact_type = context.dagster_type.typing_type
        return artifact_type.open(self.store.backend.current(artifact_key(context)))


def build_resources(data_dir: str | None = None) -> dict:
    store = ArtifactStore(base_dir=data_dir or default_data_dir())
    return {"store": store, "io_manager": ArtifactIOManager(store=store)}
