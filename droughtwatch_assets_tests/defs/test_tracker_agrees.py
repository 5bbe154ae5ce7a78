"""The tracker agrees with the store: a real `mlflow server` on loopback is stopped right after the store has
published a model, and again right after it has published the champion; once the server is back and the step is
run again, MLflow's versions and its `champion` alias name the store's CURRENT publications. The data is
test_champion_fast's: a model learns it in a few epochs."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets.wiring.resources import LocalStore, TrackingResource
from droughtwatch_assets_tests.conftest import DATA_ASSETS, assets_named, free_port, run_config, wait_for_http
from droughtwatch_assets_tests.defs.test_champion_fast import write_split

EVALUATED = (*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation")


class MlflowServer:
    """An `mlflow server` on loopback (sqlite backend, local artifacts) that a test stops and starts again on the
    same port and database."""

    def __init__(self, root: Path):
        self.root, self.port, self.process = root, free_port(), None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            *(Path(sys.executable).parent / "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{self.root}/mlflow.db"),
            *("--artifacts-destination", str(self.root / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        with open(self.root / "server.log", "a") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_http(f"{self.uri}/health", self.process, timeout=180)

    def stop(self) -> None:
        """The server and its workers gone, its port closed."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and the workers it started
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    time.sleep(0.2)
            except OSError:
                return
        raise TimeoutError(f"mlflow server on port {self.port} still answers 30 s after SIGTERM")


# The server to stop once the store has published (the store's publish stops it, once).
STOP_AFTER_PUBLISHING: list[MlflowServer] = []


class StopsTheTrackerOncePublished(LocalStore):
    """The local store, whose next publication stops the MLflow server as soon as the store has committed it:
    the tracker goes away in the middle of a publication."""

    def publish(self, *args, **kwargs):
        publication = super().publish(*args, **kwargs)
        while STOP_AFTER_PUBLISHING:
            STOP_AFTER_PUBLISHING.pop().stop()
        return publication


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a stopped server fails a call in seconds
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    yield server
    STOP_AFTER_PUBLISHING.clear()
    server.stop()


def registry_folder(data: Path, name: str) -> Path:
    return data / "registry" / name


def current(data: Path, name: str) -> str:
    return (registry_folder(data, name) / "CURRENT").read_text()


def published_versions(data: Path, name: str) -> list[str]:
    return sorted(p.name for p in (registry_folder(data, name) / "versions").iterdir())


@pytest.mark.mlflow
def test_after_the_tracker_went_away_mid_publication_a_retry_leaves_mlflow_naming_the_stores_current(tmp_path, server):
    write_split(tmp_path / "raw" / "train", 16, seed=0)
    write_split(tmp_path / "raw" / "val", 8, seed=1)
    data, instance = tmp_path / "data", dg.DagsterInstance.ephemeral()
    model_name, registered = f"baseline-{time.time_ns()}", f"droughtwatch-{time.time_ns()}"
    tracking = TrackingResource(
        default_tracker="mlflow", mlflow_tracking_uri=server.uri, mlflow_experiment=f"agree-{time.time_ns()}"
    )
    resources = {**local_resources(data), "store": StopsTheTrackerOncePublished(base_dir=str(data.absolute()))}
    resources["tracking"] = tracking
    training = {"epochs": 3, "batch_size": 8, "learning_rate": 2e-3, "tracker": "mlflow"}
    config = run_config(
        {"source": "folder", "folder": str(tmp_path / "raw")},
        {**training, "register_model": True, "model_name": model_name},
        processing={"workers": 1},
    )
    client = MlflowClient(server.uri)

    # 1. the server stops once the store has published the model: the step fails, and so do its two retries
    STOP_AFTER_PUBLISHING.append(server)
    first = dg.materialize(
        assets_named(*EVALUATED, "published_model"),
        partition_key="baseline",
        instance=instance,
        resources=resources,
        run_config=config,
        raise_on_error=False,
    )
    assert not first.success and first.failure_data_for_node("published_model") is not None
    [half_done] = published_versions(data, model_name)  # the retries, with no tracker, published nothing
    assert current(data, model_name) == half_done
    server.start()
    assert client.search_model_versions(f"name = '{model_name}'") == []

    # ... the run again, with the server back: the model is published again and that publication is registered
    again = dg.materialize(
        assets_named(*EVALUATED, "published_model"),
        selection=["published_model"],
        partition_key="baseline",
        instance=instance,
        resources=resources,
    )
    assert again.success
    assert published_versions(data, model_name) == sorted([half_done, current(data, model_name)])
    [version] = client.search_model_versions(f"name = '{model_name}'")
    assert version.tags["published_version"] == current(data, model_name) != half_done
    assert version.tags["published_uri"] == (registry_folder(data, model_name) / "model.onnx").as_uri()

    # 2. the server stops once the store has published the champion
    def compare():
        return dg.materialize(
            [*assets_named(*EVALUATED, "leaderboard", "champion")],
            selection=["leaderboard", "champion"],
            instance=instance,
            resources=resources,
            run_config=dg.RunConfig(ops={"champion": {"config": {"registered_model": registered}}}),
            raise_on_error=False,
        )

    STOP_AFTER_PUBLISHING.append(server)
    promoting = compare()
    assert not promoting.success and promoting.failure_data_for_node("champion") is not None
    [champion] = published_versions(data, "champion")
    assert current(data, "champion") == champion
    server.start()
    assert client.search_registered_models(f"name = '{registered}'") == []

    # ... the run again: the champion is the best model already, and the promotion the tracker missed is completed
    completed = compare()
    assert completed.success
    outcome = completed.output_for_node("champion")
    assert (outcome["promoted"], outcome["reason"]) == (False, "the best model is the champion already (baseline)")
    metadata = completed.asset_materializations_for_node("champion")[0].metadata
    assert metadata["completed_promotion"].value == champion
    [promoted] = client.search_model_versions(f"name = '{registered}'")
    by_alias = client.get_model_version_by_alias(registered, "champion")
    assert by_alias.version == promoted.version
    assert by_alias.tags["published_version"] == current(data, "champion") == champion
    assert by_alias.tags["feature_set"] == "baseline"
    assert published_versions(data, "champion") == [champion]  # completing published nothing again

    # 3. a promotion whose version was made but whose alias was not: the next run sets the alias on that version
    client.delete_registered_model_alias(registered, "champion")
    realiased = compare()
    assert realiased.success
    assert realiased.asset_materializations_for_node("champion")[0].metadata["completed_promotion"].value == champion
    assert [v.version for v in client.search_model_versions(f"name = '{registered}'")] == [promoted.version]
    assert client.get_model_version_by_alias(registered, "champion").version == promoted.version

    # 4. when they agree, the champion step leaves the tracker alone
    agreeing = compare()
    assert agreeing.success
    assert "completed_promotion" not in agreeing.asset_materializations_for_node("champion")[0].metadata
    assert len(client.search_model_versions(f"name = '{registered}'")) == 1
