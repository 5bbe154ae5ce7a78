"""`new_raw_shards`: a run of the registered configurations when raw shards are added, changed or removed.

The sensor lists the deployment's raw source (folder or S3) on each tick and keeps what it saw in its cursor
(see sources/watch.py): a shard is picked up once two ticks in a row see the same size and mtime or ETag. On
its first tick the sensor only records what is there if `raw_tfrecords` has been materialised on this
instance; if it never was, every shard counts as new.
"""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.core.configurations import CONFIGURATIONS
from droughtwatch_assets.defs.jobs import configuration_jobs
from droughtwatch_assets.execution.cli_runs import fail_runs_of_dead_processes
from droughtwatch_assets.sources.raw import LISTABLE, list_shards
from droughtwatch_assets.sources.watch import cursor_json, look, names_tag, plural
from droughtwatch_assets.wiring.resources import RawSourceResource
from droughtwatch_assets.wiring.settings import DEFAULT_INTERVAL_SECONDS, current

TRIGGER_TAG = "droughtwatch/trigger"
CHANGED_TAG = "droughtwatch/changed_shards"  # new or changed: comma-separated split/name, cut at 1,000 characters
CHANGED_COUNT_TAG = "droughtwatch/changed_shard_count"
REMOVED_TAG = "droughtwatch/removed_shards"
RAW_ASSET = dg.AssetKey("raw_tfrecords")
# The registered configurations (today: the baseline): the ones whose model the data should keep current.
REGISTERED = [c for c in CONFIGURATIONS.values() if c.register]


def _new_raw_shards(context: dg.SensorEvaluationContext, raw_source: RawSourceResource) -> dg.SensorResult:
    source = raw_source.to_source()
    if source.kind not in LISTABLE:
        return dg.SensorResult(
            skip_reason=f"nothing to watch: the raw source is '{source.kind}'; set DROUGHTWATCH_RAW_SOURCE to "
            f"{' or '.join(LISTABLE)}",
            cursor=context.cursor,
        )
    listing = list_shards(source, raw_source.client() if source.kind == "s3" else None)
    if not context.cursor and context.instance.get_latest_materialization_event(RAW_ASSET) is not None:
        # watch from here: the shards present now count as what the last materialisation saw
        watching = f"first tick: watching {plural(len(listing), 'shard')}"
        context.log.info(watching)
        return dg.SensorResult(
            skip_reason=f"{watching}; a run follows when shards are added or changed", cursor=cursor_json(listing, {})
        )
    seen = look(listing, context.cursor)
    if seen.skip_reason():
        return dg.SensorResult(skip_reason=seen.skip_reason(), cursor=seen.cursor)
    context.log.info(seen.summary() + (f"; {seen.settling_line}" if seen.settling else ""))
    tags = _run_tags(seen)
    run_requests = [
        dg.RunRequest(
            run_key=f"new_raw_shards:{configuration.name}:{seen.digest()}",
            job_name=configuration_jobs[configuration.name].name,
            partition_key=configuration.feature_set,
            tags=tags,
        )
        for configuration in REGISTERED
    ]
    return dg.SensorResult(run_requests=run_requests, cursor=seen.cursor)


def _run_tags(seen) -> dict[str, str]:
    """What a run started by the sensor says about why: the shards added, changed or removed."""
    tags = {TRIGGER_TAG: "new_raw_shards", CHANGED_COUNT_TAG: str(len(seen.changes))}
    if seen.changes:
        tags[CHANGED_TAG] = names_tag(seen.changes)
    if seen.removed:
        tags[REMOVED_TAG] = names_tag(seen.removed)
    return tags


def new_raw_shards_sensor(minimum_interval_seconds: int = DEFAULT_INTERVAL_SECONDS) -> dg.SensorDefinition:
    """The sensor, ticking at most every `minimum_interval_seconds` (DROUGHTWATCH_SENSOR_INTERVAL_SECONDS)."""
    return dg.sensor(
        name="new_raw_shards",
        jobs=[configuration_jobs[c.name] for c in REGISTERED],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Runs the registered configurations (today: baseline_job) when shards are added, changed or "
        "removed in the raw source (folder or S3). A shard is picked up once its size holds between two ticks. "
        "STOPPED by default.",
    )(_new_raw_shards)


new_raw_shards = new_raw_shards_sensor(current().sensor_interval_seconds)


@dg.sensor(
    name="dead_cli_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs that a `droughtwatch run` or `droughtwatch experiments` process on this "
    "machine was executing when it died, and gives back the pool slots their steps held, so that they hold up no "
    "queued run of their partition and no later champion step. Requests no runs.",
)
def dead_cli_runs(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_runs_of_dead_processes(context.instance, "the dead_cli_runs sensor")
    if failed:
        return dg.SkipReason(f"marked failed: {', '.join(failed)} (their droughtwatch process had died)")
    return dg.SkipReason("no run of a dead droughtwatch process")
