"""Where raw shards come from: the generated sample, a local folder, an S3 prefix, or the benchmark archive.

The folder and S3 sources can also be listed without reading them (`list_shards`): each shard's name with
its size and mtime (folder) or ETag (S3), which is what the `new_raw_shards` sensor compares between ticks.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from droughtwatch_assets.data.datasets import SHARD_GLOB, SPLITS, data_version, find_split_shards, split_root
from droughtwatch_assets.data.sample import SampleSpec, write_sample
from droughtwatch_assets.records.tfrecord import RecordError
from droughtwatch_assets.sources.download import ARCHIVE_URL, download, extract_shards
from droughtwatch_assets.storage.s3_client import S3Error, client, describe_failure

RawSourceKind = Literal["sample", "folder", "archive", "s3"]
SOURCES: tuple[str, ...] = get_args(RawSourceKind)
LISTABLE = ("folder", "s3")  # the sources whose shards can be listed (and watched) without reading them


@dataclass(frozen=True)
class RawSource:
    kind: RawSourceKind = "sample"
    folder: str = ""
    archive_url: str = ARCHIVE_URL
    archive_sha256: str = ""
    sample: SampleSpec = field(default_factory=SampleSpec)
    uri: str = ""  # for kind s3: s3://bucket/prefix holding train/part-* and val/part-*


def gather_shards(
    source: RawSource,
    scratch: str | os.PathLike,
    download_dir: str | os.PathLike,
    log: Callable[[str], None] = lambda _: None,
    s3_client=None,
    listing: dict[str, ShardStamp] | None = None,
) -> tuple[dict[str, list[Path]], dict]:
    """(split -> shard files, a description of the source for the manifest).

    The S3 source downloads into download_dir/s3/ (see fetch_s3_shards) the shards of `listing` (default: a
    listing made now); s3_client defaults to one built from the standard AWS variables.
    """
    if source.kind == "sample":
        return write_sample(scratch, source.sample), {"type": "sample", **asdict(source.sample)}
    if source.kind == "folder":
        if not source.folder:
            raise ValueError("raw source 'folder' needs a folder (config 'folder' or DROUGHTWATCH_RAW_FOLDER)")
        folder = Path(source.folder).absolute()
        return find_split_shards(folder), {"type": "folder", "folder": str(folder)}
    if source.kind == "s3":
        s3_client = s3_client or _default_client()
        bucket, prefix = split_prefix_uri(_uri_of(source))
        listing = list_s3_shards(s3_client, bucket, prefix) if listing is None else listing
        missing = [split for split in SPLITS if not any(name.startswith(f"{split}/") for name in listing)]
        if missing:
            raise FileNotFoundError(
                f"{prefix_uri(bucket, prefix)}: no {SHARD_GLOB} shards under {', '.join(s + '/' for s in missing)}; "
                f"expected s3://bucket/prefix/train/part-r-NNNNN and s3://bucket/prefix/val/part-r-NNNNN"
            )
        shards, downloaded = fetch_s3_shards(s3_client, bucket, prefix, listing, Path(download_dir, "s3"))
        log(
            f"{prefix_uri(bucket, prefix)}: {len(listing)} shards, {len(downloaded)} downloaded, "
            f"{len(listing) - len(downloaded)} unchanged (ETag) from the cache"
        )
        return shards, {"type": "s3", "uri": prefix_uri(bucket, prefix)}
    if source.kind == "archive":
        logged = [0]

        def progress(done: int, total: int | None) -> None:
            if done - logged[0] >= 50 << 20 or done == total:
                logged[0] = done
                log(f"downloaded {done >> 20} MiB" + (f" of {total >> 20} MiB" if total else ""))

        target = Path(download_dir, Path(source.archive_url).name or "archive.zip")
        archive = download(source.archive_url, target, progress, source.archive_sha256 or None)
        log(f"archive {archive.path}: {archive.size} bytes, sha256 {archive.sha256}")
        return extract_shards(archive.path, scratch), {
            "type": "archive",
            "url": source.archive_url,
            "sha256": archive.sha256,
            "md5": archive.md5,
            "bytes": archive.size,
        }
    raise ValueError(f"raw source {source.kind!r} is not one of {', '.join(SOURCES)} (DROUGHTWATCH_RAW_SOURCE)")


# -- listing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardStamp:
    """What tells one version of a shard from another without reading it: its size, and its modification
    time (folder, nanoseconds) or its ETag (S3)."""

    size: int
    mtime_ns: int | None = None
    etag: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, value: dict) -> ShardStamp:
        return cls(int(value["size"]), value.get("mtime_ns"), value.get("etag"))


def list_shards(source: RawSource, s3_client=None) -> dict[str, ShardStamp]:
    """The source's shards as {"train/part-r-00001": ShardStamp, ...}, sorted by name, without reading them.

    Only the folder and S3 sources can be listed (LISTABLE); the sample and the archive raise ValueError.
    A split without shards is simply absent (gather_shards is the one that requires both). s3_client
    defaults to one built from the standard AWS variables.
    """
    if source.kind == "folder":
        if not source.folder:
            raise ValueError("raw source 'folder' needs a folder (config 'folder' or DROUGHTWATCH_RAW_FOLDER)")
        return list_folder_shards(source.folder)
    if source.kind == "s3":
        bucket, prefix = split_prefix_uri(_uri_of(source))
        return list_s3_shards(s3_client or _default_client(), bucket, prefix)
    raise ValueError(f"raw source {source.kind!r} cannot be listed; only {' and '.join(LISTABLE)} can")


def source_fingerprint(source: RawSource, s3_client=None, listing: dict[str, ShardStamp] | None = None) -> str:
    """A short hash that changes when the source would give other shards, found without reading them.

    Folder and S3: the listing (names, sizes, mtimes or ETags; `listing` if one was just made). Sample: its
    spec. Archive: its URL and expected sha256 (a changed archive behind the same URL is found only by
    downloading it).
    """
    if source.kind in LISTABLE:
        listing = list_shards(source, s3_client) if listing is None else listing
        parts = {name: stamp.to_json() for name, stamp in listing.items()}
    elif source.kind == "sample":
        parts = asdict(source.sample)
    else:
        parts = {"url": source.archive_url, "sha256": source.archive_sha256}
    return data_version([source.kind, parts])


def reuse_key(source: RawSource, fingerprint: str, code_version: str) -> str:
    """What a raw version built now is built from, for reuse_raw_dataset: the source's fingerprint and the code
    version. Empty (never reuse) for an archive without an expected sha256, whose fingerprint misses a changed
    archive behind the same URL."""
    if source.kind == "archive" and not source.archive_sha256:
        return ""
    return data_version([fingerprint, code_version])


def list_folder_shards(folder: str | os.PathLike) -> dict[str, ShardStamp]:
    """<folder>/{train,val}/part-* (or <folder>/droughtwatch_data/..., as find_split_shards) with size and mtime."""
    folder = Path(folder).absolute()
    if not folder.is_dir():
        raise FileNotFoundError(f"raw folder {folder} does not exist (DROUGHTWATCH_RAW_FOLDER)")
    folder = split_root(folder)
    found = {}
    for split in SPLITS:
        if not (folder / split).is_dir():
            continue
        with os.scandir(folder / split) as entries:
            for entry in entries:
                if fnmatch.fnmatchcase(entry.name, SHARD_GLOB) and entry.is_file():
                    stat = entry.stat()
                    found[f"{split}/{entry.name}"] = ShardStamp(stat.st_size, mtime_ns=stat.st_mtime_ns)
    return dict(sorted(found.items()))


def split_prefix_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, prefix without slashes at either end; may be empty)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI (DROUGHTWATCH_RAW_URI)")
    return parsed.netloc, parsed.path.strip("/")


def prefix_uri(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}".rstrip("/")


def list_s3_shards(s3_client, bucket: str, prefix: str) -> dict[str, ShardStamp]:
    """s3://bucket/prefix/{train,val}/part-* (direct children only) with size and ETag, one paginated
    listing per split."""
    found = {}
    paginator = s3_client.get_paginator("list_objects_v2")
    for split in SPLITS:
        split_prefix = f"{prefix}/{split}/" if prefix else f"{split}/"
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=split_prefix):
                for item in page.get("Contents", ()):
                    name = item["Key"][len(split_prefix) :]
                    if "/" not in name and fnmatch.fnmatchcase(name, SHARD_GLOB):
                        found[f"{split}/{name}"] = ShardStamp(int(item["Size"]), etag=item["ETag"].strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise describe_failure(s3_client, bucket, f"listing of s3://{bucket}/{split_prefix}", exc) from None
    return dict(sorted(found.items()))


# -- the S3 source's local cache ---------------------------------------------------------------------


def fetch_s3_shards(
    s3_client, bucket: str, prefix: str, listing: dict[str, ShardStamp], cache_dir: str | os.PathLike
) -> tuple[dict[str, list[Path]], list[str]]:
    """Local copies of the listed shards: (split -> files, the names downloaded now).

    Copies live at <cache_dir>/<bucket>/<prefix>/<split>/<ETag>/<shard name>: a shard whose ETag is
    unchanged is not downloaded again, and a changed one replaces its older copy. Each download goes to a
    temporary name and is renamed when whole, and is made with If-Match on the listed ETag, so a shard
    rewritten in between is never mixed with the listing of another version.
    """
    root = Path(cache_dir, bucket, *prefix.split("/")) if prefix else Path(cache_dir, bucket)
    shards: dict[str, list[Path]] = {split: [] for split in SPLITS}
    downloaded = []
    for name, stamp in listing.items():
        split, shard = name.split("/", 1)
        local = root / split / stamp.etag / shard
        if not (local.is_file() and local.stat().st_size == stamp.size):
            key = "/".join(p for p in (prefix, name) if p)
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(f".{shard}.{uuid.uuid4().hex}.partial")
            try:
                body = s3_client.get_object(Bucket=bucket, Key=key, IfMatch=stamp.etag)["Body"]
                with open(partial, "wb") as f:
                    for chunk in body.iter_chunks(8 << 20):
                        f.write(chunk)
                if partial.stat().st_size != stamp.size:
                    raise S3Error(
                        f"download of s3://{bucket}/{key} stopped at {partial.stat().st_size} of {stamp.size} bytes"
                    )
                os.replace(partial, local)
            except (ClientError, BotoCoreError) as exc:
                raise describe_failure(s3_client, bucket, f"download of s3://{bucket}/{key}", exc) from None
            finally:
                partial.unlink(missing_ok=True)
            downloaded.append(name)
        _drop_older_copies(local)
        shards[split].append(local)
    return shards, downloaded


def _drop_older_copies(local: Path) -> None:
    """Remove <split>/<other ETag>/<same name>: the copies of earlier versions of this shard."""
    for other in local.parent.parent.glob(f"*/{local.name}"):
        if other.parent != local.parent:
            other.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                other.parent.rmdir()  # only if empty


def locate_error(error: RecordError, copies: str | os.PathLike, source: dict) -> RecordError:
    """The error with its file named where the shard came from, when that is clearer than the local copy.

    For the S3 source, an error about <copies>/<split>/<name> (the copy build_raw_dataset read) names
    s3://bucket/prefix/<split>/<name>; other errors come back unchanged.
    """
    if source.get("type") != "s3":
        return error
    try:
        relative = Path(error.path).absolute().relative_to(Path(copies).absolute())
    except ValueError:
        return error
    return RecordError(f"{source['uri']}/{relative.as_posix()}", error.index, error.problem, error.hint)


def _uri_of(source: RawSource) -> str:
    if not source.uri:
        raise ValueError("raw source 's3' needs a URI (config 'uri' or DROUGHTWATCH_RAW_URI), like s3://bucket/prefix")
    return source.uri


def _default_client():
    return client()  # the standard AWS variables, AWS_ENDPOINT_URL included
