"""Decorator arguments the assets share, in one place."""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.defs.partitions import feature_set_partitions

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


def k8s_pod(cpu: str, memory: str, memory_limit: str) -> dict:
    """op_tags sizing the step's pod under the Kubernetes executor (ignored by the multiprocess one)."""
    resources = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}
    return {"dagster-k8s/config": {"container_config": {"resources": resources}}}
