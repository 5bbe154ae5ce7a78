"""Published models: `<model name>/` in a registry folder or bucket, published as a pair that no reader sees torn.

<registry>/<model name>/
    versions/<version>/model.onnx     immutable: each publication gets its own folder
    versions/<version>/config.yaml    the training config, plus `model_md5` of the model.onnx beside it
    versions/<version>/<attachment>   files published with the model (its model card, ...), if any
    CURRENT                           the current version's name, written after both files of the version
    model.onnx, config.yaml, ...      copies in the original project's layout, written after CURRENT

A reader that needs the pair reads CURRENT, then `versions/<CURRENT>/`: two immutable files of one
publication. The top-level copies are two separate writes, so for a moment they can disagree; their
config's `model_md5` tells a reader whether it holds the config of that model.onnx, and the ONNX file
carries the same config in its own metadata_props (see model_config.py).
Old publications stay until retention removes them (retention.py); the CURRENT one always stays. What a killed
publication leaves (versions/.<version>.partial and .<name>.<id>.tmp in a folder, a version without its pair in
S3, the versions of a model that never got a CURRENT) goes with `droughtwatch gc` once older than the grace period.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from droughtwatch_assets.core.model_config import ModelConfig
from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.storage import durable, retention

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"
CURRENT = "CURRENT"
CARD_FILE = "MODEL_CARD.md"  # the model card published with each model (model/card.py)
PUBLISHED_VERSION = "published_version"  # the tag by which a tracker's model version names its publication here
VERSIONS = "versions"
PARTIAL = re.compile(r"\.v-.+\.partial")  # a local publication being written: versions/.<version>.partial
TMP = re.compile(r"\..+\.[0-9a-f]{6}\.tmp")  # a top-level file or CURRENT being replaced: .<name>.<id>.tmp


class TornPair(RuntimeError):
    """A model.onnx and a config.yaml that belong to different publications."""


@dataclass(frozen=True)
class Publication:
    model_name: str
    version: str
    model_uri: str  # the original layout: <model>/model.onnx
    config_uri: str
    version_uri: str  # <model>/versions/<version>/, the immutable pair


# Files published with a model besides model.onnx and config.yaml (e.g. its model card): name -> text.
Attachments = Mapping[str, str] | None


def new_version() -> str:
    return f"v-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:6]}"


def published_config(config: ModelConfig, model_path: str | os.PathLike, version: str) -> str:
    return config.model_copy(update={"model_md5": md5_of(model_path), "published_version": version}).to_yaml()


def check_pair(model_path: str | os.PathLike, config: ModelConfig, where: str) -> None:
    """Fail when the config, or the model card beside the model, belongs to another model.onnx."""
    expected = config.model_md5
    if expected and expected != md5_of(model_path):
        raise TornPair(
            f"{where}: config.yaml belongs to another model.onnx (model_md5 {expected}); a publication "
            f"was under way. Read it again, or read {VERSIONS}/<{CURRENT}>/"
        )
    card = Path(model_path).parent / CARD_FILE
    if card.exists():
        described = _front_matter(card.read_text()).get("model_md5")
        if described != md5_of(model_path):
            raise TornPair(
                f"{where}: {CARD_FILE} describes another model.onnx (model_md5 {described}); a publication was "
                f"under way. Read it again, or read {VERSIONS}/<{CURRENT}>/"
            )


def _front_matter(card: str) -> dict:
    parts = card.split("---\n", 2)
    return (yaml.safe_load(parts[1]) or {}) if card.startswith("---\n") and len(parts) == 3 else {}


class LocalModelRegistry:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()

    def publish(
        self, model_name: str, onnx_path: str | os.PathLike, config: ModelConfig, attachments: Attachments = None
    ) -> Publication:
        folder = self.root / model_name
        version = new_version()
        staging = folder / VERSIONS / f".{version}.partial"
        staging.mkdir(parents=True)
        shutil.copyfile(onnx_path, staging / MODEL_FILE)
        (staging / CONFIG_FILE).write_text(published_config(config, onnx_path, version))
        for name, text in (attachments or {}).items():
            (staging / name).write_text(text)
        durable.sync_tree(staging)
        durable.replace(staging, folder / VERSIONS / version)
        _replace_text(folder / CURRENT, version)
        for name in (MODEL_FILE, CONFIG_FILE, *(attachments or {})):  # the original layout, model first
            tmp = folder / f".{name}.{uuid.uuid4().hex[:6]}.tmp"
            shutil.copyfile(folder / VERSIONS / version / name, tmp)
            durable.sync_file(tmp)
            durable.replace(tmp, folder / name)
        return Publication(
            model_name,
            version,
            (folder / MODEL_FILE).as_uri(),
            (folder / CONFIG_FILE).as_uri(),
            (folder / VERSIONS / version).as_uri() + "/",
        )

    def current(self, model_name: str) -> tuple[Path, ModelConfig] | None:
        """The current publication of model_name (model file, config), or None if there is none."""
        folder = self.root / model_name
        if not (folder / CURRENT).exists():
            return None
        return fetch_published(str(folder), folder)

    def model_names(self) -> list[str]:
        """The published models: folders of the registry that have a CURRENT."""
        return sorted(p.name for p in self.root.iterdir() if (p / CURRENT).is_file()) if self.root.is_dir() else []

    def plan_retention(self, policy, now, models=None) -> tuple[retention.RetentionPlan, list[ModelConfig]]:
        """(the publications the policy removes, of `models` or all; the configs of every publication kept)."""
        removals, kept_configs = [], []
        for name in self.model_names():
            folder = self.root / name / VERSIONS
            versions = sorted(p.name for p in folder.iterdir() if p.name.startswith("v-") and p.is_dir())
            current = (self.root / name / CURRENT).read_text().strip()
            expired = retention.expired_versions(versions, current, set(), policy, now)
            if models is not None and name not in models:
                expired = []
            for version in versions:
                if version in expired:
                    path = folder / version
                    removals.append(
                        retention.Removal(f"registry {name}", version, retention.local_size(path), (str(path),))
                    )
                elif (folder / version / CONFIG_FILE).is_file():
                    config_path = folder / version / CONFIG_FILE
                    kept_configs.append(ModelConfig.from_yaml(config_path.read_text(), str(config_path)))
        return retention.RetentionPlan(tuple(removals)), kept_configs

    def plan_orphans(self, grace, now) -> retention.RetentionPlan:
        """What killed publications left, unchanged for `grace`: partial versions, temporary files, and the
        versions of a model with no CURRENT."""
        removals = []
        folders = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        for folder in folders:
            versions = folder / VERSIONS
            never_current = not (folder / CURRENT).is_file()
            leftovers = [p for p in folder.iterdir() if TMP.fullmatch(p.name) and p.is_file()]
            if versions.is_dir():
                leftovers += [
                    p
                    for p in versions.iterdir()
                    if p.is_dir() and (PARTIAL.fullmatch(p.name) or (never_current and p.name.startswith("v-")))
                ]
            removals.extend(
                retention.local_orphans(f"{retention.ORPHANS}registry {folder.name}", leftovers, grace, now)
            )
        return retention.RetentionPlan(tuple(removals))


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    durable.write_text(tmp, text)
    durable.replace(tmp, path)


class S3ModelRegistry:
    def __init__(self, store):
        """`store`: an S3ArtifactStore on the registry bucket, for its bucket check, retries and errors."""
        self.store = store

    def publish(
        self, model_name: str, onnx_path: str | os.PathLike, config: ModelConfig, attachments: Attachments = None
    ) -> Publication:
        store, client = self.store, self.store.client
        store.ensure_bucket()
        version = new_version()
        version_key = store.key(model_name, VERSIONS, version)
        store.call(
            f"upload of {onnx_path} to {version_key}/{MODEL_FILE}",
            client.upload_file,
            os.fspath(onnx_path),
            store.bucket,
            f"{version_key}/{MODEL_FILE}",
        )
        config_text = published_config(config, onnx_path, version).encode()
        store.put_bytes(f"{version_key}/{CONFIG_FILE}", config_text)
        for name, text in (attachments or {}).items():
            store.put_bytes(f"{version_key}/{name}", text.encode())
        store.put_bytes(store.key(model_name, CURRENT), version.encode())
        store.call(
            f"copy to {model_name}/{MODEL_FILE}",
            client.copy_object,
            Bucket=store.bucket,
            Key=store.key(model_name, MODEL_FILE),
            CopySource={"Bucket": store.bucket, "Key": f"{version_key}/{MODEL_FILE}"},
        )
        store.put_bytes(store.key(model_name, CONFIG_FILE), config_text)
        for name, text in (attachments or {}).items():
            store.put_bytes(store.key(model_name, name), text.encode())
        return Publication(
            model_name,
            version,
            store.uri(model_name, MODEL_FILE),
            store.uri(model_name, CONFIG_FILE),
            f"s3://{store.bucket}/{version_key}/",
        )

    def current(self, model_name: str, scratch: str | os.PathLike) -> tuple[Path, ModelConfig] | None:
        """The current publication of model_name, downloaded into scratch, or None if there is none."""
        from botocore.exceptions import ClientError

        store, scratch = self.store, Path(scratch)
        store.ensure_bucket()
        try:
            version = store.client.get_object(Bucket=store.bucket, Key=store.key(model_name, CURRENT))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404"):
                return None
            raise
        base = store.key(model_name, VERSIONS, version.decode().strip())
        scratch.mkdir(parents=True, exist_ok=True)
        for name in sorted({obj["Key"][len(base) + 1 :] for obj in store.listing(base + "/")}):
            store.call(
                f"download of {base}/{name}",
                store.client.download_file,
                store.bucket,
                f"{base}/{name}",
                str(scratch / name),
            )
        config = ModelConfig.from_yaml((scratch / CONFIG_FILE).read_text(), store.uri(model_name, CONFIG_FILE))
        check_pair(scratch / MODEL_FILE, config, store.uri(model_name))
        return scratch / MODEL_FILE, config

    def model_names(self) -> list[str]:
        """The published models: top-level folders of the registry prefix that have a CURRENT."""
        return [name for name in self._folders() if self._has_current(name)]

    def _has_current(self, name: str) -> bool:
        return self.store._etag_if_exists(self.store.key(name, CURRENT)) is not None

    def _folders(self) -> list[str]:
        """The names of the top-level folders of the registry prefix."""
        store = self.store
        store.ensure_bucket()
        root = store.key() + "/" if store.key() else ""
        paginator = store.client.get_paginator("list_objects_v2")
        folders = store.call(
            f"listing of {store.uri()}",
            lambda: [
                p["Prefix"]
                for page in paginator.paginate(Bucket=store.bucket, Prefix=root, Delimiter="/")
                for p in page.get("CommonPrefixes", [])
            ],
        )
        return sorted(f[len(root) :].strip("/") for f in folders)

    def plan_retention(self, policy, now, models=None) -> tuple[retention.RetentionPlan, list[ModelConfig]]:
        """(the publications the policy removes, of `models` or all; the configs of every publication kept)."""
        store = self.store
        removals, kept_configs = [], []
        for name in self.model_names():
            current = store.read_text(store.key(name, CURRENT))
            base = store.key(name, VERSIONS) + "/"
            by_version: dict[str, list[dict]] = {}
            for obj in store.listing(base):
                by_version.setdefault(obj["Key"][len(base) :].split("/")[0], []).append(obj)
            versions = [v for v in by_version if v.startswith("v-")]
            expired = retention.expired_versions(versions, current, set(), policy, now)
            if models is not None and name not in models:
                expired = []
            for version in sorted(versions):
                objects = by_version[version]
                if version in expired:
                    targets = tuple(f"s3://{store.bucket}/{o['Key']}" for o in objects)
                    size = sum(o["Size"] for o in objects)
                    removals.append(retention.Removal(f"registry {name}", version, size, targets))
                    continue
                config_key = f"{base}{version}/{CONFIG_FILE}"
                if any(o["Key"] == config_key for o in objects):
                    body = store.call(
                        f"read of {config_key}", store.client.get_object, Bucket=store.bucket, Key=config_key
                    )["Body"].read()
                    kept_configs.append(ModelConfig.from_yaml(body, f"s3://{store.bucket}/{config_key}"))
        return retention.RetentionPlan(tuple(removals)), kept_configs

    def plan_orphans(self, grace, now) -> retention.RetentionPlan:
        """What killed publications left, unchanged for `grace` (by their newest object): a version folder without
        model.onnx or config.yaml, the versions of a model with no CURRENT, and incomplete multipart uploads."""
        store = self.store
        removals = []
        for name in self._folders():
            base = store.key(name, VERSIONS) + "/"
            by_version: dict[str, list[dict]] = {}
            for obj in store.listing(base):
                by_version.setdefault(obj["Key"][len(base) :].split("/")[0], []).append(obj)
            if not by_version:
                continue
            current = store.read_text(store.key(name, CURRENT)) if self._has_current(name) else None
            for version, objects in sorted(by_version.items()):
                files = {o["Key"][len(base) + len(version) + 1 :] for o in objects}
                if not version.startswith("v-") or version == current:
                    continue
                if current is not None and {MODEL_FILE, CONFIG_FILE} <= files:
                    continue  # a whole publication: retention's
                if now - max(o["LastModified"] for o in objects) < grace:
                    continue
                targets = tuple(f"s3://{store.bucket}/{o['Key']}" for o in objects)
                size = sum(o["Size"] for o in objects)
                removals.append(retention.Removal(f"{retention.ORPHANS}registry {name}", version, size, targets))
        root = store.key() + "/" if store.key() else ""
        publication = re.compile(rf"{re.escape(root)}[^/]+/{VERSIONS}/v-[^/]+/.+")
        uploads = store.multipart_orphans(root, publication.fullmatch, grace, now)
        return retention.RetentionPlan(tuple(removals)) + uploads


def fetch_published(location: str, scratch: str | os.PathLike) -> tuple[Path, ModelConfig | None]:
    """(a local model.onnx, its config or None) from what a user points at: a model file, a published
    `<model>/` folder, or an `s3://bucket/.../<model>/` prefix or `s3://.../model.onnx` key. A publication's
    attachments sit beside the model file (downloaded with it from S3)."""
    scratch = Path(scratch)
    if location.startswith("s3://"):
        scratch.mkdir(parents=True, exist_ok=True)
        return _fetch_s3(location, scratch)
    path = Path(location)
    if path.is_dir():
        if (path / CURRENT).exists():
            path = path / VERSIONS / (path / CURRENT).read_text().strip()
        model, config_path = path / MODEL_FILE, path / CONFIG_FILE
        if not model.exists():
            raise FileNotFoundError(
                f"{location}: no {MODEL_FILE} in this folder (nor a {CURRENT} file naming a published version)"
            )
        config = ModelConfig.from_yaml(config_path.read_text(), str(config_path)) if config_path.exists() else None
        if config:
            check_pair(model, config, location)
        return model, config
    if not path.exists():
        raise FileNotFoundError(f"{location}: no such model file or folder")
    return path, None


def _fetch_s3(uri: str, scratch: Path) -> tuple[Path, ModelConfig | None]:
    from urllib.parse import urlparse

    from droughtwatch_assets.storage.s3_client import S3Error, client, download_uri

    s3_client = client()  # the standard AWS variables, AWS_ENDPOINT_URL included
    if uri.endswith(".onnx"):
        return download_uri(uri, scratch / MODEL_FILE, s3_client), None
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    try:
        version = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/{CURRENT}")["Body"].read().decode().strip()
    except Exception as exc:
        raise S3Error(f"{uri}: no published model here ({prefix}/{CURRENT} could not be read: {exc})") from None
    base = f"s3://{bucket}/{prefix}/{VERSIONS}/{version}"
    model = download_uri(f"{base}/{MODEL_FILE}", scratch / MODEL_FILE, s3_client)
    config_path = download_uri(f"{base}/{CONFIG_FILE}", scratch / CONFIG_FILE, s3_client)
    for name in _attachment_names(s3_client, bucket, f"{prefix}/{VERSIONS}/{version}/"):
        download_uri(f"{base}/{name}", scratch / name, s3_client)  # beside the model, as in a published folder
    config = ModelConfig.from_yaml(config_path.read_text(), f"{base}/{CONFIG_FILE}")
    check_pair(model, config, uri)
    return model, config


def _attachment_names(s3_client, bucket: str, prefix: str) -> list[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    from droughtwatch_assets.storage.s3_client import describe_failure

    try:
        listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    except (ClientError, BotoCoreError) as exc:
        raise describe_failure(s3_client, bucket, f"listing of s3://{bucket}/{prefix}", exc) from None
    names = (obj["Key"][len(prefix) :] for obj in listing)
    return sorted(name for name in names if name and "/" not in name and name not in (MODEL_FILE, CONFIG_FILE))
