import contextlib
import dataclasses
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DROUGHTWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
REAL_SHARD = SHARED_DATA / "droughtwatch-real-part-r-00012.tfrecord"
REFERENCE_ONNX = SHARED_DATA / "reference-baseline-b2b3b4b5.onnx"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Markers that follow from the fixtures a test uses; every one of them implies `integration`.
FIXTURE_MARKERS = {
    "s3_endpoint": ("s3",),
    "mlflow_server": ("mlflow",),
    "dagster_ui": ("browser", "daemon"),
    "postgres_server": ("postgres",),
}
KIND_MARKERS = ("s3", "mlflow", "postgres", "daemon", "browser", "dask")
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in item.fixturenames:
                for marker in markers:
                    item.add_marker(marker)
        if any(item.get_closest_marker(kind) for kind in KIND_MARKERS):
            item.add_marker("integration")


@pytest.fixture(autouse=True)
def _fast_lane_starts_no_programs(request, monkeypatch):
    """A test outside `integration` that starts one of the environment's programs (dagster, dagster-daemon, mlflow,
    moto_server, droughtwatch, `python -c` / `python -m`) fails, naming it: the fast lane stays fast only while its
    tests keep to their own process and its process pools. Helpers that libraries start for themselves (a script
    inside site-packages) are theirs, not the test's."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    started = []
    original = subprocess.Popen.__init__

    def record(self, args, *rest, **kwargs):
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
        program = Path(argv[0])
        if program.parent == VENV_BIN and (not program.name.startswith("python") or argv[1:2] in (["-c"], ["-m"])):
            started.append(" ".join(argv))
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", record)
    yield
    assert not started, f"this test starts {started[0][:200]}: mark it integration (see pyproject.toml's markers)"


def shared_file(path: Path) -> Path:
    """A file of the shared test data (docs/testing.md#the-shared-test-data). Missing, the test skips saying where to
    put it; under CI (CI=true) it fails instead, so that CI never passes by skipping."""
    if not path.exists():
        message = (
            f"test data missing: {path}; set DROUGHTWATCH_SHARED_DATA to the folder that holds {REAL_SHARD.name} "
            f"and {REFERENCE_ONNX.name} (docs/testing.md#the-shared-test-data)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_shard() -> Path:
    return shared_file(REAL_SHARD)


@pytest.fixture(scope="session")
def reference_onnx() -> Path:
    return shared_file(REFERENCE_ONNX)


@pytest.fixture
def real_folder(tmp_path, real_shard) -> Path:
    """The real shard laid out as the benchmark archive extracts (train/ and val/)."""
    for split in ("train", "val"):
        (tmp_path / "real" / split).mkdir(parents=True)
        shutil.copyfile(real_shard, tmp_path / "real" / split / "part-r-00012")
    return tmp_path / "real"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def moto_server(**env):
    """moto's standalone S3 server as a subprocess on loopback."""
    port = free_port()
    process = subprocess.Popen(
        [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Credentials and endpoint for the loopback S3 server, through the standard AWS env vars."""
    values = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback: sqlite backend, local artifact store."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [
        Path(sys.executable).parent / "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(root / "server.log", "w")
    process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@dataclasses.dataclass(frozen=True)
class Postgres:
    """One database on the tests' Postgres server, and the variables that reach it."""

    host: str
    port: int
    username: str
    password: str
    db_name: str

    @property
    def url(self) -> str:
        """libpq's form, for psycopg2.connect and most clients; SQLAlchemy's is env's DAGSTER_PG_URL."""
        return f"postgresql://{self.username}:{self.password}@{self.host}:{self.port}/{self.db_name}"

    @property
    def env(self) -> dict[str, str]:
        """What the Postgres instance files (deploy/dagster-postgres*.yaml) read: the parts and the URL."""
        return {
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_URL": self.url.replace("postgresql://", "postgresql+psycopg2://", 1),
        }

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.url)) as connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def new_database(self, name: str) -> "Postgres":
        import psycopg2

        with contextlib.closing(psycopg2.connect(self.url)) as connection:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        return dataclasses.replace(self, db_name=name)


def postgres_bin_dir() -> Path:
    """Debian's server binaries (`make postgres` installs them), the newest version; else initdb on PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    initdb = debian[-1] if debian else shutil.which("initdb")
    assert initdb, "no PostgreSQL server found: `make postgres` installs Debian's (as root, or with sudo)"
    return Path(initdb).parent


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback, in a new folder that is removed afterwards; password authentication.
    initdb and postgres refuse to run as root, so as root (CI) they run as Debian's `postgres` user."""
    bin_dir = postgres_bin_dir()
    as_user = {}
    folder = Path(tempfile.mkdtemp(prefix="droughtwatch-postgres-"))  # not under pytest's: root's are closed
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, and no `postgres` user to run the server as: `make postgres` adds it")
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = Postgres("127.0.0.1", free_port(), "droughtwatch", secrets.token_hex(12), "postgres")
    data, log_path, process = folder / "data", folder / "server.log", None
    try:
        (folder / "password").write_text(server.password)
        initdb = subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", server.username, f"--pwfile={folder / 'password'}"]
            + ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
            cwd=folder,
            capture_output=True,
            text=True,
            **as_user,
        )
        assert initdb.returncode == 0, initdb.stdout[-2000:] + initdb.stderr[-2000:]
        with open(data / "postgresql.conf", "a") as conf:
            # loopback only, the socket in its own folder, and no durability: the server lives for one session
            conf.write(
                f"listen_addresses = '{server.host}'\nport = {server.port}\nunix_socket_directories = '{folder}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [bin_dir / "postgres", "-D", data], cwd=folder, stdout=log, stderr=subprocess.STDOUT, **as_user
            )
        wait_for_postgres(server, process, log_path)
        yield server
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # fast shutdown: open connections are closed
            process.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_postgres(server: Postgres, process: subprocess.Popen, log_path: Path, timeout: float = 60) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            psycopg2.connect(server.url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            time.sleep(0.2)
    raise TimeoutError(
        f"postgres on port {server.port} did not answer within {timeout} s: {log_path.read_text()[-2000:]}"
    )


@pytest.fixture
def postgres_database(postgres_server) -> Postgres:
    """A new, empty database of its own on the session's server, for one test."""
    return postgres_server.new_database(f"test_{secrets.token_hex(6)}")


TINY_SAMPLE = {"sample_train_records": 192, "sample_val_records": 64, "sample_records_per_shard": 128}


def model_config(**fields):
    """A valid ModelConfig of the baseline, with `fields` changed."""
    from droughtwatch_assets.core.configurations import CLASS_WEIGHTS
    from droughtwatch_assets.core.model_config import ModelConfig

    baseline = {
        "model_name": "baseline",
        "feature_set": "baseline",
        "features": ["B2", "B3", "B4", "B5"],
        "learning_rate": 5e-4,
        "batch_size": 64,
        "epochs": 2,
        "seed": 0,
        "register_model": True,
        "tracker": "none",
        "class_weights": CLASS_WEIGHTS,
        "data_version": "d0",
        "dagster_run_id": "test-run",
    }
    return ModelConfig(**{**baseline, **fields})


def run_config(raw: dict | None = None, training: dict | None = None, processing: dict | None = None):
    """Run config for the chain; processing keeps its default `workers` (one process per core) unless given."""
    import dagster as dg

    ops = {"raw_tfrecords": {"config": raw or {}}, "processed_tfrecords": {"config": processing or {}}}
    if training is not None:
        ops["trained_model"] = {"config": training}
    return dg.RunConfig(ops=ops)


def assets_named(*names: str) -> list:
    """The asset definitions with these keys, so a test says what it materialises."""
    from droughtwatch_assets.definitions import assets

    by_key = {a.key.to_user_string(): a for a in assets}
    return [by_key[name] for name in names]


def checks_named(*names: str) -> list:
    from droughtwatch_assets.defs.checks import asset_checks

    by_name = {next(iter(c.check_keys)).name: c for c in asset_checks}
    return [by_name[name] for name in names]


DATA_ASSETS = ("raw_tfrecords", "processed_tfrecords")


def __getattr__(name: str):
    """TRAINING_CHAIN is the product's own, imported on first use: a domain test never loads Dagster for it."""
    if name == "TRAINING_CHAIN":
        from droughtwatch_assets.dagster_support.asset_defaults import TRAINING_CHAIN

        return TRAINING_CHAIN
    raise AttributeError(name)


def table_rows(metadata_value) -> list[dict]:
    """The rows of a MetadataValue.table, as dicts keyed by its schema's column names."""
    columns = [column.name for column in metadata_value.schema.columns]
    rows = [record.data for record in metadata_value.records]
    assert all(sorted(row) == sorted(columns) for row in rows), (columns, rows[:1])  # stored rows come back sorted
    return rows


def s3_resources(data_dir, **settings) -> dict:
    """The `s3` deployment's resources on a bucket; credentials and endpoint from the standard AWS variables
    (the s3_env fixture sets them for the loopback server)."""
    from droughtwatch_assets.wiring.deployment import AWS_VARIABLES, Deployment, resources_for

    aws_variables = tuple(name for name in AWS_VARIABLES if os.environ.get(name))
    return resources_for(
        Deployment(name="s3", data_dir=str(data_dir), create_bucket=True, aws_variables=aws_variables, **settings)
    )


def materialize_command(select: str, partition: str, run_config: dict) -> list:
    """`dagster asset materialize` as a user types it: the multiprocess executor, a process per step."""
    return [
        Path(sys.executable).parent / "dagster",
        "asset",
        "materialize",
        "-m",
        "droughtwatch_assets.definitions",
        "--select",
        select,
        "--partition",
        partition,
        "--config-json",
        json.dumps(run_config),
    ]


def write_blank_shard(path: Path, records: int = 10) -> None:
    """Records whose bands are all 0: each one is vetoed as blank."""
    import numpy as np

    from droughtwatch_assets.records.tfrecord import encode_raw_example
    from droughtwatch_assets.records.writer import RecordWriter

    with RecordWriter(path) as writer:
        for i in range(records):
            writer.write(encode_raw_example(np.zeros((11, 65, 65), np.uint8), i % 4, f"blank-{i}"))


def run_predict(model, shard, output, *options) -> subprocess.CompletedProcess:
    """`droughtwatch predict` as a user runs it, the features taken from the model's config unless given."""
    command = [
        Path(sys.executable).parent / "droughtwatch",
        "predict",
        "--model",
        model,
        "--input",
        shard,
        "--output",
        output,
        *options,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def dagster_cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """`dagster <args>` as a user types it in the repository, with this environment; fails the test if it fails."""
    completed = subprocess.run(
        [VENV_BIN / "dagster", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def backfill_experiments(feature_sets, env: dict) -> subprocess.CompletedProcess:
    """`dagster job backfill` of experiments_job over these partitions, as a user launches one; the runs wait in
    the instance's queue for a daemon."""
    return dagster_cli(
        "job",
        "backfill",
        "-w",
        "workspace.yaml",
        "-j",
        "experiments_job",
        "--partitions",
        ",".join(feature_sets),
        "--noprompt",
        env=env,
    )


def wait_for(condition, timeout: float, what: str):
    """condition()'s first truthy value, polled every half second; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def dagster_home(folder: Path, instance: str = "dagster.yaml") -> Path:
    """A new DAGSTER_HOME with the project's dagster.yaml (its run queue and pools), as the Makefile makes one;
    `instance` names another of the project's instance files (deploy/dagster-postgres.yaml)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / instance, folder / "dagster.yaml")
    return folder


@contextlib.contextmanager
def dagster_daemon(env: dict):
    """`dagster-daemon run` on the project's workspace with this environment, stopped when the block ends."""
    daemon = subprocess.Popen(
        [VENV_BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield daemon
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)


def daemon_until_runs_end(env: dict, instance, on_poll=lambda statuses: None, timeout: float = 900) -> None:
    """Run `dagster-daemon` (the project's workspace, this environment) until every run of the instance has
    succeeded or failed; `on_poll` sees the run statuses every half second."""
    import dagster as dg

    ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
    with dagster_daemon(env):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [r.status for r in instance.get_runs()]
            on_poll(statuses)
            if all(s in ended for s in statuses):
                break
            time.sleep(0.5)
