"""Versioned artifact directories in S3, content-addressed so unchanged files are never uploaded twice.

s3://<bucket>/<prefix>/<asset>/<partition>/
    objects/<relative path>/<md5>     one immutable object per distinct file content
    versions/<version>.json           a version's index: relative path -> object key, md5, size, ETag
    CURRENT                           the current version's name, written last
A reader reads CURRENT, then that version's index: it sees a whole version or the previous one.
Downloads are cached under <cache_dir>/blobs/<ETag>, so unchanged objects are fetched once.
Old versions and the objects only they name stay until retention removes them (retention.py), and objects that no
index names (a killed commit's) until `droughtwatch gc` does, once older than the grace period. A commit that finds
its content already there uploads it again unless the current version names it: such an object (a killed run's,
or an old version's) may be old enough for gc to remove while this commit runs, and the new upload makes it young.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from droughtwatch_assets.data.datasets import MANIFEST, md5_of
from droughtwatch_assets.storage import retention
from droughtwatch_assets.storage.base import VersionedArtifacts
from droughtwatch_assets.storage.s3_client import S3Error, describe_failure

CURRENT = "CURRENT"
# A version's files go up a few at a time, each in one PUT up to 1 GiB: against moto's server on 2 cores, 575 MB
# of 115 MB shards took 2.9 s (4.7 s of CPU, client and server) this way and 4.2 s (6.2 s) in boto3's 8 MiB parts
# one file after the other.
UPLOAD_THREADS = 4
WHOLE_FILES = TransferConfig(multipart_threshold=2**30, multipart_chunksize=64 * 2**20)


class S3ArtifactStore(VersionedArtifacts):
    def __init__(self, client, bucket: str, prefix: str, cache_dir: str | os.PathLike, create_bucket: bool = False):
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.create_bucket = create_bucket
        self.uploaded: list[str] = []  # object keys PUT by this store, for logs and tests
        self._bucket_checked = False

    # -- helpers ---------------------------------------------------------------------------------
    def call(self, action: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise describe_failure(self.client, self.bucket, action, exc) from None

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("404", "NoSuchBucket") or not self.create_bucket:
                raise describe_failure(self.client, self.bucket, "bucket check", exc) from None
            self.call("bucket creation", self.client.create_bucket, Bucket=self.bucket)
        except BotoCoreError as exc:
            raise describe_failure(self.client, self.bucket, "bucket check", exc) from None
        self._bucket_checked = True

    def _etag_if_exists(self, key: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise describe_failure(self.client, self.bucket, f"HEAD {key}", exc) from None

    def put_bytes(self, key: str, body: bytes) -> None:
        self.call(f"PUT {key}", self.client.put_object, Bucket=self.bucket, Key=key, Body=body)
        self.uploaded.append(key)

    # -- the artifact-store interface ------------------------------------------------------------
    def new_staging_dir(self) -> Path:
        path = self.cache_dir / ".staging" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def commit(self, staging: str | os.PathLike, key: tuple[str, ...]) -> str:
        """Upload a finished staging directory as a new version, then point CURRENT at it."""
        self.ensure_bucket()
        staging = Path(staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifests = [path for path in files if path.name == MANIFEST]  # a dataset's manifest goes up last
        safe = self._named_by_current(key)  # reused as they are; other objects found are uploaded again
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            others = sorted(set(files) - set(manifests))
            index = dict(pool.map(lambda path: self._put_file(staging, path, key, safe), others))
        index.update(self._put_file(staging, path, key, safe) for path in manifests)
        version = f"v-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}"
        self.put_bytes(
            self.key(*key, "versions", f"{version}.json"),
            json.dumps({"version": version, "files": index}, indent=1).encode(),
        )
        self.put_bytes(self.key(*key, CURRENT), version.encode())
        # the local copy becomes the cached copy of this version, so a reader in this process needs no download
        local = self._version_dir(key, version)
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, local)
            (local / ".complete").write_text(version)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        return self.uri(*key, "versions", f"{version}.json")

    def _named_by_current(self, key: tuple[str, ...]) -> set[str]:
        """The object keys that the current version of key names (none if there is no current version)."""
        try:
            version = self.client.get_object(Bucket=self.bucket, Key=self.key(*key, CURRENT))["Body"].read().decode()
            index_key = self.key(*key, "versions", f"{version.strip()}.json")
            index = json.loads(self.client.get_object(Bucket=self.bucket, Key=index_key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return set()
            raise describe_failure(self.client, self.bucket, f"read of {self.uri(*key, CURRENT)}", exc) from None
        except BotoCoreError as exc:
            raise describe_failure(self.client, self.bucket, f"read of {self.uri(*key, CURRENT)}", exc) from None
        return {entry["key"] for entry in index["files"].values()}

    def _put_file(self, staging: Path, path: Path, key: tuple[str, ...], safe: set[str]) -> tuple[str, dict]:
        """Uploads one file of a staging directory unless its content is among `safe` and there; its index
        entry."""
        relative = path.relative_to(staging).as_posix()
        md5 = md5_of(path)
        object_key = self.key(*key, "objects", relative, md5)
        etag = self._etag_if_exists(object_key) if object_key in safe else None
        if etag is None:
            self.call(
                f"upload of {path} to {object_key}",
                self.client.upload_file,
                str(path),
                self.bucket,
                object_key,
                Config=WHOLE_FILES,
            )
            self.uploaded.append(object_key)
            etag = self._etag_if_exists(object_key)
        return relative, {"key": object_key, "md5": md5, "size": path.stat().st_size, "etag": etag}

    def _version_dir(self, key: tuple[str, ...], version: str) -> Path:
        return self.cache_dir / "versions" / self.bucket / self.key(*key) / version

    def current(self, key: tuple[str, ...]) -> Path:
        """A local directory holding the current version of key (downloading only what the cache lacks)."""
        self.ensure_bucket()
        try:
            version = self.client.get_object(Bucket=self.bucket, Key=self.key(*key, CURRENT))["Body"].read().decode()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                raise FileNotFoundError(
                    f"no materialisation of {'/'.join(key)} in {self.uri()}; materialise it first"
                ) from None
            raise describe_failure(self.client, self.bucket, f"read of {self.uri(*key, CURRENT)}", exc) from None
        return self.version(key, version)

    def version(self, key: tuple[str, ...], version: str) -> Path:
        """A local directory holding this version of key (downloading only what the cache lacks)."""
        local = self._version_dir(key, version)
        if (local / ".complete").exists():
            return local
        index_key = self.key(*key, "versions", f"{version}.json")
        index = json.loads(
            self.call(f"read of {index_key}", self.client.get_object, Bucket=self.bucket, Key=index_key)["Body"].read()
        )
        partial = local.with_name(local.name + f".partial-{uuid.uuid4().hex[:6]}")
        for relative, entry in index["files"].items():
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = self._cached_blob(entry)
            try:
                os.link(blob, target)
            except OSError:
                shutil.copyfile(blob, target)
        (partial / ".complete").write_text(version)
        try:
            os.replace(partial, local)
        except OSError:  # another reader finished first
            shutil.rmtree(partial, ignore_errors=True)
        return local

    def file_uri(self, key: tuple[str, ...], relative: str) -> str:
        """The s3:// URI of one file of the current version of key (its content-addressed object)."""
        version = self.read_text(self.key(*key, CURRENT))
        index_key = self.key(*key, "versions", f"{version}.json")
        index = json.loads(
            self.call(f"read of {index_key}", self.client.get_object, Bucket=self.bucket, Key=index_key)["Body"].read()
        )
        return f"s3://{self.bucket}/{index['files'][relative]['key']}"

    def _cached_blob(self, entry: dict) -> Path:
        blob = self.cache_dir / "blobs" / entry["etag"]
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_name(f"{blob.name}.{uuid.uuid4().hex[:6]}.part")
            self.call(f"download of {entry['key']}", self.client.download_file, self.bucket, entry["key"], str(tmp))
            if md5_of(tmp) != entry["md5"]:
                tmp.unlink()
                raise S3Error(
                    f"s3://{self.bucket}/{entry['key']}: content does not match its recorded md5 "
                    f"{entry['md5']}; the object was changed outside this store"
                )
            os.replace(tmp, blob)
        return blob

    # -- retention (see retention.py) -------------------------------------------------------------
    def listing(self, prefix: str) -> list[dict]:
        """Every object under prefix (Key, Size, LastModified)."""
        self.ensure_bucket()
        paginator = self.client.get_paginator("list_objects_v2")
        objects = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                objects.extend(page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise describe_failure(self.client, self.bucket, f"listing of {prefix or '/'}", exc) from None
        return objects

    def read_text(self, key: str) -> str:
        """A small object's text (a CURRENT pointer), stripped."""
        body = self.call(f"read of s3://{self.bucket}/{key}", self.client.get_object, Bucket=self.bucket, Key=key)
        return body["Body"].read().decode().strip()

    def read_json(self, key: str) -> dict:
        body = self.call(f"read of {key}", self.client.get_object, Bucket=self.bucket, Key=key)["Body"].read()
        try:
            return json.loads(body)
        except ValueError as exc:
            raise S3Error(
                f"s3://{self.bucket}/{key} is not valid JSON ({exc}); it was changed outside this store. Remove it "
                f"if its version is not needed"
            ) from None

    def remove(self, plan: retention.RetentionPlan) -> None:
        retention.apply(plan, self.client)  # the registry's objects too: the same endpoint and credentials

    def plan_retention(self, policy, references, now, keys=None) -> retention.RetentionPlan:
        """The expired versions of these locations and the objects no kept index names. keys None: every location
        under the prefix (one listing), those never made current included, and an object stays while a kept
        index of any location names it."""
        if keys is None:
            by_location = self._objects_by_location()
        else:
            by_location = {tuple(k): {o["Key"]: o for o in self.listing(self.key(*k) + "/")} for k in keys}
        states = {k: self._read_location(k, objects, policy, references, now) for k, objects in by_location.items()}
        named_by_kept = {key for state in states.values() for key in state.kept_objects}
        removals = []
        for key, state in states.items():
            removals.extend(self._plan_location(key, by_location[key], state, named_by_kept, policy.grace, now))
        return retention.RetentionPlan(tuple(removals))

    def _objects_by_location(self) -> dict[tuple[str, ...], dict[str, dict]]:
        """Every object of the store under its location: the part of its key before objects/, versions/ or
        CURRENT (a location with a CURRENT wins where a name could be read either way)."""
        root = self.key() + "/" if self.prefix else ""
        listing = self.listing(root)
        current = {tuple(o["Key"][len(root) :].split("/")[:-1]) for o in listing if o["Key"].endswith("/" + CURRENT)}
        by_location: dict[tuple[str, ...], dict[str, dict]] = {}
        for obj in listing:
            parts = obj["Key"][len(root) :].split("/")
            candidates = [tuple(parts[:i]) for i in range(1, len(parts) - 1) if parts[i] in ("objects", "versions")]
            if parts[-1] == CURRENT and len(parts) > 1:
                candidates.append(tuple(parts[:-1]))
            if candidates:
                location = next((c for c in candidates if c in current), candidates[0])
                by_location.setdefault(location, {})[obj["Key"]] = obj
        return dict(sorted(by_location.items()))

    def _read_location(self, key: tuple[str, ...], objects: dict, policy, references, now) -> _Location:
        base = self.key(*key) + "/"
        index_keys = {
            k[len(base + "versions/") : -len(".json")]: k
            for k in objects
            if k.startswith(base + "versions/") and k.endswith(".json")
        }
        indexes = {version: self.read_json(k)["files"] for version, k in index_keys.items()}
        expired: list[str] = []
        if base + CURRENT in objects:  # a location never made current keeps its versions (its orphans go)
            current = self.read_text(base + CURRENT)

            def file_md5(version: str, relative: str) -> str | None:
                return indexes[version].get(relative, {}).get("md5")

            def manifest(version: str) -> dict | None:
                entry = indexes[version].get(MANIFEST)
                return self.read_json(entry["key"]) if entry else None

            protected = retention.referenced_versions(references, key, list(indexes), file_md5, manifest)
            expired = retention.expired_versions(indexes, current, protected, policy, now)
        kept = {e["key"] for v, files in indexes.items() if v not in expired for e in files.values()}
        return _Location(index_keys, indexes, expired, kept)

    def _plan_location(self, key, objects: dict, state: _Location, named_by_kept: set, grace, now):
        base = self.key(*key) + "/"

        def removable(k: str) -> bool:  # an object written (or refreshed by a commit reusing it) within grace stays
            return k in objects and now - objects[k]["LastModified"] >= grace

        removals, claimed = [], set(named_by_kept)
        location = "/".join(key)
        for version in state.expired:
            exclusive = sorted({e["key"] for e in state.indexes[version].values()} - claimed)
            claimed.update(exclusive)
            index_key = state.index_keys[version]
            gone = [k for k in exclusive if removable(k)]
            targets = (
                f"s3://{self.bucket}/{index_key}",  # the index first: no reader finds a version missing objects
                *(f"s3://{self.bucket}/{k}" for k in gone),
                str(self._version_dir(key, version)),
            )
            size = objects[index_key]["Size"] + sum(objects[k]["Size"] for k in gone)
            removals.append(retention.Removal(location, version, size, targets))
        unreferenced = sorted(
            k for k in objects if k.startswith(base + "objects/") and k not in claimed and removable(k)
        )
        if unreferenced:
            size = sum(objects[k]["Size"] for k in unreferenced)
            targets = tuple(f"s3://{self.bucket}/{k}" for k in unreferenced)
            removals.append(retention.Removal(location, retention.UNREFERENCED, size, targets))
        return removals

    def plan_orphans(self, grace, now) -> retention.RetentionPlan:
        """Staging folders in the local cache, and incomplete multipart uploads of objects under the prefix."""
        root = self.key() + "/" if self.prefix else ""
        uploads = self.multipart_orphans(root, lambda k: "/objects/" in "/" + k[len(root) :], grace, now)
        return retention.staging_orphans(self.cache_dir / ".staging", grace, now) + uploads

    def multipart_orphans(self, prefix: str, ours, grace, now) -> retention.RetentionPlan:
        """The incomplete multipart uploads under prefix whose key `ours` accepts, untouched for `grace`: neither
        initiated nor given a part since. Their size: the parts uploaded."""
        self.ensure_bucket()
        action = f"listing of the multipart uploads in s3://{self.bucket}/{prefix}"
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        uploads = self.call(action, lambda: [u for page in pages for u in page.get("Uploads", [])])
        removals = []
        for upload in sorted(uploads, key=lambda u: (u["Key"], u["Initiated"])):
            key, upload_id = upload["Key"], upload["UploadId"]
            if not ours(key):
                continue
            try:
                paginator = self.client.get_paginator("list_parts")
                parts = [
                    part
                    for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    for part in page.get("Parts", [])
                ]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") == "NoSuchUpload":  # completed or aborted meanwhile
                    continue
                raise describe_failure(self.client, self.bucket, f"listing of the parts of {key}", exc) from None
            except BotoCoreError as exc:
                raise describe_failure(self.client, self.bucket, f"listing of the parts of {key}", exc) from None
            if now - max([upload["Initiated"], *(p["LastModified"] for p in parts)]) < grace:
                continue
            removals.append(
                retention.Removal(
                    retention.MULTIPART_ORPHANS,
                    f"s3://{self.bucket}/{key} (upload {upload_id})",
                    sum(p["Size"] for p in parts),
                    (retention.multipart_target(self.bucket, key, upload_id),),
                )
            )
        return retention.RetentionPlan(tuple(removals))


@dataclass(frozen=True)
class _Location:
    """A location's versions as retention reads them."""

    index_keys: dict[str, str]  # version -> the key of its index
    indexes: dict[str, dict]  # version -> its index's files
    expired: list[str]
    kept_objects: set[str]  # the object keys that the indexes of the versions it keeps name
