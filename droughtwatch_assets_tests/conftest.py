import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DROUGHTWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
REAL_SHARD = SHARED_DATA / "droughtwatch-real-part-r-00012.tfrecord"
REFERENCE_ONNX = SHARED_DATA / "reference-baseline-b2b3b4b5.onnx"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def real_shard() -> Path:
    assert REAL_SHARD.exists(), f"test data missing: {REAL_SHARD} (set DROUGHTWATCH_SHARED_DATA)"
    return REAL_SHARD


@pytest.fixture(scope="session")
def reference_onnx() -> Path:
    assert REFERENCE_ONNX.exists(), f"test data missing: {REFERENCE_ONNX} (set DROUGHTWATCH_SHARED_DATA)"
    return REFERENCE_ONNX


@pytest.fixture
def real_folder(tmp_path, real_shard) -> Path:
    """The real shard laid out as the benchmark archive extracts (train/ and val/)."""
    for split in ("train", "val"):
        (tmp_path / "real" / split).mkdir(parents=True)
        shutil.copyfile(real_shard, tmp_path / "real" / split / "part-r-00012")
    return tmp_path / "real"
