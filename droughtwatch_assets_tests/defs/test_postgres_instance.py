"""Postgres as the instance database: the instance files that put runs, event logs and schedules there, run through
the command line against a real server (the `postgres_server` fixture), and the Makefile's choice between them."""

import json
import os
import subprocess

import pytest
import yaml

from droughtwatch_assets_tests.conftest import REPO_ROOT, TINY_SAMPLE, VENV_BIN, dagster_cli, dagster_home

POSTGRES_FILES = ("deploy/dagster-postgres.yaml", "deploy/dagster-postgres-url.yaml", "deploy/dagster-cluster.yaml")
SQLITE_FILES = ("history", "schedules", "runs.db", "index.db", "schedules.db")  # what a SQLite instance writes


def instance_settings(path: str) -> dict:
    return yaml.safe_load((REPO_ROOT / path).read_text())


def env_references(value) -> set[str]:
    """The variables a config value names through Dagster's `env:`."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return {value["env"]}
        return set().union(*(env_references(v) for v in value.values()))
    return set()


def leaves(value, path=()):
    if isinstance(value, dict) and set(value) != {"env"}:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    else:
        yield path, value


def sqlite_files(home) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.name in SQLITE_FILES)


def running_schedules(database) -> list[str]:
    """The schedules the instigators table holds as running (each row's body is Dagster's serialised state)."""
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus
    from dagster._serdes import deserialize_value

    rows = database.query("SELECT instigator_body FROM instigators WHERE instigator_type = 'SCHEDULE'")
    states = [deserialize_value(body, InstigatorState) for (body,) in rows]
    return [state.instigator_name for state in states if state.status == InstigatorStatus.RUNNING]


def cli_env(tmp_path, home, postgres=None) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DAGSTER_PG_")}
    return {
        **env,
        **(postgres.env if postgres else {}),
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }


def materialize_raw_records(env: dict) -> None:
    config = {"ops": {"raw_tfrecords": {"config": TINY_SAMPLE}}}
    dagster_cli(
        "asset",
        "materialize",
        "-m",
        "droughtwatch_assets.definitions",
        "--select",
        "raw_tfrecords",
        "--config-json",
        json.dumps(config),
        env=env,
    )


@pytest.mark.parametrize("path", POSTGRES_FILES[:2])
def test_the_postgres_instance_files_keep_dagster_yamls_run_queue_and_pools_and_add_only_storage(path):
    settings = instance_settings(path)
    assert set(settings.pop("storage")) == {"postgres"}
    assert settings == instance_settings("dagster.yaml")


def test_the_cluster_instance_file_is_the_postgres_one_with_the_steps_logs_in_the_assets_s3_bucket():
    settings = instance_settings("deploy/dagster-cluster.yaml")
    logs = settings.pop("compute_logs")
    assert settings == instance_settings("deploy/dagster-postgres.yaml")
    assert (logs["module"], logs["class"]) == ("dagster_aws.s3.compute_log_manager", "S3ComputeLogManager")
    assert logs["config"]["bucket"] == {"env": "DROUGHTWATCH_S3_BUCKET"}  # the endpoint and keys: the AWS_* variables
    assert not {"endpoint_url", "access_key_id", "secret_access_key"} & set(logs["config"])


@pytest.mark.parametrize("path", POSTGRES_FILES)
def test_every_postgres_setting_comes_from_the_environment_and_none_is_written_in_the_file(path):
    postgres = instance_settings(path)["storage"]["postgres"]
    written = [key for key, value in leaves(postgres) if not (isinstance(value, dict) and set(value) == {"env"})]
    assert written in ([], [("postgres_db", "scheme")])  # the driver, the one setting that is no secret
    assert env_references(postgres) <= {
        "DAGSTER_PG_USERNAME",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_DB",
        "DAGSTER_PG_URL",
    }
    configuration = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{name}`" in configuration for name in env_references(postgres)), "documented"


def test_compose_keeps_the_instance_in_its_postgres_service_with_every_setting_the_file_reads():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    app = compose["services"]["app"]
    assert "./deploy/dagster-postgres.yaml:/opt/dagster/home/dagster.yaml:ro" in app["volumes"]
    needed = env_references(instance_settings("deploy/dagster-postgres.yaml")["storage"])
    assert needed <= set(app["environment"]) and app["environment"]["DAGSTER_PG_HOST"] == "postgres"
    assert "postgres" in compose["services"] and app["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_with_the_postgres_settings_runs_events_and_schedules_are_stored_in_postgres_and_nothing_in_sqlite(
    tmp_path, postgres_database
):
    home = dagster_home(tmp_path / "home", "deploy/dagster-postgres.yaml")
    env = cli_env(tmp_path, home, postgres_database)
    materialize_raw_records(env)
    dagster_cli("schedule", "start", "baseline_daily", "-w", "workspace.yaml", env=env)

    [(job, status)] = postgres_database.query("SELECT pipeline_name, status FROM runs")
    assert (job, status) == ("__ASSET_JOB", "SUCCESS")
    materialized = postgres_database.query(
        "SELECT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
    )
    assert materialized == [('["raw_tfrecords"]',)]
    assert running_schedules(postgres_database) == ["baseline_daily"]
    assert sqlite_files(home) == []


def test_a_postgres_url_alone_is_enough(tmp_path, postgres_database):
    home = dagster_home(tmp_path / "home", "deploy/dagster-postgres-url.yaml")
    env = {**cli_env(tmp_path, home), "DAGSTER_PG_URL": postgres_database.env["DAGSTER_PG_URL"]}
    dagster_cli("schedule", "start", "baseline_daily", "-w", "workspace.yaml", env=env)

    assert running_schedules(postgres_database) == ["baseline_daily"]
    assert sqlite_files(home) == []


@pytest.mark.integration
def test_without_the_postgres_settings_the_makefile_keeps_the_instance_in_sqlite_and_switches_when_they_are_given(
    tmp_path,
):
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DAGSTER_PG_")}

    def make_instance(**settings) -> str:
        subprocess.run(
            ["make", "-s", "instance", f"DAGSTER_HOME={home}"],
            cwd=REPO_ROOT,
            env={**env, **settings},
            check=True,
            capture_output=True,
        )
        return (home / "dagster.yaml").read_text()

    assert make_instance() == (REPO_ROOT / "dagster.yaml").read_text()
    assert make_instance(DAGSTER_PG_HOST="db.internal") == (REPO_ROOT / POSTGRES_FILES[0]).read_text()
    assert make_instance(DAGSTER_PG_URL="postgresql://x@db/d") == (REPO_ROOT / POSTGRES_FILES[1]).read_text()
    assert make_instance() == (REPO_ROOT / "dagster.yaml").read_text()


@pytest.mark.integration
def test_without_the_postgres_settings_the_instance_is_sqlite_under_dagster_home(tmp_path):
    home = dagster_home(tmp_path / "home")
    info = dagster_cli("instance", "info", env=cli_env(tmp_path, home)).stdout
    assert "run_storage: SqliteRunStorage" in info
    assert sqlite_files(home) == [
        "history",
        "history/runs.db",
        "history/runs/index.db",
        "schedules",
        "schedules/schedules.db",
    ]


@pytest.mark.integration
def test_a_missing_postgres_setting_stops_the_command_naming_it_instead_of_falling_back_to_sqlite(tmp_path):
    home = dagster_home(tmp_path / "home", "deploy/dagster-postgres.yaml")
    settings = {"DAGSTER_PG_USERNAME": "u", "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432"}
    completed = subprocess.run(
        [VENV_BIN / "dagster", "instance", "info"],
        env={**cli_env(tmp_path, home), **settings, "DAGSTER_PG_DB": "d"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 0
    assert 'the environment variable "DAGSTER_PG_PASSWORD" which is not set' in completed.stderr
    assert sqlite_files(home) == []
