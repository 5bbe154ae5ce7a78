"""The resources: one ArtifactStore interface with a local-disk and an S3 implementation, the IO manager that
commits asset outputs to the store and loads them back, the raw source, the retraining policy, and the tracker.

MLflow goes through its own client rather than dagster-mlflow's `mlflow_tracking` resource: that legacy resource
needs its end-of-run hook on every op of a job, so every step opened an MLflow run, and the hook ends the run only
when the job's topologically last op succeeds, which a partial selection or a skipped check never runs."""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from droughtwatch_assets.core.model_config import ModelConfig
from droughtwatch_assets.model.artifacts import ArtifactsByPartition
from droughtwatch_assets.sources.download import ARCHIVE_URL
from droughtwatch_assets.sources.raw import RawSource, RawSourceKind
from droughtwatch_assets.storage import local as storage
from droughtwatch_assets.storage import retention
from droughtwatch_assets.storage import s3 as s3_store
from droughtwatch_assets.storage import s3_client as s3
from droughtwatch_assets.storage.base import VersionedArtifacts
from droughtwatch_assets.storage.registry import Attachments, LocalModelRegistry, Publication, S3ModelRegistry
from droughtwatch_assets.tracking import NullTracker, Tracker, TrackerName, TrackingUnavailable
from droughtwatch_assets.tracking.base import tracked

REGISTRY = "registry"
Key = tuple[str, ...]  # (asset, partition)


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Where asset files live, as versions that are committed whole.

    The IO manager is the only user of its versions: it hands out staging directories, commits what an asset
    returns, and loads what an asset reads. Assets use the store only to publish models and read them back.
    """

    base_dir: str  # local: the data; S3: the local cache and scratch space
    keep_versions: int = Field(
        default=retention.DEFAULT_KEEP,
        description="After each commit or publication, remove that asset partition's or model's versions beyond "
        "the newest keep_versions (and those a published model references; see retention.py). 0: never "
        "automatically, only with `droughtwatch gc`.",
    )
    grace_minutes: float = Field(
        default=retention.DEFAULT_GRACE.total_seconds() / 60,
        description="A version superseded less than this long ago is kept: a reader may still be reading it.",
    )

    @abstractmethod
    def _versions(self) -> VersionedArtifacts: ...

    @abstractmethod
    def _registry(self) -> LocalModelRegistry | S3ModelRegistry: ...

    def retention_policy(self, keep: int | None = None, grace_minutes: float | None = None):
        """The store's policy, or another number of versions / grace period (keep_versions 0: the default)."""
        return retention.RetentionPolicy(
            keep=(self.keep_versions or retention.DEFAULT_KEEP) if keep is None else keep,
            grace=timedelta(minutes=self.grace_minutes if grace_minutes is None else grace_minutes),
        )

    def retention_plan(self, policy: retention.RetentionPolicy, keys=None, models=None) -> retention.RetentionPlan:
        """What the policy removes: of these asset partitions and published models, all if None; of the whole
        store (both None) also what killed runs left, once older than the grace period (see retention.py)."""
        return retention.plan(self._versions(), self._registry(), policy, keys, models)

    def remove(self, plan: retention.RetentionPlan) -> None:
        self._versions().remove(plan)

    def retain_after_commit(self, log, keys=(), models=()) -> retention.RetentionPlan | None:
        """Apply keep_versions to what a step just committed or published; a failure is logged, not raised:
        the new version is in place, and `droughtwatch gc` removes what stayed."""
        if not self.keep_versions:
            return None
        what = ", ".join(["/".join(k) for k in keys] + [f"registry {m}" for m in models])
        try:
            plan = self.retention_plan(self.retention_policy(), keys=list(keys), models=list(models))
            self.remove(plan)
        except (OSError, ValueError, s3.S3Error) as exc:
            log.warning(f"retention after committing {what} failed: {exc}. Old versions stay until `droughtwatch gc`")
            return None
        for line in plan.lines(dry_run=False)[:-1]:
            log.info(line)
        return plan

    def new_staging_dir(self) -> Path:
        """An empty directory to write a new version into; the IO manager commits it."""
        return self._versions().new_staging_dir()

    def commit(self, staging: Path, key: Key) -> str:
        return str(self._versions().commit(staging, key))

    def current(self, key: Key) -> Path:
        """A local directory holding the current version of key; FileNotFoundError if there is none."""
        return self._versions().current(key)

    def previous_version(self, key: Key) -> Path | None:
        """The current version of key before this step commits its own, or None."""
        try:
            return self.current(key)
        except FileNotFoundError:
            return None

    def file_uri(self, key: Key, relative: str) -> str:
        """Where a file of an asset's current version really is: a local path, or its s3:// object."""
        return self._versions().file_uri(key, relative)

    def publish(
        self, model_name: str, onnx_path: Path, config: ModelConfig, attachments: Attachments = None
    ) -> Publication:
        """Publish a model, its config and its attachments as <model name>/ in the registry, as one set that no
        reader sees torn (see storage/registry.py)."""
        return self._registry().publish(model_name, onnx_path, config, attachments)

    def published(self, model_name: str) -> tuple[Path, ModelConfig] | None:
        """The current publication of model_name in the registry (a local model file, its config), or None."""
        return self._registry().current(model_name, self.new_staging_dir())

    def published_names(self) -> list[str]:
        """The models published in the registry."""
        return self._registry().model_names()


class LocalStore(ArtifactStore):
    """Versioned directories under base_dir, swapped in atomically; published models under base_dir/registry."""

    _store: storage.LocalArtifactStore | None = PrivateAttr(default=None)

    def _versions(self) -> storage.LocalArtifactStore:
        if self._store is None:
            self._store = storage.LocalArtifactStore(self.base_dir)
        return self._store

    def _registry(self) -> LocalModelRegistry:
        return LocalModelRegistry(Path(self.base_dir, REGISTRY))

    def published(self, model_name: str) -> tuple[Path, ModelConfig] | None:
        return self._registry().current(model_name)  # read in place: no download


class S3Connection(S3Resource):
    """dagster-aws's S3 resource, whose clients (its own `get_client`, which S3PickleIOManager calls, and this
    project's) come from storage.s3_client: with a connect timeout, so that an unreachable endpoint fails within
    seconds, not after botocore's 60 s per attempt. Same settings and credentials otherwise."""

    def get_client(self):
        return s3.client(
            self.endpoint_url,
            self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
        )


class S3Store(ArtifactStore):
    """Content-addressed versions in an S3 bucket, read through a local cache; published models in the
    registry bucket."""

    s3: S3Connection
    bucket: str
    prefix: str = "droughtwatch"
    registry_bucket: str = ""  # defaults to `bucket`
    create_bucket: bool = False

    _store: s3_store.S3ArtifactStore | None = PrivateAttr(default=None)

    def _client(self):
        return self.s3.get_client()

    def _versions(self) -> s3_store.S3ArtifactStore:
        if self._store is None:
            if not self.bucket:
                raise dg.Failure("S3 storage needs a bucket: set DROUGHTWATCH_S3_BUCKET", allow_retries=False)
            store = s3_store.S3ArtifactStore(
                self._client(), self.bucket, self.prefix, self.base_dir, self.create_bucket
            )
            try:
                store.ensure_bucket()
            except s3.S3Error as exc:
                if not exc.retryable:  # missing credentials, no permission, no bucket: a retry cannot help
                    raise dg.Failure(str(exc), allow_retries=False) from None
                raise
            self._store = store
        return self._store

    def _registry(self) -> S3ModelRegistry:
        store = s3_store.S3ArtifactStore(
            self._versions().client, self.registry_bucket or self.bucket, "", self.base_dir, self.create_bucket
        )
        return S3ModelRegistry(store)


def artifact_key(asset_key: dg.AssetKey, partition: str | None) -> Key:
    """The store's key of an asset partition (None: an unpartitioned asset); the only place keys are made."""
    return (*asset_key.path, storage.UNPARTITIONED if partition is None else partition)


def _context_key(context: dg.InputContext | dg.OutputContext) -> Key:
    return artifact_key(context.asset_key, context.asset_partition_key if context.has_asset_partitions else None)


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores directory artifacts (datasets, models) and opens them again as their annotated type.

    An asset takes this IO manager as `io_manager: dg.ResourceParam[ArtifactIOManager]`, writes its output into
    `staging_dir()` and returns an artifact rooted there; committing moves (or uploads) it into place atomically.
    Loading resolves the current version and calls `<type>.open(path)`.
    """

    store: ArtifactStore

    def staging_dir(self) -> Path:
        """An empty directory for the step's output; handle_output commits the artifact returned with it as root."""
        return self.store.new_staging_dir()

    def previous_output(self, context: dg.AssetExecutionContext) -> Path | None:
        """The current version of the asset partition this step materialises, as it was before the step commits
        its own (incremental processing), or None if there is none."""
        # not has_partition_key: that is the run's, which an unpartitioned asset in a partitioned run has too
        partition = context.partition_key if context.assets_def.partitions_def is not None else None
        return self.store.previous_version(artifact_key(context.asset_key, partition))

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        key = _context_key(context)
        location = self.store.commit(obj.root, key)
        metadata = {"location": dg.MetadataValue.path(location)}
        removed = self.store.retain_after_commit(context.log, keys=[key])
        if removed is not None:
            metadata.update({"old_versions_removed": len(removed.removals), "bytes_freed": removed.total_bytes})
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext):
        artifact_type = context.dagster_type.typing_type
        if isinstance(artifact_type, type) and issubclass(artifact_type, ArtifactsByPartition):
            # every partition, for an unpartitioned reader; each opened when read
            return artifact_type(
                lambda p: self.store.current(artifact_key(context.asset_key, p)), context.asset_partition_keys
            )
        return artifact_type.open(self.store.current(_context_key(context)))


class RawSourceResource(dg.ConfigurableResource):
    """Where raw shards come from when a run does not say: the deployment's raw source.

    `s3` holds the settings and credentials for the S3 source: the same as storage's (deployment.py).
    """

    s3: S3Connection
    source: RawSourceKind = "sample"
    folder: str = ""
    archive_url: str = ARCHIVE_URL
    uri: str = ""  # for s3: s3://bucket/prefix

    def client(self):
        return self.s3.get_client()

    def to_source(self) -> RawSource:
        return RawSource(self.source, self.folder, self.archive_url, uri=self.uri)


class ScratchSpace(dg.ConfigurableResource):
    """Local disk a step may use for itself: caches that outlive a run (the archive, the S3 source's shards) and
    temporary folders. Nothing here is shared with another step: what a later step needs goes through the store."""

    base_dir: str

    def directory(self, name: str) -> Path:
        path = Path(self.base_dir, name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def temporary(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(dir=self.directory(".scratch")) as path:
            yield Path(path)


class RetrainingPolicy(dg.ConfigurableResource):
    """What the daily schedule does when nothing changed since the last published model."""

    force: bool = False  # retrain anyway (DROUGHTWATCH_FORCE_RETRAIN)


class TrackingResource(dg.ConfigurableResource):
    """Where runs report. `default_tracker` is the deployment's choice; a run may pick another.

    A step that tracks opens one context with `step(...)`; which calls each backend makes (an MLflow run joined
    by a later step, a W&B run per step) is the backend's business, never the asset's.
    """

    default_tracker: TrackerName = "wandb"
    mlflow_tracking_uri: str | None = None  # None: MLflow's own default (./mlruns)
    mlflow_experiment: str = "droughtwatch"
    wandb_project: str = "droughtwatch"
    wandb_dir: str = "wandb"  # where offline W&B runs are written (the deployment's: <data dir>/wandb)
    wandb_online: bool = False  # the deployment has WANDB_API_KEY and no offline WANDB_MODE
    wandb_base_url: str = "https://api.wandb.ai"

    def resolve(self, choice: str) -> TrackerName:
        return self.default_tracker if choice == "deployment" else choice

    @contextmanager
    def step(
        self,
        context: dg.AssetExecutionContext,
        choice: str = "deployment",
        *,
        required: bool = True,
        job_type: str = "train",
        start: tuple[str, dict] | None = None,
    ) -> Iterator[Tracker]:
        """The step's tracker: a run started as `start` (name, config), or the Dagster run's run joined. It is
        finished when the block ends, failed when it raises. When the tracker cannot be reached: fail (required)
        or warn and track nothing."""
        try:
            tracker = self._backend(self.resolve(choice), context.run.run_id, job_type)
            tracker.start(*start) if start else tracker.resume()
        except TrackingUnavailable as exc:
            if required:
                raise dg.Failure(
                    f"{exc}. Fix the tracker, or set tracking_required: false to train without it."
                ) from None
            context.log.warning(f"{exc}; training without experiment tracking (tracking_required is false)")
            tracker = NullTracker()
        with tracked(tracker):
            yield tracker

    def names_champion(self, context: dg.AssetExecutionContext, registered_model: str, published_version: str) -> bool:
        """Whether the deployment's tracker names the store's champion publication `published_version` champion,
        asked without opening a run; a tracker that cannot be reached fails the step (its retry asks again)."""
        try:
            tracker = self._backend(self.resolve("deployment"), context.run.run_id, "promote")
        except TrackingUnavailable as exc:
            raise dg.Failure(f"{exc}: cannot check that it names champion version {published_version}") from None
        return tracker.names_champion(registered_model, published_version)

    def _backend(self, kind: TrackerName, dagster_run_id: str, job_type: str) -> Tracker:
        if kind == "wandb":
            from droughtwatch_assets.tracking.wandb_backend import WandbTracker

            return WandbTracker(self.wandb_project, self.wandb_dir, job_type, self.wandb_online, self.wandb_base_url)
        if kind == "mlflow":
            from droughtwatch_assets.tracking.mlflow_backend import MlflowTracker

            tracker = MlflowTracker(self.mlflow_tracking_uri, self.mlflow_experiment, dagster_run_id, job_type)
            tracker.check_reachable()
            return tracker
        return NullTracker()
