"""The Dockerfile, checked statically (no Docker engine here) and in step with the Makefile; every import declared."""

import os
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


@pytest.mark.integration
def test_the_image_loads_the_definitions_from_what_the_dockerfile_copies_and_installs(tmp_path):
    """The Dockerfile copies files into its app folder and installs that folder editable: the definitions load from
    such a folder, imported from another working directory (they need the pyproject.toml it copies)."""
    import shutil

    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "-m pip install --no-cache-dir -e ." in dockerfile
    app = tmp_path / "app"
    app.mkdir()
    for line in dockerfile.splitlines():
        if line.startswith("COPY --chown=1000:1000 ") and line.split()[-1] in ("./", "./droughtwatch_assets"):
            for name in line.split()[2:-1]:
                source = REPO_ROOT / name
                copy = shutil.copytree if source.is_dir() else shutil.copy
                copy(source, app / name)
    code = "import droughtwatch_assets.definitions as d; print(d.__file__, len(d.assets))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(app), "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(app / "droughtwatch_assets" / "definitions.py"), "9"]


def test_instance_settings():
    import yaml

    settings = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert settings["telemetry"]["enabled"] is False
    limit = settings["concurrency"]["runs"]["tag_concurrency_limits"][0]
    assert limit == {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert settings["concurrency"]["pools"]["default_limit"] == 1  # champion steps one at a time


def imported_top_level_modules(*folders: str) -> dict[str, str]:
    """Each module that a file under these folders imports at its top level (absolute imports only), with one
    file that imports it."""
    import ast

    modules = {}
    for folder in folders:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    modules.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return modules


def declared_distributions() -> set[str]:
    import re
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_package_that_the_code_tests_or_benchmarks_import_is_declared():
    from importlib.metadata import packages_distributions

    own = {"droughtwatch_assets", "droughtwatch_assets_tests", "conftest"}
    providers = packages_distributions()
    declared = declared_distributions()
    undeclared = []
    for module, where in imported_top_level_modules(
        "droughtwatch_assets", "droughtwatch_assets_tests", "benchmarks"
    ).items():
        if module in sys.stdlib_module_names or module in own or (REPO_ROOT / "benchmarks" / f"{module}.py").exists():
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not dists & declared:
            undeclared.append(f"{module} (imported by {where}; installed from {sorted(dists) or 'nothing'})")
    assert not undeclared, "declare these in pyproject.toml: " + "; ".join(undeclared)


@pytest.mark.parametrize(
    "path", ["dagster.yaml", *sorted(p.name for p in (REPO_ROOT / "deploy").glob("dagster-*.yaml"))]
)
def test_every_instance_file_keeps_dagsters_stock_run_launcher_with_run_monitoring(path):
    import yaml

    settings = yaml.safe_load((REPO_ROOT / ("" if path == "dagster.yaml" else "deploy") / path).read_text())
    assert "run_launcher" not in settings  # Dagster's default: the code server starts and watches each run worker
    assert settings["run_monitoring"]["enabled"] is True


def test_the_instance_of_dagster_yaml_launches_runs_through_the_stock_launcher(tmp_path):
    import shutil

    import dagster as dg

    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert instance.run_monitoring_enabled


def test_the_helm_values_turn_on_run_monitoring_for_the_kubernetes_run_launcher():
    import yaml

    values = yaml.safe_load((REPO_ROOT / "deploy" / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
