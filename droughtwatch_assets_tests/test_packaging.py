"""The Dockerfile, checked statically (no Docker engine here), and kept in step with the Makefile."""

import subprocess
import sys
from pathlib import Path

import pytest

from droughtwatch_assets_tests.conftest import REPO_ROOT


@pytest.mark.integration
def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_like_the_makefile_and_runs_webserver_and_daemon():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for step in ("-m pip install --upgrade pip", "-m pip install"):
        assert step in makefile and step.replace("install", "install --no-cache-dir") in dockerfile
    assert "USER 1000" in dockerfile and "EXPOSE 3000" in dockerfile
    assert "dagster-daemon run" in dockerfile and "dagster-webserver" in dockerfile
    assert "DAGSTER_HOME=" in dockerfile and "dagster.yaml /opt/dagster/home/dagster.yaml" in dockerfile


def test_instance_settings():
    import yaml

    settings = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert settings["telemetry"]["enabled"] is False
    limit = settings["concurrency"]["runs"]["tag_concurrency_limits"][0]
    assert limit == {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert settings["concurrency"]["pools"]["default_limit"] == 1  # champion steps one at a time
