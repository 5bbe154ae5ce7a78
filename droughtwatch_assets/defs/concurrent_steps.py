"""A step that waits for the same step in other runs that started it first and are still in it.

The runs of a backfill start together and each makes `raw_tfrecords`. Left alone, all of them read the same
source at once; with this wait, the first reads it and the others keep its shards once it has committed them
(the asset keeps an unchanged source's current version). A run waits for one run: of the going runs with the
same config for the step that are in it, the one that started it first, by the steps' STEP_START events in the
instance (their time, then the run id). Every run sees the same order, so no two runs wait for each other; and
once that run's step has succeeded or failed, all that waited for it go on at once (the second in the order does
not hold up the third). A run waits at most `patience` seconds; then it goes on and builds what it must.
"""

from __future__ import annotations

import time

import dagster as dg

_STEP_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
}


def in_step_since(instance: dg.DagsterInstance, run_id: str, step_key: str) -> float | None:
    """When the run's latest attempt at the step started, if that attempt has not ended yet."""
    records = instance.get_records_for_run(run_id, of_type=_STEP_EVENTS).records
    events = [record.event_log_entry for record in records if record.event_log_entry.step_key == step_key]
    if events and events[-1].dagster_event_type == dg.DagsterEventType.STEP_START:
        return events[-1].timestamp
    return None


def _step_config(run: dg.DagsterRun, step_key: str) -> object:
    return (run.run_config.get("ops") or {}).get(step_key)


def first_run_in_step(context: dg.AssetExecutionContext, step_key: str) -> str | None:
    """Of the going runs that started this step before this run did, with the same config for it, and are still in
    it, the one that started it first."""
    instance = context.instance
    since = in_step_since(instance, context.run.run_id, step_key)
    if since is None:  # not a step of a run in the instance (an asset invoked directly)
        return None
    config = _step_config(context.run, step_key)
    earlier = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.run_id == context.run.run_id or _step_config(run, step_key) != config:
            continue
        other = in_step_since(instance, run.run_id, step_key)
        if other is not None and (other, run.run_id) < (since, context.run.run_id):
            earlier.append((other, run.run_id))
    return min(earlier)[1] if earlier else None


def wait_for_first_run_in_step(
    context: dg.AssetExecutionContext, patience: float = 600.0, poll: float = 0.5
) -> str | None:
    """Waits while the first_run_in_step is going and in the step, at most `patience` seconds; returns that run."""
    instance, step_key = context.instance, context.get_step_execution_context().step.key
    first = first_run_in_step(context, step_key)
    if first is None:
        return None
    context.log.info(f"run {first} started this step first: waiting for it to end the step")
    deadline = time.monotonic() + patience
    while in_step_since(instance, first, step_key) is not None:
        run = instance.get_run_by_id(first)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            break
        if time.monotonic() >= deadline:
            context.log.warning(f"run {first} is still in this step after {patience:g} s: going on")
            break
        time.sleep(poll)
    return first
