"""The deployment's settings: the one place that reads the environment (`Deployment.from_env()`), once per
process through `current()`: which storage, tracker, raw source and executor the code location uses.

DROUGHTWATCH_DEPLOYMENT picks a named set:
    local   files under DROUGHTWATCH_DATA_DIR, steps as processes on this machine (the default)
    s3      assets and published models in S3, steps as processes on this machine
    k8s     assets and published models in S3, each step a Kubernetes job
    dask    assets and published models in S3, each step a task on the Dask scheduler at DROUGHTWATCH_DASK_SCHEDULER
DROUGHTWATCH_KEEP_VERSIONS (default 5; 0: only `droughtwatch gc` removes) and DROUGHTWATCH_GRACE_MINUTES
(default 60) set retention after each commit (see retention.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from droughtwatch_assets.core.features import FEATURE_SETS_FILE
from droughtwatch_assets.sources.download import ARCHIVE_URL
from droughtwatch_assets.sources.raw import RawSourceKind
from droughtwatch_assets.storage.retention import DEFAULT_GRACE, DEFAULT_KEEP
from droughtwatch_assets.tracking import TrackerName
from droughtwatch_assets.tracking.wandb_backend import DEFAULT_BASE_URL

DEFAULT_INTERVAL_SECONDS = 60  # how often new_raw_shards lists the raw source, at most
DeploymentName = Literal["local", "s3", "k8s", "dask"]
DEFAULT_DATA_DIR = ".droughtwatch"
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
# Settings the Kubernetes step pods need from the code location's environment (credentials come from secrets).
K8S_ENV_VARS = (
    "DROUGHTWATCH_DEPLOYMENT",
    "DROUGHTWATCH_S3_BUCKET",
    "DROUGHTWATCH_S3_PREFIX",
    "DROUGHTWATCH_REGISTRY_BUCKET",
    "DROUGHTWATCH_TRACKER",
    "DROUGHTWATCH_KEEP_VERSIONS",
    "DROUGHTWATCH_GRACE_MINUTES",
    "DROUGHTWATCH_RAW_SOURCE",
    "DROUGHTWATCH_RAW_URI",
    "MLFLOW_TRACKING_URI",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
)


class SettingsError(ValueError):
    """A setting of the environment that cannot be used; its message names the variable and what it may be."""


def _choice(value: str, allowed: tuple[str, ...], variable: str) -> str:
    if value not in allowed:
        raise SettingsError(f"{variable}={value!r} is not one of {', '.join(allowed)}")
    return value


def _number(env: Mapping[str, str], variable: str, default: float, kind=float):
    value = env.get(variable, "")
    if not value:
        return kind(default)
    try:
        number = kind(value)
    except ValueError:
        number = -1
    if number < 0:
        raise SettingsError(f"{variable}={value!r} is not a {'whole ' if kind is int else ''}number of 0 or more")
    return number


@dataclass(frozen=True)
class Deployment:
    name: DeploymentName = "local"
    data_dir: str = DEFAULT_DATA_DIR  # local: the data; S3: the local cache and scratch space
    bucket: str = ""
    prefix: str = "droughtwatch"
    registry_bucket: str = ""
    create_bucket: bool = False
    keep_versions: int = DEFAULT_KEEP  # 0: no retention after commits, only `droughtwatch gc`
    grace_minutes: float = DEFAULT_GRACE.total_seconds() / 60
    aws_variables: tuple[str, ...] = ()  # the AWS variables that are set, passed on as EnvVar
    tracker: TrackerName = "wandb"
    mlflow_tracking_uri_set: bool = False
    mlflow_experiment: str = "droughtwatch"
    wandb_project: str = "droughtwatch"
    wandb_dir: str = ""
    wandb_online: bool = False  # a key, and no WANDB_MODE that asks for offline (or disabled) runs
    wandb_base_url: str = DEFAULT_BASE_URL
    feature_sets_file: str = str(FEATURE_SETS_FILE)
    raw_source: RawSourceKind = "sample"
    raw_folder: str = ""
    raw_uri: str = ""
    archive_url: str = ARCHIVE_URL
    force_retrain: bool = False  # the daily schedule retrains even when nothing changed
    sensor_interval_seconds: int = DEFAULT_INTERVAL_SECONDS  # new_raw_shards lists the raw source at most this often
    k8s_namespace: str = "droughtwatch"
    k8s_max_concurrent: int = 8
    k8s_env_secrets: tuple[str, ...] = ("droughtwatch-aws",)
    k8s_env_vars: tuple[str, ...] = field(default=())
    dask_scheduler: str = ""  # the scheduler's address, tcp://host:8786; required by the dask deployment

    def __post_init__(self):
        if self.name == "dask" and not self.dask_scheduler:
            raise SettingsError(
                "DROUGHTWATCH_DEPLOYMENT=dask needs DROUGHTWATCH_DASK_SCHEDULER: the address of a running Dask "
                "scheduler, such as tcp://10.0.0.5:8786"
            )

    @property
    def storage(self) -> Literal["local", "s3"]:
        return "local" if self.name == "local" else "s3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Deployment:
        return cls(
            name=_choice(
                env.get("DROUGHTWATCH_DEPLOYMENT") or "local", get_args(DeploymentName), "DROUGHTWATCH_DEPLOYMENT"
            ),
            data_dir=str(Path(env.get("DROUGHTWATCH_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().absolute()),
            bucket=env.get("DROUGHTWATCH_S3_BUCKET", ""),
            prefix=env.get("DROUGHTWATCH_S3_PREFIX", "droughtwatch"),
            registry_bucket=env.get("DROUGHTWATCH_REGISTRY_BUCKET", ""),
            create_bucket=env.get("DROUGHTWATCH_S3_CREATE_BUCKET", "").lower() in ("1", "true", "yes"),
            keep_versions=_number(env, "DROUGHTWATCH_KEEP_VERSIONS", DEFAULT_KEEP, int),
            grace_minutes=_number(env, "DROUGHTWATCH_GRACE_MINUTES", DEFAULT_GRACE.total_seconds() / 60),
            aws_variables=tuple(v for v in AWS_VARIABLES if env.get(v)),
            tracker=_choice(env.get("DROUGHTWATCH_TRACKER", "wandb"), get_args(TrackerName), "DROUGHTWATCH_TRACKER"),
            mlflow_tracking_uri_set=bool(env.get("MLFLOW_TRACKING_URI")),
            mlflow_experiment=env.get("DROUGHTWATCH_MLFLOW_EXPERIMENT", "droughtwatch"),
            wandb_project=env.get("WANDB_PROJECT", "droughtwatch"),
            wandb_dir=env.get("WANDB_DIR", ""),
            wandb_online=bool(env.get("WANDB_API_KEY"))
            and env.get("WANDB_MODE", "online") not in ("offline", "dryrun", "disabled"),
            wandb_base_url=env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL,
            feature_sets_file=env.get("DROUGHTWATCH_FEATURE_SETS") or str(FEATURE_SETS_FILE),
            raw_source=_choice(
                env.get("DROUGHTWATCH_RAW_SOURCE", "sample"), get_args(RawSourceKind), "DROUGHTWATCH_RAW_SOURCE"
            ),
            raw_folder=env.get("DROUGHTWATCH_RAW_FOLDER", ""),
            raw_uri=env.get("DROUGHTWATCH_RAW_URI", ""),
            archive_url=env.get("DROUGHTWATCH_ARCHIVE_URL", ARCHIVE_URL),
            force_retrain=env.get("DROUGHTWATCH_FORCE_RETRAIN", "").lower() in ("1", "true", "yes"),
            sensor_interval_seconds=_number(env, "DROUGHTWATCH_SENSOR_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS, int),
            k8s_namespace=env.get("DROUGHTWATCH_K8S_NAMESPACE", "droughtwatch"),
            k8s_max_concurrent=_number(env, "DROUGHTWATCH_K8S_MAX_CONCURRENT", 8, int),
            k8s_env_secrets=tuple(
                s for s in env.get("DROUGHTWATCH_K8S_ENV_SECRETS", "droughtwatch-aws").split(",") if s
            ),
            k8s_env_vars=tuple(v for v in K8S_ENV_VARS if env.get(v)),
            dask_scheduler=env.get("DROUGHTWATCH_DASK_SCHEDULER", "").strip(),
        )


def dagster_home(env: Mapping[str, str] = os.environ) -> str:
    """The Dagster instance's folder (DAGSTER_HOME), or "" where there is none: Dagster's setting, not the
    deployment's, read here as every other."""
    return env.get("DAGSTER_HOME", "")


@functools.cache
def current() -> Deployment:
    """The deployment this process runs in, read from the environment the first time it is asked for."""
    return Deployment.from_env()
