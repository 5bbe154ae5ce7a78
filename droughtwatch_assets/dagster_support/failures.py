"""Failures that retrying cannot fix: they name what was wrong, where, and what to do."""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.core.configurations import CONFIGURATION_TAG, configuration_mismatch
from droughtwatch_assets.records.tfrecord import RecordError


def bad_record_failure(error: RecordError, policy: str) -> dg.Failure:
    """Bad data fails the step without the storage retries: another attempt would read the same bytes."""
    return dg.Failure(
        f"{error} (on_bad_record: {policy}; set it to skip in raw_tfrecords' config to drop such records)",
        allow_retries=False,
        metadata={"file": error.path, "record": error.index, "problem": error.problem},
    )


def refusal(message: str) -> dg.Failure:
    return dg.Failure(message, allow_retries=False)


def refuse_configuration_mismatch(context: dg.AssetExecutionContext, model_name: str | None = None) -> None:
    """Stop a run that would train or publish a configuration's model on another feature set.

    Launched for the wrong partition, a configuration job fails at its first step, before training;
    `model_name` (trained_model's, when known) is checked too.
    """
    partition = context.partition_key if context.has_partition_key else context.run.tags.get("dagster/partition")
    if partition is None:
        return
    problem = configuration_mismatch(context.run.tags.get(CONFIGURATION_TAG), model_name, partition)
    if problem:
        raise refusal(problem)
