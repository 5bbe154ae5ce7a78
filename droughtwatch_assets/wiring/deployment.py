"""The resource set and the executor of each named deployment (local, s3, k8s, dask); what picks one, and every other
setting, is in settings.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3PickleIOManager

from droughtwatch_assets.wiring.resources import (
    ArtifactIOManager,
    LocalStore,
    RawSourceResource,
    RetrainingPolicy,
    S3Connection,
    S3Store,
    ScratchSpace,
    TrackingResource,
)
from droughtwatch_assets.wiring.settings import AWS_VARIABLES, K8S_ENV_VARS, Deployment

__all__ = ["AWS_VARIABLES", "K8S_ENV_VARS", "Deployment", "executor_for", "local_resources", "resources_for"]


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
        wandb_online=deployment.wandb_online,
        wandb_base_url=deployment.wandb_base_url,
    )
    # One S3 resource, for storage and the S3 raw source alike (the raw source may be in S3 while storage is local).
    s3_resource = S3Connection(
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


# What each step process of the multiprocess executor would otherwise import for itself (Dagster, the definitions,
# TensorFlow): Python's fork server imports it once per run and forks every step from it.
STEP_PRELOAD = [
    "droughtwatch_assets.definitions",
    "droughtwatch_assets.model.train",
    "droughtwatch_assets.model.export",
]
multiprocess_executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}}}, name="multiprocess"
)


def executor_for(deployment: Deployment) -> dg.ExecutorDefinition:
    """local and s3: Dagster's multiprocess executor, its steps forked from a preloaded fork server; k8s runs each step
    as a Kubernetes job, dask as a task on the Dask scheduler; both size the steps by the assets' op tags
    (`step_size`)."""
    if deployment.name == "dask":
        from droughtwatch_assets.execution.dask_executor import dask_executor

        return dask_executor.configured({"address": deployment.dask_scheduler}, name="dask")
    if deployment.name != "k8s":
        return multiprocess_executor
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
    """Resources for the deployment the environment describes now, with another data directory if given."""
    deployment = Deployment.from_env()
    if data_dir is not None:
        deployment = dataclasses.replace(deployment, data_dir=str(Path(data_dir).expanduser().absolute()))
    return resources_for(deployment)
