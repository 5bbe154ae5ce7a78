"""Where steps run: processes on this machine (the default), or one Kubernetes job per step."""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR_ENV = "DROUGHTWATCH_EXECUTOR"


def build_executor() -> dg.ExecutorDefinition | None:
    """None keeps Dagster's default (multiprocess); DROUGHTWATCH_EXECUTOR=k8s runs each step as a k8s job."""
    if os.environ.get(EXECUTOR_ENV, "multiprocess") != "k8s":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(
        {
            "job_namespace": os.environ.get("DROUGHTWATCH_K8S_NAMESPACE", "droughtwatch"),
            "max_concurrent": int(os.environ.get("DROUGHTWATCH_K8S_MAX_CONCURRENT", "8")),
            # credentials come from Kubernetes secrets, never from run config
            "env_secrets": [
                s for s in os.environ.get("DROUGHTWATCH_K8S_ENV_SECRETS", "droughtwatch-aws").split(",") if s
            ],
            "env_vars": [
                name
                for name in (
                    "DROUGHTWATCH_STORAGE",
                    "DROUGHTWATCH_S3_BUCKET",
                    "DROUGHTWATCH_S3_PREFIX",
                    "DROUGHTWATCH_REGISTRY_BUCKET",
                    "DROUGHTWATCH_TRACKER",
                    "MLFLOW_TRACKING_URI",
                    "AWS_ENDPOINT_URL",
                    "AWS_REGION",
                )
                if os.environ.get(name)
            ],
        },
        name="k8s",
    )
