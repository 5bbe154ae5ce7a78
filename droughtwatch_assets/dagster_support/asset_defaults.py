"""Decorator arguments the assets share, in one place."""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.dagster_support.partitions import feature_set_partitions

# Steps that read or write storage retry twice with backoff (1 s, then 2 s) before failing: an object store
# that is away for a moment should not fail a run. Bad data raises Failure(allow_retries=False) instead.
STORAGE_RETRY = dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL)

# The chain that makes a published model: what the daily schedule compares code versions of.
TRAINING_CHAIN = (
    "raw_tfrecords",
    "processed_tfrecords",
    "trained_model",
    "onnx_model",
    "model_evaluation",  # its figures go into the published model card
    "published_model",
)
# Every step of the chain: bump an asset's code_version when the same inputs would give other outputs.
CHAIN_STEP = {"code_version": "1", "retry_policy": STORAGE_RETRY}
# Every step after raw_tfrecords: one partition per feature set.
PER_FEATURE_SET = {**CHAIN_STEP, "partitions_def": feature_set_partitions}


# dagster-dask's op tag for a step's Dask worker resources (its DASK_RESOURCE_REQUIREMENTS_KEY), spelt out here so
# that loading the definitions does not import Dask.
DASK_RESOURCES_TAG = "dagster-dask/resource_requirements"
GIB = 2**30


def step_size(cpu: int, memory_gib: int, memory_limit_gib: int) -> dict:
    """op_tags sizing a step wherever steps are placed: its pod under Kubernetes (requests, and a memory limit), the
    worker resources it takes under Dask (`CPU` and `MEMORY` in bytes, the requests; a worker runs it only while it
    has that much of what it offers with `dask worker --resources` left). The multiprocess executor ignores both."""
    resources = {
        "requests": {"cpu": str(cpu), "memory": f"{memory_gib}Gi"},
        "limits": {"memory": f"{memory_limit_gib}Gi"},
    }
    return {
        "dagster-k8s/config": {"container_config": {"resources": resources}},
        DASK_RESOURCES_TAG: {"CPU": cpu, "MEMORY": memory_gib * GIB},
    }
