"""The Dask deployment as a cluster in a box: a real `dask scheduler` and two `dask worker` processes on loopback,
started as docs/beyond-one-machine.md starts them, each worker in its own empty working directory, HOME, TMPDIR,
DROUGHTWATCH_DATA_DIR and DAGSTER_HOME. What they share is what a cluster shares: S3 (moto), the instance's Postgres
and the MLflow server. `dagster-daemon` runs experiments_job as a backfill over all four feature sets; the run
workers it starts only orchestrate, and every step runs on a Dask worker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from droughtwatch_assets.dagster_support.partitions import feature_set_partitions
from droughtwatch_assets.execution.dask_executor import TASK_STARTED
from droughtwatch_assets_tests.conftest import (
    REPO_ROOT,
    TINY_SAMPLE,
    VENV_BIN,
    backfill_experiments,
    daemon_until_runs_end,
    dagster_home,
    free_port,
    materialize_command,
    wait_for,
)

GUIDE = REPO_ROOT / "docs" / "beyond-one-machine.md"
WORKERS = ("worker-1", "worker-2")
# What the steps' own settings and credentials must not come from: this process's environment.
OWN_SETTINGS = ("DROUGHTWATCH_", "DAGSTER_", "AWS_", "MLFLOW_", "WANDB_")


def documented_worker_options() -> list[str]:
    """The options the guide starts `dask worker` with (after the scheduler's address)."""
    return shlex.split(re.search(r"^dask worker \S+ (.*)$", GUIDE.read_text(), re.MULTILINE)[1])


def documented_worker_resources() -> str:
    """The resources the guide starts `dask worker` with."""
    options = documented_worker_options()
    return options[options.index("--resources") + 1]


def base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(OWN_SETTINGS)}
    # the workers import the project from this checkout, as the code location does
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def own_folders(root: Path, instance_file: str) -> dict[str, str]:
    """A machine's own empty folders: working directory, HOME, TMPDIR, data directory and DAGSTER_HOME."""
    for name in ("cwd", "home", "tmp", "data"):
        (root / name).mkdir(parents=True)
    return {
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "DROUGHTWATCH_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(dagster_home(root / "dagster_home", instance_file)),
    }


@contextlib.contextmanager
def running(command: list, env: dict, cwd: Path, log: Path):
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def step_errors(instance: dg.DagsterInstance, runs) -> str:
    """Why steps failed or retried (a failed health check included), with what caused it, run by run."""
    lines = []
    for run in runs:
        for entry in instance.all_logs(run.run_id):
            error = getattr(entry.dagster_event.event_specific_data, "error", None) if entry.dagster_event else None
            while error is not None:
                lines.append(f"{entry.step_key}: {error.message.strip()}")
                error = error.cause
    return "\n".join(lines) + "\n"


def s3_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=endpoint, **credentials)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page["Contents"]]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


@pytest.mark.dask
@pytest.mark.daemon
def test_a_backfill_on_a_dask_cluster_runs_every_step_on_the_workers_which_share_only_s3_postgres_and_mlflow(
    tmp_path, s3_endpoint, mlflow_server, postgres_database, monkeypatch
):
    feature_sets = feature_set_partitions.get_partition_keys()
    logs = tmp_path / "logs"
    logs.mkdir()
    machines = Path(tempfile.mkdtemp(prefix="droughtwatch-dask-"))  # every machine's own disk, removed at the end
    port = free_port()
    tag = f"dask-{time.time_ns()}"
    shared = {
        **postgres_database.env,
        "DROUGHTWATCH_DEPLOYMENT": "dask",
        "DROUGHTWATCH_DASK_SCHEDULER": f"tcp://127.0.0.1:{port}",
        "DROUGHTWATCH_S3_BUCKET": tag,
        "DROUGHTWATCH_REGISTRY_BUCKET": f"{tag}-models",
        "DROUGHTWATCH_S3_CREATE_BUCKET": "true",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "DROUGHTWATCH_TRACKER": "mlflow",
        "MLFLOW_TRACKING_URI": mlflow_server,
        "DROUGHTWATCH_MLFLOW_EXPERIMENT": tag,
        "DROUGHTWATCH_KEEP_VERSIONS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    instance_file = "deploy/dagster-cluster.yaml"
    try:
        own = {name: own_folders(machines / name, instance_file) for name in ("orchestrator", *WORKERS)}
        orchestrator_env = {**base_env(), **shared, **own["orchestrator"]}
        scheduler = [VENV_BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        with contextlib.ExitStack() as cluster:
            orchestrator_cwd = machines / "orchestrator" / "cwd"
            cluster.enter_context(running(scheduler, orchestrator_env, orchestrator_cwd, logs / "scheduler.log"))
            for name in WORKERS:
                worker = [VENV_BIN / "dask", "worker", shared["DROUGHTWATCH_DASK_SCHEDULER"], "--name", name]
                worker += ["--host", "127.0.0.1", "--no-dashboard", *documented_worker_options()]
                env = {**base_env(), **shared, **own[name]}
                cluster.enter_context(running(worker, env, machines / name / "cwd", logs / f"{name}.log"))
            from distributed import Client

            client = cluster.enter_context(Client(shared["DROUGHTWATCH_DASK_SCHEDULER"], timeout="60s"))
            client.wait_for_workers(len(WORKERS), timeout=120)

            backfill_experiments(feature_sets, orchestrator_env)
            # this side's instance: the same file, so the same Postgres and the same S3 for the steps' logs
            logs_settings = ["DROUGHTWATCH_S3_BUCKET", *(name for name in shared if name.startswith("AWS_"))]
            for name in [*postgres_database.env, *logs_settings]:
                monkeypatch.setenv(name, shared[name])
            instance = dg.DagsterInstance.from_config(own["orchestrator"]["DAGSTER_HOME"])
            assert len(instance.get_runs()) == len(feature_sets)
            daemon_until_runs_end(orchestrator_env, instance, timeout=1200)
        worker_logs = {name: (logs / f"{name}.log").read_text() for name in WORKERS}
        files = {name: files_under(machines / name) for name in own}

        # every run succeeded, one per feature set
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * len(feature_sets), step_errors(
            instance, runs
        )[:3000] + "\n".join(text[-2000:] for text in worker_logs.values())
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(feature_sets)

        # every step ran on a Dask worker, one task per step process, as the workers' own logs record it
        tasks = [
            (m["run"], m["step"], m["attempt"], name)
            for name in WORKERS
            for m in TASK_STARTED.finditer(worker_logs[name])
            if m["worker"] == name
        ]
        assert len({task[:3] for task in tasks}) == len(tasks), "no task ran twice"
        processes = [
            (run.run_id, event.step_key, event.dagster_event.engine_event_data.metadata["pid"].value)
            for run in runs
            for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
        ]
        assert sorted((run, step) for run, step, *_ in tasks) == sorted((run, step) for run, step, _ in processes)
        assert {name for *_, name in tasks} == set(WORKERS), "both workers ran steps"
        # and each step's process (its pid as the instance has it) started in the log of a worker that ran the step
        for run_id, step_key, pid in processes:
            line = f"experiments_job - {run_id} - {pid} - {step_key} - STEP_WORKER_STARTED"
            [name] = [n for n in WORKERS if line in worker_logs[n]]
            assert any(task[:2] == (run_id, step_key) and task[3] == name for task in tasks), line

        # every step but a run's first was submitted preferring the workers where its upstream steps ran (whose
        # local copies hold its inputs), also a step launched the moment its upstream step's events arrived
        submitted = [
            (run.run_id, event.step_key, event.user_message)
            for run in runs
            for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTING)
        ]
        assert len(submitted) == len(processes)
        unplaced = [(r, s) for r, s, message in submitted if s != "raw_tfrecords" and "preferably" not in message]
        assert unplaced == [], unplaced

        # each step's stdout and stderr, captured on its worker, are read on this side from S3 (the UI's way)
        captured = [
            (run.run_id, entry.dagster_event.logs_captured_data)
            for run in runs
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
        ]
        assert sorted((run_id, step) for run_id, data in captured for step in data.step_keys) == sorted(
            (run, step) for run, step, _ in processes
        )
        manager = instance.compute_log_manager
        for run_id, data in captured:
            [step_key] = data.step_keys
            log = manager.get_log_data(manager.build_log_key_for_run(run_id, data.file_key))
            assert f'Started execution of step "{step_key}"' in (log.stderr or b"").decode(), (run_id, step_key)

        # the champion is the best evaluated model: its published config (in the registry bucket) names it
        accuracy = {}
        for feature_set in feature_sets:
            [record] = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_evaluation"), asset_partitions=[feature_set]),
                limit=1,
            ).records
            accuracy[feature_set] = record.asset_materialization.metadata["val_accuracy"].value
        registry = s3_objects(s3_endpoint, shared["DROUGHTWATCH_REGISTRY_BUCKET"])
        champion = yaml.safe_load(registry["champion/config.yaml"])["champion"]
        assert champion["val_accuracy"] == pytest.approx(max(accuracy.values())), (champion, accuracy)
        assert accuracy[champion["feature_set"]] == pytest.approx(max(accuracy.values())), (champion, accuracy)

        # the raw source, read by the first run to start raw_tfrecords, is read again only by a run that started it
        # before that one had stored its shards (no lock across runs): a run that started later kept them, and every
        # run's raw_tfrecords is the same data
        raw = instance.fetch_materializations(dg.AssetKey("raw_tfrecords"), limit=len(feature_sets) + 1).records
        assert len(raw) == len(feature_sets)
        unchanged = {r.run_id: r.asset_materialization.metadata["source_unchanged"].value for r in raw}
        assert False in unchanged.values(), unchanged
        assert len({r.asset_materialization.tags["dagster/data_version"] for r in raw}) == 1
        raw_step = {
            (run.run_id, event.dagster_event.event_type): event.timestamp
            for run in runs
            for event in instance.all_logs(
                run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
            )
            if event.step_key == "raw_tfrecords"
        }
        first_stored = min(
            raw_step[run_id, dg.DagsterEventType.STEP_SUCCESS] for run_id, kept in unchanged.items() if not kept
        )
        later = [run_id for run_id in unchanged if raw_step[run_id, dg.DagsterEventType.STEP_START] > first_stored]
        assert all(unchanged[run_id] for run_id in later), (unchanged, later)

        # the assets are in S3, and each run is one ended MLflow run
        stored = s3_objects(s3_endpoint, shared["DROUGHTWATCH_S3_BUCKET"])
        for asset, partitions in (
            ("raw_tfrecords", ["__all__"]),
            ("processed_tfrecords", feature_sets),
            ("trained_model", feature_sets),
            ("onnx_model", feature_sets),
        ):
            assert all(f"droughtwatch/{asset}/{p}/CURRENT" in stored for p in partitions), asset
        assert {f"droughtwatch/values/{a}" for a in ("leaderboard", "champion")} <= set(stored)
        mlflow = MlflowClient(mlflow_server)
        tracked = mlflow.search_runs([mlflow.get_experiment_by_name(tag).experiment_id])
        assert sorted(r.data.tags["dagster_run_id"] for r in tracked if "dagster_run_id" in r.data.tags) == sorted(
            r.run_id for r in runs
        )
        assert {r.info.status for r in tracked} == {"FINISHED"}
        promoted = mlflow.get_model_version_by_alias("droughtwatch", "champion")
        assert promoted.tags["feature_set"] == champion["feature_set"]

        # no step read another machine's disk: the orchestrating side made no files of the pipeline, each worker's
        # files are its own, and no worker's folder is named anywhere the others could learn it from
        assert [f for f in files["orchestrator"] if f.startswith("data/")] == [], files["orchestrator"]
        assert all(any(f.startswith("data/") for f in files[name]) for name in WORKERS), files
        events = "\n".join(event for (event,) in postgres_database.query("SELECT event FROM event_logs"))
        shared_text = [events, *(repr(r.data.params) + repr(r.data.tags) for r in tracked)]
        shared_bytes = [*stored.values(), *registry.values()]
        for name in WORKERS:
            folder = str(machines / name)
            assert not any(folder in text for text in shared_text), f"{name}'s folder named in the run logs or MLflow"
            assert not any(folder.encode() in blob for blob in shared_bytes), f"{name}'s folder named in S3"
    finally:
        shutil.rmtree(machines, ignore_errors=True)
    assert not machines.exists()


def worker_options_without_resources() -> list[str]:
    """The guide's worker options, less `--resources` and its value: `dask worker <address> --nthreads 2`."""
    options = documented_worker_options()
    at = options.index("--resources")
    return options[:at] + options[at + 2 :]


def events_of(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list:
    return [(e.step_key, e.user_message) for e in instance.all_logs(run_id, of_type=event_type)]


def dask_environment(address: str, bucket_prefix: str, s3_endpoint: str) -> dict[str, str]:
    """What every machine of a cluster test shares: the dask deployment, its scheduler, a new bucket on moto."""
    return {
        "DROUGHTWATCH_DEPLOYMENT": "dask",
        "DROUGHTWATCH_DASK_SCHEDULER": address,
        "DROUGHTWATCH_S3_BUCKET": f"{bucket_prefix}-{time.time_ns()}",
        "DROUGHTWATCH_S3_CREATE_BUCKET": "true",
        "DROUGHTWATCH_TRACKER": "none",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


@pytest.mark.dask
def test_a_worker_started_without_resources_runs_every_step_and_a_worker_with_too_few_fails_the_run_at_once(
    tmp_path, s3_endpoint
):
    """A scheduler and ONE `dask worker <address>` started without `--resources`: a run of raw_tfrecords and
    processed_tfrecords (a sized step, 4 CPU) succeeds on it. Then a worker joins that offers too little
    (`--resources "CPU=1,MEMORY=1e9"`): a run of processed_tfrecords fails at once, saying which command to use,
    and no step of it is retried. The machines share one SQLite instance (one machine: loopback)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    machines = tmp_path / "machines"
    address = f"tcp://127.0.0.1:{free_port()}"
    shared = dask_environment(address, "dask-plain", s3_endpoint)
    own = {name: own_folders(machines / name, "dagster.yaml") for name in ("orchestrator", "plain", "small")}
    home = own["orchestrator"]["DAGSTER_HOME"]

    def env(name: str) -> dict[str, str]:
        return {**base_env(), **shared, **own[name], "DAGSTER_HOME": home}

    def worker(name: str, *options: str) -> list:
        return [VENV_BIN / "dask", "worker", address, "--name", name, "--host", "127.0.0.1", "--no-dashboard", *options]

    def materialize(select: str, config: dict) -> subprocess.CompletedProcess:
        command = materialize_command(select, "baseline", config)
        return subprocess.run(
            command, cwd=REPO_ROOT, env=env("orchestrator"), capture_output=True, text=True, timeout=600
        )

    scheduler = [VENV_BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    with contextlib.ExitStack() as cluster:
        cwd = machines / "orchestrator" / "cwd"
        cluster.enter_context(running([*scheduler, "--no-dashboard"], env("orchestrator"), cwd, logs / "scheduler.log"))
        plain = worker("plain", *worker_options_without_resources())
        cluster.enter_context(running(plain, env("plain"), machines / "plain" / "cwd", logs / "plain.log"))
        from distributed import Client

        client = cluster.enter_context(Client(address, timeout="60s"))
        client.wait_for_workers(1, timeout=120)

        completed = materialize(
            "raw_tfrecords,processed_tfrecords", {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}}}
        )
        instance = dg.DagsterInstance.from_config(home)
        [run] = instance.get_runs()
        plain_log = (logs / "plain.log").read_text()
        assert completed.returncode == 0, step_errors(instance, [run])[-3000:] + plain_log[-3000:]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        started = events_of(instance, run.run_id, dg.DagsterEventType.STEP_WORKER_STARTING)
        assert {"raw_tfrecords", "processed_tfrecords"} <= {step for step, _ in started}
        ran = {(m["run"], m["step"]) for m in TASK_STARTED.finditer(plain_log) if m["worker"] == "plain"}
        assert ran == {(run.run_id, step) for step, _ in started}, "every step ran on the plain worker"
        [message] = [message for step, message in started if step == "processed_tfrecords"]
        assert "without asking for {'CPU': 4, 'MEMORY': 4294967296}: no worker declares resources" in message
        assert events_of(instance, run.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []

        small = worker("small", *worker_options_without_resources(), "--resources", "CPU=1,MEMORY=1e9")
        cluster.enter_context(running(small, env("small"), machines / "small" / "cwd", logs / "small.log"))
        client.wait_for_workers(2, timeout=120)

        began = time.monotonic()
        completed = materialize("processed_tfrecords", {})
        took = time.monotonic() - began
        [failed] = [r for r in instance.get_runs() if r.run_id != run.run_id]
        errors = step_errors(instance, [failed])
        assert completed.returncode != 0, completed.stdout[-3000:]
        assert failed.status == dg.DagsterRunStatus.FAILURE
        assert took < 60, f"the run took {took:.0f} s to fail"
        expected = (
            "step \"processed_tfrecords\" needs Dask worker resources {'CPU': 4, 'MEMORY': 4294967296}, and no "
            f"worker connected to {address} offers that much (workers offer plain: none; small: "
            "{'CPU': 1.0, 'MEMORY': 1000000000.0}): start the workers as "
            f'`dask worker {address} --resources "CPU=4,MEMORY=16e9"`'
        )
        assert expected in errors, errors[-3000:]
        assert events_of(instance, failed.run_id, dg.DagsterEventType.STEP_WORKER_STARTING) == []
        assert events_of(instance, failed.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
        assert "processed_tfrecords" not in (logs / "small.log").read_text()


def worker_resources(option: str) -> dict[str, float]:
    """`dask worker --resources "CPU=4,MEMORY=16e9"` as the worker reads it."""
    return {name: float(amount) for name, amount in (pair.split("=") for pair in option.split(","))}


def sized_steps() -> dict[str, dict]:
    """Each asset's op tags, parsed (Dagster keeps tag values as strings), for the assets that size their step."""
    from droughtwatch_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    tags = {key.to_user_string(): graph.get(key).assets_def.op.tags for key in graph.get_all_asset_keys()}
    return {name: {k: json.loads(v) for k, v in t.items() if "/" in k} for name, t in tags.items() if t}


def test_the_dask_deployment_needs_the_schedulers_address_and_names_the_variable():
    from droughtwatch_assets.wiring.deployment import executor_for, resources_for
    from droughtwatch_assets.wiring.resources import S3Store
    from droughtwatch_assets.wiring.settings import Deployment

    with pytest.raises(ValueError, match="DROUGHTWATCH_DEPLOYMENT=dask needs DROUGHTWATCH_DASK_SCHEDULER"):
        Deployment.from_env({"DROUGHTWATCH_DEPLOYMENT": "dask"})
    env = {"DROUGHTWATCH_DEPLOYMENT": "dask", "DROUGHTWATCH_DASK_SCHEDULER": "tcp://10.0.0.5:8786"}
    deployment = Deployment.from_env({**env, "DROUGHTWATCH_S3_BUCKET": "b"})
    executor = executor_for(deployment)
    assert executor.name == "dask"
    assert executor.config_schema.resolve_config({}).value == {"config": {"address": "tcp://10.0.0.5:8786"}}
    assert isinstance(resources_for(deployment)["store"], S3Store), "steps on other machines share S3, not a disk"


def test_the_step_size_tags_are_dagster_dasks_and_ask_dask_for_what_they_request_of_kubernetes():
    from dagster_dask.executor import DASK_RESOURCE_REQUIREMENTS_KEY
    from kubernetes.utils import parse_quantity

    from droughtwatch_assets.dagster_support.asset_defaults import DASK_RESOURCES_TAG

    assert DASK_RESOURCES_TAG == DASK_RESOURCE_REQUIREMENTS_KEY
    sized = sized_steps()
    assert set(sized) == {"processed_tfrecords", "trained_model"}
    for name, tags in sized.items():
        requests = tags["dagster-k8s/config"]["container_config"]["resources"]["requests"]
        dask = tags[DASK_RESOURCES_TAG]
        assert dask == {"CPU": int(requests["cpu"]), "MEMORY": int(parse_quantity(requests["memory"]))}, name


def test_every_sized_step_fits_on_a_worker_started_as_the_guide_starts_them():
    from droughtwatch_assets.dagster_support.asset_defaults import DASK_RESOURCES_TAG
    from droughtwatch_assets.execution.dask_executor import fits

    offered = worker_resources(documented_worker_resources())
    for name, tags in sized_steps().items():
        assert fits(tags[DASK_RESOURCES_TAG], offered), f"{name} needs {tags[DASK_RESOURCES_TAG]}: no worker runs it"


def handler_context(step_key: str, run_id: str = "r1", attempts: int = 0, tags=None) -> SimpleNamespace:
    """What DaskStepHandler reads of a StepHandlerContext."""
    from dagster._core.execution.plan.state import KnownExecutionState

    known_state = KnownExecutionState(previous_retry_attempts={step_key: attempts}) if attempts else None
    args = SimpleNamespace(step_keys_to_execute=[step_key], run_id=run_id, known_state=known_state)
    return SimpleNamespace(
        execute_step_args=args, dagster_run=SimpleNamespace(job_name="experiments_job"), step_tags={step_key: tags}
    )


def test_steps_of_concurrent_runs_and_each_retry_of_a_step_are_tasks_of_their_own():
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    names = {
        DaskStepHandler._task(handler_context("trained_model", run, attempts), "trained_model")
        for run in ("6f1c0e7e-0000-4000-8000-000000000001", "6f1c0e7e-0000-4000-8000-000000000002")
        for attempts in (0, 1)
    }
    assert len(names) == 4
    assert "experiments_job.trained_model-6f1c0e7e-0000-4000-8000-000000000002-1" in names


class Scheduler:
    """The answers of a Client that DaskStepHandler asks for (the workers and what each offers), and the tasks
    submitted to it. A worker started without `--resources` offers {}."""

    def __init__(self, *offered: dict):
        self.offered = offered
        self.submitted = []
        self.starts = []  # (task, worker name, worker address): where tasks started, as the workers report it

    def scheduler_info(self, n_workers: int = 5):
        assert n_workers == -1, "every worker, not the first five"
        workers = {f"tcp://10.0.0.{i}:4000": {"name": f"w{i}", "resources": r} for i, r in enumerate(self.offered)}
        return {"workers": workers}

    def submit(self, function, *args, **kwargs):
        self.submitted.append(kwargs)
        return SimpleNamespace(key=kwargs["key"], status="pending")

    def get_events(self, topic: str):
        from droughtwatch_assets.execution.dask_executor import TASK_STARTS

        assert topic == TASK_STARTS
        return tuple((1.0, {"task": task, "name": name, "address": address}) for task, name, address in self.starts)


TRAINED_MODEL_NEEDS = {"CPU": 4, "MEMORY": 8589934592}
DOCUMENTED_COMMAND = 'dask worker tcp://scheduler:8786 --resources "CPU=4,MEMORY=16e9"'


def trained_model_tags() -> dict:
    from droughtwatch_assets.definitions import defs

    return defs.resolve_asset_graph().get(dg.AssetKey("trained_model")).assets_def.op.tags


def test_a_step_that_no_worker_has_the_resources_for_fails_its_health_check_instead_of_waiting_forever():
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    context = handler_context("trained_model", tags=trained_model_tags())
    handler = DaskStepHandler("tcp://scheduler:8786")
    handler._futures["trained_model"] = SimpleNamespace(status="pending", key="task")
    handler._requested["trained_model"] = TRAINED_MODEL_NEEDS  # what its task asked for

    handler._client = Scheduler({"CPU": 2.0, "MEMORY": 16e9}, {})  # the workers changed since the launch
    health = handler.check_step_health(context)
    assert not health.is_healthy
    assert "needs Dask worker resources {'CPU': 4, 'MEMORY': 8589934592}" in health.unhealthy_reason
    assert f"`{DOCUMENTED_COMMAND}`" in health.unhealthy_reason

    handler._client = Scheduler({"CPU": 2.0}, worker_resources(documented_worker_resources()))
    assert handler.check_step_health(context).is_healthy
    handler._client = Scheduler()  # no worker connected: the task waits for one (workers may join later)
    assert handler.check_step_health(context).is_healthy


def test_the_command_a_run_names_when_no_worker_can_run_a_step_is_the_guides():
    from droughtwatch_assets.execution.dask_executor import DOCUMENTED_RESOURCES

    assert DOCUMENTED_RESOURCES == documented_worker_resources()


def test_where_a_sized_step_may_run_follows_what_the_connected_workers_declare():
    from droughtwatch_assets.execution.dask_executor import Placement, place

    def placed(*offered: dict, preferred=("tcp://10.0.0.0:4000",)) -> Placement:
        workers = Scheduler(*offered).scheduler_info(n_workers=-1)["workers"]
        return place("trained_model", TRAINED_MODEL_NEEDS, list(preferred), workers, "tcp://scheduler:8786")

    big = worker_resources(documented_worker_resources())
    # workers started without --resources run every step: the task asks for none, says so, keeps its preference
    plain = placed({}, {})
    assert (plain.resources, plain.preferred) == ({}, ["tcp://10.0.0.0:4000"])
    assert plain.note == "without asking for {'CPU': 4, 'MEMORY': 8589934592}: no worker declares resources"
    # workers that offer enough: the task asks for the step's resources, and prefers its upstream step's worker
    assert placed(big, big) == Placement(TRAINED_MODEL_NEEDS, ["tcp://10.0.0.0:4000"])
    # no worker yet: the task asks for the resources and waits for a worker that has them
    assert placed() == Placement(TRAINED_MODEL_NEEDS, [])
    # a worker without resources beside one with them: no preference, since Dask hands a task whose preferred
    # workers cannot run it to any worker, and one that lacks the resource fails it with a bare KeyError('CPU')
    assert placed({}, big) == Placement(TRAINED_MODEL_NEEDS, [])
    assert placed(big, {"CPU": 1.0, "MEMORY": 1e9}, preferred=["tcp://10.0.0.0:4000"]).preferred == []
    # a step without resources goes anywhere, preferring its upstream step's worker
    assert place("leaderboard", {}, ["tcp://10.0.0.1:4000"], {}, "tcp://scheduler:8786").preferred == [
        "tcp://10.0.0.1:4000"
    ]


def test_a_step_that_workers_with_resources_could_never_run_fails_the_run_at_launch_naming_the_command(monkeypatch):
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    context = handler_context("trained_model", tags=trained_model_tags())
    context.get_step_context = lambda key: SimpleNamespace(
        step=SimpleNamespace(get_execution_dependency_keys=lambda: set())
    )
    handler = DaskStepHandler("tcp://scheduler:8786")
    handler._client = Scheduler({"CPU": 1.0, "MEMORY": 1e9}, {})

    with pytest.raises(dg.Failure) as failure:
        list(handler.launch_step(context))
    assert failure.value.allow_retries is False
    assert handler._client.submitted == [] and handler._futures == {}, "nothing was submitted"
    message = failure.value.description
    assert "\n" not in message
    assert message.startswith(
        "step \"trained_model\" needs Dask worker resources {'CPU': 4, 'MEMORY': 8589934592}, and no worker "
        "connected to tcp://scheduler:8786 offers that much (workers offer w0: {'CPU': 1.0, 'MEMORY': 1000000000.0}; "
        "w1: none)"
    ), message
    assert f"`{DOCUMENTED_COMMAND}`" in message


def test_a_sized_step_on_workers_without_resources_is_submitted_without_them_and_says_so(monkeypatch):
    from droughtwatch_assets.execution import dask_executor
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    started = []
    monkeypatch.setattr(
        dask_executor,
        "DagsterEvent",
        SimpleNamespace(step_worker_starting=lambda context, message, metadata: started.append(message)),
    )
    monkeypatch.setattr(
        dask_executor,
        "ExecuteStepArgs",
        lambda **fields: SimpleNamespace(get_command_env=lambda: [{"value": "compressed"}]),
    )
    args = handler_context("trained_model").execute_step_args
    context = handler_context("trained_model", tags=trained_model_tags())
    context.execute_step_args = SimpleNamespace(
        **vars(args), job_origin=None, retry_mode=None, should_verify_step=False
    )
    context.get_step_context = lambda key: SimpleNamespace(
        step=SimpleNamespace(get_execution_dependency_keys=lambda: set())
    )
    handler = DaskStepHandler("tcp://scheduler:8786")
    handler._client = Scheduler({}, {})

    list(handler.launch_step(context))
    [submitted] = handler._client.submitted
    assert submitted["resources"] is None
    [message] = started
    assert "without asking for {'CPU': 4, 'MEMORY': 8589934592}: no worker declares resources" in message
    assert handler._requested["trained_model"] == {}
    handler._futures["trained_model"].status = "pending"
    assert handler.check_step_health(context).is_healthy, "it waits for nothing the workers lack"


class Instance:
    """The run's step starts and outcomes as DaskStepHandler's health check reads them from the instance: each
    ended step (succeeded) started too."""

    def __init__(self, *ended_steps: str, started: tuple[str, ...] = ()):
        self.ended_steps, self.started_steps = ended_steps, started + ended_steps

    def all_logs(self, run_id, of_type=None):
        from droughtwatch_assets.execution.dask_executor import STEP_OUTCOMES

        assert of_type == {dg.DagsterEventType.STEP_START, *STEP_OUTCOMES}
        starts = [(step, dg.DagsterEventType.STEP_START) for step in self.started_steps]
        ends = [(step, dg.DagsterEventType.STEP_SUCCESS) for step in self.ended_steps]
        return [SimpleNamespace(step_key=step, dagster_event_type=kind) for step, kind in starts + ends]


def test_a_step_process_that_exits_non_zero_after_its_events_recorded_its_end_is_not_failed_again():
    # `dagster api execute_step` may exit non-zero after its step's failure (or retry) is recorded: the executor
    # goes by that event. A health check that also reported the exit would fail or retry the step a second time.
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    errored = SimpleNamespace(
        status="error", key="task", exception=lambda: RuntimeError("`dagster api execute_step` exited with 1")
    )
    handler = DaskStepHandler("tcp://scheduler:8786")
    handler._futures["trained_model"] = errored

    context = handler_context("trained_model")
    context.instance = Instance("raw_tfrecords", "trained_model")
    assert handler.check_step_health(context).is_healthy

    # the second attempt's process died before it recorded anything: unhealthy, once
    context = handler_context("trained_model", attempts=1)
    context.instance = Instance("raw_tfrecords", "trained_model")
    health = handler.check_step_health(context)
    assert not health.is_healthy
    assert health.unhealthy_reason == "Dask task task failed: RuntimeError: `dagster api execute_step` exited with 1"


def test_a_step_whose_worker_was_lost_after_the_step_started_is_stopped_and_unhealthy_naming_the_worker(monkeypatch):
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    handler = DaskStepHandler("tcp://scheduler:8786")
    handler._client = Scheduler({})  # one worker left: w0 at tcp://10.0.0.0:4000
    handler._client.starts = [("task", "w1", "tcp://10.0.0.1:4000"), ("task", "w0", "tcp://10.0.0.0:4000")]
    stopped = []
    monkeypatch.setattr(handler, "_stop", stopped.append)
    future = SimpleNamespace(status="pending", key="task")  # Dask runs it again on w0
    handler._futures["trained_model"] = future
    handler._seen["trained_model"] = {"tcp://10.0.0.0:4000", "tcp://10.0.0.1:4000"}  # as the task was submitted
    context = handler_context("trained_model")

    context.instance = Instance(started=("trained_model",))
    health = handler.check_step_health(context)
    assert health.unhealthy_reason == (
        "Dask worker w1 (tcp://10.0.0.1:4000) was lost (it died, or left the cluster) while it ran step "
        "trained_model (task task)"
    )
    assert stopped == [future], "the task that Dask runs again is stopped"

    stopped.clear()
    context.instance = Instance()  # lost before the step started: the run on w0 is the attempt
    assert handler.check_step_health(context).is_healthy
    context.instance = Instance("trained_model")  # lost after the step's end was recorded
    assert handler.check_step_health(context).is_healthy
    assert stopped == []

    handler._client.starts = [("task", "w0", "tcp://10.0.0.0:4000")]  # its worker is still connected
    context.instance = Instance(started=("trained_model",))
    assert handler.check_step_health(context).is_healthy
    assert stopped == []

    # a finished task is forgotten (Dask would run it again, were the worker that holds its result lost), and
    # where it ran kept
    released = []
    future.status, future.result, future.release = "finished", lambda: "tcp://10.0.0.0:4000", lambda: released.append(1)
    assert handler.check_step_health(context).unhealthy_reason == (
        "the Dask task of step trained_model ended on tcp://10.0.0.0:4000, and the step recorded no end (see the "
        "workers' logs)"
    )
    assert released == [1] and handler._futures == {}
    context.instance = Instance("trained_model")
    assert handler.check_step_health(context).is_healthy
    # Dask ran the task again on w0 after w1, which had started the step, was lost; w0 refused the started attempt
    handler._client.starts = [("task", "w1", "tcp://10.0.0.1:4000"), ("task", "w0", "tcp://10.0.0.0:4000")]
    handler._seen["trained_model"] = {"tcp://10.0.0.0:4000", "tcp://10.0.0.1:4000"}
    context.instance = Instance(started=("trained_model",))
    assert handler.check_step_health(context).unhealthy_reason == (
        "Dask worker w1 (tcp://10.0.0.1:4000) was lost (it died, or left the cluster) while it ran step "
        "trained_model (task task)"
    )
    upstream = SimpleNamespace(step=SimpleNamespace(get_execution_dependency_keys=lambda: {"trained_model"}))
    context.get_step_context = lambda key: upstream
    assert handler._preferred_workers(context, "onnx_model") == ["tcp://10.0.0.0:4000"]


def test_a_task_that_dask_failed_for_a_resource_its_worker_lacks_is_named_not_a_bare_key():
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    handler = DaskStepHandler("tcp://scheduler:8786")
    handler._futures["trained_model"] = SimpleNamespace(status="error", key="task", exception=lambda: KeyError("CPU"))
    handler._requested["trained_model"] = TRAINED_MODEL_NEEDS
    context = handler_context("trained_model")
    context.instance = Instance()
    health = handler.check_step_health(context)
    assert health.unhealthy_reason == (
        "Dask task task failed: KeyError: 'CPU' (Dask gave the task to a worker that does not declare the "
        "resource 'CPU')"
    )


def test_a_step_prefers_the_workers_where_its_upstream_steps_ran_in_this_run():
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    def finished(address):
        return SimpleNamespace(key=f"task-{address}", status="finished", done=lambda: True, result=lambda: address)

    upstream = {"processed_tfrecords": {"raw_tfrecords"}, "trained_model": {"processed_tfrecords", "raw_tfrecords"}}
    context = SimpleNamespace(
        get_step_context=lambda key: SimpleNamespace(
            step=SimpleNamespace(get_execution_dependency_keys=lambda: upstream.get(key, set()))
        )
    )
    handler = DaskStepHandler("tcp://scheduler:8786")
    assert handler._preferred_workers(context, "raw_tfrecords") == []
    handler._futures["raw_tfrecords"] = finished("tcp://10.0.0.1:4000")
    assert handler._preferred_workers(context, "processed_tfrecords") == ["tcp://10.0.0.1:4000"]
    handler._futures["processed_tfrecords"] = finished("tcp://10.0.0.2:4000")
    assert handler._preferred_workers(context, "trained_model") == ["tcp://10.0.0.1:4000", "tcp://10.0.0.2:4000"]
    # ran nowhere useful
    handler._futures["processed_tfrecords"] = SimpleNamespace(key="failed", status="error", done=lambda: True)
    assert handler._preferred_workers(context, "trained_model") == ["tcp://10.0.0.1:4000"]


class Returning:
    """A Dask future whose task returns (with its worker's address) a while after it is first asked."""

    def __init__(self, address: str, after: float, key: str = "experiments_job.processed_tfrecords-r1-0"):
        self.address = address
        self.key = key
        self.returns_at = time.monotonic() + after

    def done(self) -> bool:
        return time.monotonic() >= self.returns_at

    @property
    def status(self) -> str:
        return "finished" if self.done() else "pending"

    def result(self) -> str:
        assert self.done()
        return self.address


class Processing:
    """A Client whose scheduler says which tasks each worker is running."""

    def __init__(self, running: dict[str, list[str]]):
        self.running = running

    def processing(self):
        return self.running


def test_a_step_launched_before_its_upstream_task_returned_prefers_the_worker_running_that_task_at_once(monkeypatch):
    # The executor launches a step once its upstream steps' events say they succeeded; their tasks return to Dask
    # only after the step processes exit, seconds later: the worker that runs such a task is the preference.
    from droughtwatch_assets.execution import dask_executor
    from droughtwatch_assets.execution.dask_executor import DaskStepHandler

    monkeypatch.setattr(dask_executor, "UPSTREAM_RETURN_SECONDS", 1.5)

    context = SimpleNamespace(
        get_step_context=lambda key: SimpleNamespace(
            step=SimpleNamespace(get_execution_dependency_keys=lambda: {"processed_tfrecords"})
        )
    )
    handler = DaskStepHandler("tcp://scheduler:8786")
    upstream = Returning("tcp://10.0.0.2:4000", after=3600)
    handler._futures["processed_tfrecords"] = upstream
    handler._client = Processing({"tcp://10.0.0.1:4000": ["other"], "tcp://10.0.0.2:4000": [upstream.key]})
    started = time.monotonic()
    assert handler._preferred_workers(context, "processed_tfrecords_processed_values_are_valid") == [
        "tcp://10.0.0.2:4000"
    ]
    assert time.monotonic() - started < 0.5, "no waiting for the step process to exit"

    # a task that returns while it is looked for: its result names the worker
    handler._futures["processed_tfrecords"] = Returning("tcp://10.0.0.2:4000", after=0.5)
    handler._client = Processing({})
    assert handler._preferred_workers(context, "processed_tfrecords_processed_values_are_valid") == [
        "tcp://10.0.0.2:4000"
    ]

    # a task that neither runs nor returns (its worker gone) holds the launch up for a bounded time, then the step
    # goes anywhere
    handler._futures["processed_tfrecords"] = Returning("tcp://10.0.0.2:4000", after=3600)
    started = time.monotonic()
    assert handler._preferred_workers(context, "processed_tfrecords_processed_values_are_valid") == []
    assert 1.5 <= time.monotonic() - started < 5


@pytest.mark.dask
def test_a_dask_worker_lost_during_a_step_has_the_step_retried_on_the_other_worker_naming_the_lost_one(
    tmp_path, s3_endpoint
):
    """A scheduler and two `dask worker`s; a run of raw_tfrecords, processed_tfrecords and trained_model. As
    trained_model starts, the worker that runs it is killed with its step process (SIGKILL of its process group: a
    lost machine). The run does not hang: the step's next attempt runs on the other worker and the run succeeds,
    and the retry says which worker was lost."""
    logs = tmp_path / "logs"
    logs.mkdir()
    machines = tmp_path / "machines"
    address = f"tcp://127.0.0.1:{free_port()}"
    shared = dask_environment(address, "dask-lost", s3_endpoint)
    own = {name: own_folders(machines / name, "dagster.yaml") for name in ("orchestrator", *WORKERS)}
    home = own["orchestrator"]["DAGSTER_HOME"]

    def env(name: str) -> dict[str, str]:
        return {**base_env(), **shared, **own[name], "DAGSTER_HOME": home}

    scheduler = [VENV_BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}, "trained_model": {"config": {"epochs": 1}}}}
    with contextlib.ExitStack() as cluster:
        cwd = machines / "orchestrator" / "cwd"
        cluster.enter_context(running([*scheduler, "--no-dashboard"], env("orchestrator"), cwd, logs / "scheduler.log"))
        workers = {}
        for name in WORKERS:
            command = [VENV_BIN / "dask", "worker", address, "--name", name, "--host", "127.0.0.1", "--no-dashboard"]
            command += worker_options_without_resources()
            log = logs / f"{name}.log"
            workers[name] = cluster.enter_context(running(command, env(name), machines / name / "cwd", log))
        from distributed import Client

        client = cluster.enter_context(Client(address, timeout="60s"))
        client.wait_for_workers(len(WORKERS), timeout=120)

        instance = dg.DagsterInstance.from_config(home)  # its storage made before the run's process opens it
        command = materialize_command("raw_tfrecords,processed_tfrecords,trained_model", "baseline", config)
        materialize = cluster.enter_context(running(command, env("orchestrator"), REPO_ROOT, logs / "run.log"))

        def training_worker() -> str | None:
            """The worker whose task runs trained_model, once the step has started."""
            runs = instance.get_runs()
            if not runs or not events_of(instance, runs[0].run_id, dg.DagsterEventType.STEP_START)[-1:] == [
                ("trained_model", 'Started execution of step "trained_model".')
            ]:
                return None
            return next(
                (
                    name
                    for name in WORKERS
                    for m in TASK_STARTED.finditer((logs / f"{name}.log").read_text())
                    if m["step"] == "trained_model"
                ),
                None,
            )

        lost = wait_for(training_worker, 600, "trained_model started on a Dask worker")
        os.killpg(workers[lost].pid, signal.SIGKILL)  # the worker, its nanny and the step's process
        killed_at, killed_at_time = time.monotonic(), time.time()
        try:
            materialize.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the run hung for 300 s after Dask worker {lost} was lost: "
                + step_errors(instance, instance.get_runs())[-3000:]
            )
        ended_after = time.monotonic() - killed_at
        [run] = instance.get_runs()
        other = next(name for name in WORKERS if name != lost)
        errors = step_errors(instance, [run])
        assert run.status == dg.DagsterRunStatus.SUCCESS, errors[-3000:] + (logs / "run.log").read_text()[-3000:]
        retries = events_of(instance, run.run_id, dg.DagsterEventType.STEP_UP_FOR_RETRY)
        assert [step for step, _ in retries] == ["trained_model"], retries
        assert f"Dask worker {lost}" in errors, errors
        started = [
            (m["step"], m["attempt"], m["worker"])
            for name in WORKERS
            for m in TASK_STARTED.finditer((logs / f"{name}.log").read_text())
            if m["run"] == run.run_id
        ]
        assert ("trained_model", "1", other) in started, started
        # no finished step's task ran again when the worker holding its result was lost; only the lost step's
        # task may have (Dask's own retry, which Dagster refuses: that attempt had started)
        again = [task[:2] for task in started if [t[:2] for t in started].count(task[:2]) > 1]
        assert set(again) <= {("trained_model", "0")}, started
        [retry] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        print(
            f"worker {lost} killed in trained_model: the step up for retry {retry.timestamp - killed_at_time:.1f} s "
            f"later, the run succeeded {ended_after:.0f} s later; {errors}"
        )
