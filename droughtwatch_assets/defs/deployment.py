"""The one place that decides the deployment: which storage, tracker, raw source and executor the code
location uses. `definitions.py` reads the environment once, through `Deployment.from_env()`.

DROUGHTWATCH_DEPLOYMENT picks a named set:
    local   files under DROUGHTWATCH_DATA_DIR, steps as processes on this machine (the default)
    s3      assets and published models in S3, steps as processes on this machine
    k8s     assets and published models in S3, each step a Kubernetes job
DROUGHTWATCH_KEEP_VERSIONS (default 5; 0: only `droughtwatch gc` removes) and DROUGHTWATCH_GRACE_MINUTES
(default 60) set retention after each commit (see retention.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import dagster as dg
from dagster_aws.s3 import S3PickleIOManager, S3Resource

from droughtwatch_assets.defs.resources import (
    ArtifactIOManager,
    LocalStore,
    RawSourceResource,
    RetrainingPolicy,
    S3Store,
    ScratchSpace,
    TrackerName,
    TrackingResource,
)
from droughtwatch_assets.defs.sensors import DEFAULT_INTERVAL_SECONDS
from droughtwatch_assets.sources.download import ARCHIVE_URL
from droughtwatch_assets.storage.retention import DEFAULT_GRACE, DEFAULT_KEEP

DeploymentName = Literal["local", "s3", "k8s"]
RawSourceName = Literal["sample", "folder", "archive", "s3"]
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


def _choice(value: str, allowed: tuple[str, ...], variable: str) -> str:
    if value not in allowed:
        raise ValueError(f"{variable}={value!r} is not one of {', '.join(allowed)}")
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
        raise ValueError(f"{variable}={value!r} is not a {'whole ' if kind is int else ''}number of 0 or more")
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
    raw_source: RawSourceName = "sample"
    raw_folder: str = ""
    raw_uri: str = ""
    archive_url: str = ARCHIVE_URL
    force_retrain: bool = False  # the daily schedule retrains even when nothing changed
    sensor_interval_seconds: int = DEFAULT_INTERVAL_SECONDS  # new_raw_shards lists the raw source at most this often
    k8s_namespace: str = "droughtwatch"
    k8s_max_concurrent: int = 8
    k8s_env_secrets: tuple[str, ...] = ("droughtwatch-aws",)
    k8s_env_vars: tuple[str, ...] = field(default=())

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
            raw_source=_choice(
                env.get("DROUGHTWATCH_RAW_SOURCE", "sample"), get_args(RawSourceName), "DROUGHTWATCH_RAW_SOURCE"
            ),
            raw_folder=env.get("DROUGHTWATCH_RAW_FOLDER", ""),
            raw_uri=env.get("DROUGHTWATCH_RAW_URI", ""),
            archive_url=env.get("DROUGHTWATCH_ARCHIVE_URL", ARCHIVE_URL),
            force_retrain=env.get("DROUGHTWATCH_FORCE_RETRAIN", "").lower() in ("1", "true", "yes"),
            sensor_interval_seconds=_number(env, "DROUGHTWATCH_SENSOR_INTERVAL_SECONDS", DEFAULT_INTERVAL_SECONDS, int),
            k8s_namespace=env.get("DROUGHTWATCH_K8S_NAMESPACE", "droughtwatch"),
            k8s_max_concurrent=int(env.get("DROUGHTWATCH_K8S_MAX_CONCURRENT", "8")),
            k8s_env_secrets=tuple(
                s for s in env.get("DROUGHTWATCH_K8S_ENV_SECRETS", "droughtwatch-aws").split(",") if s
            ),
            k8s_env_vars=tuple(v for v in K8S_ENV_VARS if env.get(v)),
        )


def _env_var(deployment: Deployment, *names: str) -> dg.EnvVar | None:
    """The first of these AWS variables that is set, as an EnvVar: secrets never become config values."""
    return next((dg.EnvVar(name) for name in names if name in deployment.aws_variables), None)


def resources_for(deployment: Deployment) -> dict:
    """The named resource set of a deployment: storage, values, tracker and raw-source defaults."""
    tracking = TrackingResource(
        default_tracker=deployment.tracker,
        mlflow_tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI") if deployment.mlflow_tracking_uri_set else None,
        mlflow_experiment=deployment.mlflow_experiment,
        wandb_project=deployment.wandb_project,
        wandb_dir=deployment.wandb_dir or str(Path(deployment.data_dir, "wandb")),
    )
    # One S3 resource, for storage and the S3 raw source alike (the raw source may be in S3 while storage is local).
    s3_resource = S3Resource(
        endpoint_url=_env_var(deployment, "AWS_ENDPOINT_URL"),
        region_name=_env_var(deployment, "AWS_REGION", "AWS_DEFAULT_REGION"),
        aws_access_key_id=_env_var(deployment, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env_var(deployment, "AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env_var(deployment, "AWS_SESSION_TOKEN"),
        max_attempts=4,
    )
    raw_source = RawSourceResource(
        s3=s3_resource,
        source=deployment.raw_source,
        folder=deployment.raw_folder,
        archive_url=deployment.archive_url,
        uri=deployment.raw_uri,
    )
    if deployment.storage == "local":
        store = LocalStore(
            base_dir=deployment.data_dir, keep_versions=deployment.keep_versions, grace_minutes=deployment.grace_minutes
        )
        values = dg.FilesystemIOManager(base_dir=str(Path(deployment.data_dir, "values")))
    else:
        store = S3Store(
            base_dir=deployment.data_dir,
            s3=s3_resource,
            bucket=deployment.bucket,
            prefix=deployment.prefix,
            registry_bucket=deployment.registry_bucket,
            create_bucket=deployment.create_bucket,
            keep_versions=deployment.keep_versions,
            grace_minutes=deployment.grace_minutes,
        )
        values = S3PickleIOManager(
            s3_resource=s3_resource, s3_bucket=deployment.bucket, s3_prefix=f"{deployment.prefix}/values".strip("/")
        )
    return {
        "store": store,
        "io_manager": ArtifactIOManager(store=store),
        "value_io_manager": values,
        "tracking": tracking,
        "raw_source": raw_source,
        "scratch": ScratchSpace(base_dir=deployment.data_dir),
        "retraining": RetrainingPolicy(force=deployment.force_retrain),
    }


def executor_for(deployment: Deployment) -> dg.ExecutorDefinition | None:
    """None keeps Dagster's default (multiprocess); k8s runs each step as a Kubernetes job, sized by the
    assets' `dagster-k8s/config` op tags."""
    if deployment.name != "k8s":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(
        {
            "job_namespace": deployment.k8s_namespace,
            "max_concurrent": deployment.k8s_max_concurrent,
            "env_secrets": list(deployment.k8s_env_secrets),  # credentials from secrets, never run config
            "env_vars": list(deployment.k8s_env_vars),
        },
        name="k8s",
    )


def local_resources(data_dir: str | os.PathLike, **settings) -> dict:
    """Resources for files under data_dir: what tests and scripts pass to `materialize()`."""
    return resources_for(Deployment(name="local", data_dir=str(Path(data_dir).absolute()), **settings))


def build_resources(data_dir: str | os.PathLike | None = None) -> dict:
    """Resources for the deployment the environment describes, with another data directory if given."""
    env = dict(os.environ)
    if data_dir is not None:
        env["DROUGHTWATCH_DATA_DIR"] = str(data_dir)
    return resources_for(Deployment.from_env(env))
