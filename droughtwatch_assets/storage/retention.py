"""Retention: which versions to keep, so daily runs don't fill the disk or the bucket, and removing the rest.

Kept, for each asset partition (<asset>/<partition> in the artifact store):
- the newest `keep` versions (version names sort by commit time) and the current one;
- every version that was still current less than `grace` ago: a reader that resolved it just before a newer
  commit may still be reading it;
- every version that a kept publication in the model registry references (below).
Kept, for each published model (<model>/versions/<version>/ in the registry): the newest `keep` publications,
the CURRENT one, and those superseded less than `grace` ago. Models registered in MLflow or W&B point at the
published <model>/ copy, so keeping its publications keeps what they reference.

A publication references, through the config.yaml published beside its model:
- the onnx_model version it was published from: `source_versions` maps "onnx_model/<feature set>" to that
  store version (recorded at publish time since retention exists); for older publications, the onnx_model
  version of its `feature_set` whose model.onnx has the config's `model_md5`;
- the processed_tfrecords version it was trained on: the version of its `feature_set` whose manifest.json
  records the config's `data_version`.

In S3 an object under objects/ is kept iff a kept version's index names it; objects that no version names
(of an interrupted commit) go once older than the grace period. A plan lists what would go and its bytes;
`apply` removes exactly that, so a dry run and a real run share everything but the deletion.

Orphans: what a killed or failed run leaves and nothing else would ever remove. A plan of the whole store (no keys
and no models given: `droughtwatch gc`) lists them too, once older than the grace period:
- staging folders (<store>/.staging/<id>, the S3 store's in its local cache) that hold at least one file; their age
  is the newest modification time of the folder and everything in it. An empty one frees nothing and may belong to
  a step that made it before a long download, so it stays;
- partial publications in the local registry (<model>/versions/.<version>.partial) and its temporary files
  (<model>/.<name>.<id>.tmp); in either registry, the publications of a model that has no CURRENT, and in the S3
  registry a version folder that lacks model.onnx or config.yaml (age: its newest object);
- in S3, objects under any location's objects/ that no kept index of any location names (the locations never
  made current included), and incomplete multipart uploads of the store's and the registry's keys (age: the
  upload's Initiated or its newest part, whichever is later).
Retention after a commit or a publication leaves orphans to `droughtwatch gc` (but the committed location's
unreferenced S3 objects): it runs inside every step, beside other steps of the same run whose staging folders a
small grace period would not protect, and the S3 scans cost listings of the whole bucket.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from droughtwatch_assets.core.model_config import ModelConfig

DEFAULT_KEEP = 5
DEFAULT_GRACE = timedelta(hours=1)
UNREFERENCED = "unreferenced objects"
ORPHANS = "orphans: "  # how an orphan's Removal.location starts: "orphans: staging", "orphans: registry <model>"
STAGING_ORPHANS = ORPHANS + "staging"
MULTIPART_ORPHANS = ORPHANS + "s3 multipart uploads"
MULTIPART = "s3-multipart-upload://"  # a Removal target: s3-multipart-upload://<bucket>/<key>#<upload id>
VERSION_TIME_FORMAT = "%Y%m%dT%H%M%S%f"  # v-<utc time>-<id>, as both stores and the registry name versions


@dataclass(frozen=True)
class RetentionPolicy:
    keep: int = DEFAULT_KEEP
    grace: timedelta = DEFAULT_GRACE

    def __post_init__(self):
        if self.keep < 1:
            raise ValueError(f"retention must keep at least 1 version (asked to keep {self.keep}); pass 1 or more")
        if self.grace < timedelta(0):
            raise ValueError(f"the retention grace period cannot be negative ({self.grace}); pass 0 or more minutes")


@dataclass(frozen=True)
class Removal:
    """One version to remove (or a location's unreferenced objects, or an orphan): what it frees and what to
    delete."""

    location: str  # "<asset>/<partition>", "registry <model>", or "orphans: <what>"
    version: str  # the version, UNREFERENCED, or the orphan's name
    size: int  # bytes freed
    targets: tuple[str, ...]  # local paths, s3://bucket/key URIs and MULTIPART uploads, deleted in this order

    @property
    def orphan(self) -> bool:
        return self.location.startswith(ORPHANS) or self.version == UNREFERENCED


@dataclass(frozen=True)
class RetentionPlan:
    removals: tuple[Removal, ...] = ()

    def __add__(self, other: RetentionPlan) -> RetentionPlan:
        return RetentionPlan(self.removals + other.removals)

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.removals)

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would remove" if dry_run else "removed"
        lines = [f"{verb} {r.location} {r.version}: {r.size} bytes" for r in self.removals]
        orphans = sum(r.orphan for r in self.removals)
        counts = f"{len(self.removals) - orphans} versions, " + (f"{orphans} orphans, " if orphans else "")
        total = f"{counts}{self.total_bytes} bytes"
        lines.append(f"total: {total} {'would be freed (dry run: nothing removed)' if dry_run else 'freed'}")
        return lines


def committed_at(version: str) -> datetime | None:
    """When a version named v-<utc time>-<id> was committed; None for a name in another form."""
    try:
        return datetime.strptime(version.split("-")[1], VERSION_TIME_FORMAT).replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return None


def expired_versions(
    versions: Iterable[str], current: str | None, protected: set[str], policy: RetentionPolicy, now: datetime
) -> list[str]:
    """The versions that the policy lets go, oldest first. A version is retired when the next one is committed;
    one retired less than the grace period ago stays. Names that carry no time are never removed."""
    ordered = sorted(versions)
    kept = set(ordered[-policy.keep :]) | protected | {current}
    expired = []
    for version, successor in pairwise(ordered):
        retired = committed_at(successor)
        if version in kept or committed_at(version) is None or retired is None or now - retired < policy.grace:
            continue
        expired.append(version)
    return expired


@dataclass(frozen=True)
class Reference:
    """A version of an asset partition that a publication needs: named, or matched by content."""

    key: tuple[str, ...]
    version: str = ""
    model_md5: str = ""  # the onnx_model version whose model.onnx has this md5
    data_version: str = ""  # the dataset version whose manifest.json records this data_version

    def matches(self, version: str, file_md5: Callable[[str, str], str | None], manifest: Callable) -> bool:
        if self.version:
            return version == self.version
        if self.model_md5:
            return file_md5(version, "model.onnx") == self.model_md5
        return (manifest(version) or {}).get("data_version") == self.data_version


def publication_references(config: ModelConfig) -> list[Reference]:
    """What one published config.yaml keeps in the artifact store (see the module docstring)."""
    sources = config.source_versions
    references = [Reference(tuple(location.split("/")), version=v) for location, v in sources.items()]
    if f"onnx_model/{config.feature_set}" not in sources and config.model_md5:
        references.append(Reference(("onnx_model", config.feature_set), model_md5=config.model_md5))
    references.append(Reference(("processed_tfrecords", config.feature_set), data_version=config.data_version))
    return references


def with_source_version(config: ModelConfig, key: tuple[str, ...], version_root: str | os.PathLike) -> ModelConfig:
    """config plus the store version it was read from (the name of the version directory the store returned),
    to publish beside a model so that retention keeps that version."""
    sources = {**config.source_versions, "/".join(key): Path(version_root).name}
    return config.model_copy(update={"source_versions": sources})


def referenced_versions(
    references: Iterable[Reference], key: tuple[str, ...], versions: Iterable[str], file_md5, manifest
) -> set[str]:
    relevant = [r for r in references if r.key == tuple(key)]
    return {v for v in versions if any(r.matches(v, file_md5, manifest) for r in relevant)}


def plan(store, registry, policy: RetentionPolicy, keys=None, models=None, now: datetime | None = None):
    """What the policy removes from a store and its model registry. keys / models: only these asset partitions /
    published models (None: all); references are collected from every publication either way. Both None (the
    whole store): the orphans older than the grace period too."""
    now = now or datetime.now(UTC)
    registry_plan, kept_configs = registry.plan_retention(policy, now, models)
    references = [r for config in kept_configs for r in publication_references(config)]
    whole = store.plan_retention(policy, references, now, keys) + registry_plan
    if keys is None and models is None:
        whole = whole + store.plan_orphans(policy.grace, now) + registry.plan_orphans(policy.grace, now)
    return whole


def newest_change(path: Path) -> datetime:
    """The newest modification time of a file, or of a folder and everything in it (links not followed)."""
    newest = path.lstat().st_mtime
    for directory, folders, files in os.walk(path):
        for name in (*folders, *files):
            try:
                newest = max(newest, Path(directory, name).lstat().st_mtime)
            except FileNotFoundError:  # removed meanwhile
                pass
    return datetime.fromtimestamp(newest, UTC)


def holds_a_file(folder: Path) -> bool:
    return any(files for _, _, files in os.walk(folder))


def local_orphans(location: str, paths: Iterable[Path], grace: timedelta, now: datetime) -> list[Removal]:
    """The removals of these leftover files and folders that changed no later than `grace` before now."""
    removals = []
    for path in sorted(paths):
        try:
            if now - newest_change(path) >= grace:
                removals.append(Removal(location, path.name, local_size(path), (str(path),)))
        except FileNotFoundError:  # removed meanwhile (a commit moved it, another gc removed it)
            continue
    return removals


def staging_orphans(staging_root: Path, grace: timedelta, now: datetime) -> RetentionPlan:
    """The staging folders under staging_root that hold a file and changed no later than `grace` before now."""
    if not staging_root.is_dir():
        return RetentionPlan()
    folders = [p for p in staging_root.iterdir() if p.is_dir() and not p.is_symlink() and holds_a_file(p)]
    return RetentionPlan(tuple(local_orphans(STAGING_ORPHANS, folders, grace, now)))


def multipart_target(bucket: str, key: str, upload_id: str) -> str:
    return f"{MULTIPART}{bucket}/{key}#{upload_id}"


def apply(plan: RetentionPlan, s3_client=None) -> None:
    """Delete what a plan lists, version by version, each version's targets in order. Something already gone
    (another gc, a commit that moved its staging folder) is no failure."""
    for removal in plan.removals:
        s3_keys: dict[str, list[str]] = {}
        for target in removal.targets:
            if target.startswith(MULTIPART):
                _abort_upload(s3_client, target, removal)
            elif target.startswith("s3://"):
                bucket, _, key = target.removeprefix("s3://").partition("/")
                s3_keys.setdefault(bucket, []).append(key)
            else:
                _remove_local(Path(target))
        for bucket, keys in s3_keys.items():
            _delete_objects(s3_client, bucket, keys, removal)


def _remove_local(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _abort_upload(s3_client, target: str, removal: Removal) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from droughtwatch_assets.storage.s3_client import describe_failure

    if s3_client is None:
        raise ValueError(f"removing {removal.location} {removal.version} needs an S3 client: it is in S3")
    bucket, _, rest = target.removeprefix(MULTIPART).partition("/")
    key, _, upload_id = rest.rpartition("#")
    try:
        s3_client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") != "NoSuchUpload":  # completed or aborted meanwhile
            raise describe_failure(s3_client, bucket, f"abort of {removal.version}", exc) from None
    except BotoCoreError as exc:
        raise describe_failure(s3_client, bucket, f"abort of {removal.version}", exc) from None


def _delete_objects(s3_client, bucket: str, keys: list[str], removal: Removal) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from droughtwatch_assets.storage.s3_client import S3Error, describe_failure

    if s3_client is None:
        raise ValueError(f"removing {removal.location} {removal.version} needs an S3 client: its objects are in S3")
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        batch = keys[start : start + 1000]
        try:
            response = s3_client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        except (ClientError, BotoCoreError) as exc:
            raise describe_failure(s3_client, bucket, f"delete of {removal.location} {removal.version}", exc) from None
        if response.get("Errors"):
            first = response["Errors"][0]
            raise S3Error(
                f"S3 delete of {removal.location} {removal.version} failed for {len(response['Errors'])} objects in "
                f"bucket {bucket!r}, e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}; "
                f"check the credentials allow s3:DeleteObject, then run `droughtwatch gc` again"
            )


def local_size(path: Path) -> int:
    """The bytes of a file, or of the files in a folder (links not followed)."""
    if not path.is_dir() or path.is_symlink():
        return 0 if path.is_symlink() else path.stat().st_size
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            file = Path(directory, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total
