"""What a whole version of the stores is, read without the product's readers: the invariants the chaos campaign
(test_chaos.py) and the dead-run-worker tests (defs/test_dead_run_worker.py) check after a kill.

- each asset partition's current version is whole: a committed version (v-<time>-<id>), every shard its manifest
  lists there at its size and md5 (raw) and with as many TFRecord frames as it says, every model loading
  (onnxruntime for model.onnx, zipfile's testzip for model.keras), every JSON, YAML and Parquet file readable;
- each published model's current version is a consistent triple: the md5 of its model.onnx is the model_md5 of its
  config.yaml and of its model card's front matter, and the config names that very version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

VERSION = re.compile(r"v-\d{8}T\d{12}-[0-9a-f]{6}")
EXPECTED_FILES = {
    "raw_tfrecords": ("manifest.json",),
    "processed_tfrecords": ("manifest.json",),
    "trained_model": ("model.keras",),
    "onnx_model": ("model.onnx", "config.yaml"),
    "predictions": ("predictions.parquet",),
}
CHAMPION = "registry champion"


# -- what a whole version is, read without the product's readers ---------------------------------------------------
def md5(data_or_path: bytes | Path) -> str:
    if isinstance(data_or_path, bytes):
        return hashlib.md5(data_or_path).hexdigest()
    digest = hashlib.md5()
    with open(data_or_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tfrecord_frames(path: Path) -> int | str:
    """The number of records in a TFRecord file, from its framing (length, length CRC, payload, payload CRC);
    a message where the framing breaks."""
    size, frames, offset = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                return f"truncated header at byte {offset}"
            (length,) = struct.unpack("<Q", header[:8])
            offset += 12 + length + 4
            if offset > size:
                return f"record {frames} announces {length} bytes past the end of the file"
            f.seek(offset)
            frames += 1
    return frames


def version_problems(root: Path, asset: str) -> list[str]:
    """What keeps the folder of one version of `asset` from being whole ([] when it is)."""
    if not root.is_dir():
        return ["not there (named before it was in place?)"]
    problems = [f"{name} missing" for name in EXPECTED_FILES.get(asset, ()) if not (root / name).is_file()]
    files = [p for p in root.rglob("*") if p.is_file()]
    if not files:
        problems.append("empty")
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            splits = json.loads(manifest.read_text())["splits"]
        except (ValueError, KeyError) as exc:
            return [*problems, f"manifest.json unreadable: {exc}"]
        for split, content in splits.items():
            for shard in content["shards"]:
                path = root / split / shard["name"]
                where = f"{split}/{shard['name']}"
                if not path.is_file():
                    problems.append(f"{where} listed in the manifest, missing")
                    continue
                if shard.get("bytes") and path.stat().st_size != shard["bytes"]:
                    problems.append(f"{where}: {path.stat().st_size} bytes, the manifest says {shard['bytes']}")
                if shard.get("md5") and md5(path) != shard["md5"]:
                    problems.append(f"{where}: md5 is not the manifest's")
                frames = tfrecord_frames(path)
                if frames != shard["records"]:
                    problems.append(f"{where}: {frames} records framed, the manifest says {shard['records']}")
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".yaml":
                yaml.safe_load(path.read_text())
            elif path.suffix == ".onnx":
                load_onnx(path)
            elif path.suffix == ".keras":
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
                    if bad is not None or "config.json" not in archive.namelist():
                        problems.append(f"{relative}: a broken Keras archive ({bad or 'no config.json'})")
            elif path.suffix == ".parquet":
                import pyarrow.parquet as pq

                pq.read_table(path)
        except Exception as exc:  # whatever a reader raises on a torn file
            problems.append(f"{relative} does not load: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


def load_onnx(path: Path) -> None:
    import onnxruntime as ort

    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def publication_problems(root: Path, version: str) -> list[str]:
    """What keeps one published version from being a consistent model / config / card triple."""
    names = ("model.onnx", "config.yaml", "MODEL_CARD.md")
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        return [f"{', '.join(missing)} missing"]
    problems = []
    model_md5 = md5(root / "model.onnx")
    try:
        config = yaml.safe_load((root / "config.yaml").read_text())
    except yaml.YAMLError as exc:
        return [f"config.yaml unreadable: {exc}"]
    card = (root / "MODEL_CARD.md").read_text().split("---\n", 2)
    front = yaml.safe_load(card[1]) if len(card) == 3 and not card[0] else {}
    if config.get("model_md5") != model_md5:
        problems.append(f"config.yaml's model_md5 {config.get('model_md5')} is not model.onnx's {model_md5}")
    if (front or {}).get("model_md5") != model_md5:
        problems.append(f"the card's model_md5 {(front or {}).get('model_md5')} is not model.onnx's {model_md5}")
    if config.get("published_version") != version:
        problems.append(f"config.yaml names version {config.get('published_version')}")
    try:
        load_onnx(root / "model.onnx")
    except Exception as exc:
        problems.append(f"model.onnx does not load: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


def holds_a_file(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))


@dataclass
class Leftovers:
    orphans: list[str] = field(default_factory=list)  # what gc should remove
    empty_staging: int = 0  # empty staging folders: gc leaves them by design (they free nothing)


# -- the local store, as these tests read it -------------------------------------------------------------------------
class LocalView:
    """$DROUGHTWATCH_DATA_DIR: <asset>/<partition>/current -> v-...; registry/<model>/CURRENT, versions/<v>/."""

    def __init__(self, data: Path):
        self.data, self.registry = data, data / "registry"

    def locations(self) -> list[Path]:
        """<asset>/<partition> folders with a `current` (a dangling one too: glob would pass it over)."""
        return [
            partition
            for asset in sorted(self.data.iterdir())
            if asset.is_dir() and not asset.name.startswith(".") and asset.name != "registry"
            for partition in sorted(asset.iterdir())
            if os.path.lexists(partition / "current")
        ]

    def currents(self) -> dict[str, str]:
        found = {}
        for location in self.locations():
            link = location / "current"
            found[f"{location.parent.name}/{location.name}"] = (
                os.readlink(link) if link.is_symlink() else "<not a symlink>"
            )
        for current in sorted(self.registry.glob("*/CURRENT")):
            found[f"registry {current.parent.name}"] = current.read_text().strip()
        return found

    def problems(self, where: str, version: str) -> list[str]:
        if not VERSION.fullmatch(version):
            return [f"names {version!r}, not a committed version"]
        if where.startswith("registry "):
            return publication_problems(self.registry / where.split(" ", 1)[1] / "versions" / version, version)
        return version_problems(self.data / where / version, where.split("/")[0])

    def leftovers(self) -> Leftovers:
        found = Leftovers()
        staging = self.data / ".staging"
        for folder in sorted(staging.iterdir()) if staging.is_dir() else []:
            if holds_a_file(folder):
                found.orphans.append(f"staging folder {folder.name} holds files")
            else:
                found.empty_staging += 1
        for location in self.locations():
            for entry in sorted(location.iterdir()):
                if entry.name == "current":
                    continue
                if not (VERSION.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()):
                    found.orphans.append(f"{location.parent.name}/{location.name}/{entry.name}: not a version")
                elif problems := version_problems(entry, location.parent.name):
                    found.orphans.append(f"{location.parent.name}/{location.name}/{entry.name}: {problems[0]}")
        for model in sorted(self.registry.iterdir()) if self.registry.is_dir() else []:
            has_current = (model / "CURRENT").is_file()
            for entry in sorted(model.iterdir()):
                if entry.name.startswith("."):
                    found.orphans.append(f"registry {model.name}/{entry.name}")
            versions = model / "versions"
            for entry in sorted(versions.iterdir()) if versions.is_dir() else []:
                if not has_current or not VERSION.fullmatch(entry.name):
                    found.orphans.append(f"registry {model.name}/versions/{entry.name}")
                elif problems := publication_problems(entry, entry.name):
                    found.orphans.append(f"registry {model.name}/versions/{entry.name}: {problems[0]}")
        return found
