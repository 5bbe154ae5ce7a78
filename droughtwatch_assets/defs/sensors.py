"""`new_raw_shards`: a run of the registered configurations when raw shards are added, changed or removed.

The sensor lists the deployment's raw source (folder or S3; `raw_sources.list_shards`) on each tick and
keeps a cursor of shard name -> size + mtime (folder) or size + ETag (S3):

    {"shards": {name: stamp, ...},    the shards the last requested run (or the first tick) saw
     "pending": {name: stamp, ...}}   shards seen on the last tick that differ from "shards"

A shard is picked up once two ticks in a row see the same stamp, so one still being written (its size
changes between ticks) waits until it is stable. On its first tick the sensor only records what is there
if `raw_tfrecords` has been materialised on this instance; if it never was, every shard counts as new.
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from droughtwatch_assets.core.configurations import CONFIGURATIONS
from droughtwatch_assets.defs.jobs import configuration_jobs
from droughtwatch_assets.defs.resources import RawSourceResource
from droughtwatch_assets.sources.raw import LISTABLE, ShardStamp, list_shards

TRIGGER_TAG = "droughtwatch/trigger"
CHANGED_TAG = "droughtwatch/changed_shards"  # new or changed: comma-separated split/name, cut at TAG_LIMIT
CHANGED_COUNT_TAG = "droughtwatch/changed_shard_count"
REMOVED_TAG = "droughtwatch/removed_shards"
TAG_LIMIT = 1000
DEFAULT_INTERVAL_SECONDS = 60
RAW_ASSET = dg.AssetKey("raw_tfrecords")
# The registered configurations (today: the baseline): the ones whose model the data should keep current.
REGISTERED = [c for c in CONFIGURATIONS.values() if c.register]


def names_line(names: list[str], limit: int = 3) -> str:
    """'train/part-r-00120, train/part-r-00121, val/part-r-00007 … (+2 more)'."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} … (+{len(names) - limit} more)"


def names_tag(names: list[str]) -> str:
    """Comma-separated names, cut at TAG_LIMIT characters with how many more there are."""
    value = ""
    for index, name in enumerate(names):
        candidate = f"{value},{name}" if value else name
        left = len(names) - index - 1  # names after this one
        if len(candidate) + (len(f",… (+{left} more)") if left else 0) > TAG_LIMIT:
            return (f"{value}," if value else "") + f"… (+{len(names) - index} more)"
        value = candidate
    return value


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _stamps(value: dict) -> dict[str, ShardStamp]:
    return {name: ShardStamp.from_json(stamp) for name, stamp in value.items()}


def _cursor(shards: dict[str, ShardStamp], pending: dict[str, ShardStamp]) -> str:
    return json.dumps(
        {
            "shards": {name: stamp.to_json() for name, stamp in sorted(shards.items())},
            "pending": {name: stamp.to_json() for name, stamp in sorted(pending.items())},
        },
        sort_keys=True,
    )


def _new_raw_shards(context: dg.SensorEvaluationContext, raw_source: RawSourceResource) -> dg.SensorResult:
    source = raw_source.to_source()
    if source.kind not in LISTABLE:
        return dg.SensorResult(
            skip_reason=f"nothing to watch: the raw source is '{source.kind}'; set DROUGHTWATCH_RAW_SOURCE to "
            f"{' or '.join(LISTABLE)}",
            cursor=context.cursor,
        )
    listing = list_shards(source, raw_source.client() if source.kind == "s3" else None)

    if context.cursor:
        state = json.loads(context.cursor)
        known, pending = _stamps(state["shards"]), _stamps(state["pending"])
    else:
        known, pending = {}, {}
        if context.instance.get_latest_materialization_event(RAW_ASSET) is not None:
            # Watch from here: the shards present now count as what the last materialisation saw.
            context.log.info(f"first tick: watching {plural(len(listing), 'shard')}")
            return dg.SensorResult(
                skip_reason=f"first tick: watching {plural(len(listing), 'shard')}; a run follows when shards are "
                "added or changed",
                cursor=_cursor(listing, {}),
            )

    stable, settling = {}, {}
    for name, stamp in listing.items():
        if known.get(name) == stamp:
            continue
        if pending.get(name) == stamp:
            stable[name] = stamp  # the same on two ticks in a row: whole
        else:
            settling[name] = stamp  # first seen, or still changing
    removed = sorted(name for name in known if name not in listing)
    added = [name for name in stable if name not in known]
    changed = [name for name in stable if name in known]

    # The new baseline: what was known and is still there, updated with the stable shards.
    shards = {name: stamp for name, stamp in known.items() if name in listing}
    shards.update(stable)
    settling_line = (
        f"{plural(len(settling), 'shard')} still being written or just arrived: {names_line(sorted(settling))} "
        "(picked up once unchanged on the next tick)"
        if settling
        else ""
    )

    if not (stable or removed):
        if not context.cursor:
            reason = (
                f"first tick: raw_tfrecords was never materialised on this instance, so all "
                f"{plural(len(listing), 'shard')} count as new; a run follows once they are unchanged on the next tick"
            )
        elif settling:
            reason = f"no change yet: {plural(len(shards), 'shard')} watched; {settling_line}"
        else:
            reason = f"no change: {plural(len(shards), 'shard')} watched"
        return dg.SensorResult(skip_reason=reason, cursor=_cursor(shards, settling))

    parts = []
    if added:
        parts.append(f"{plural(len(added), 'new shard')}: {names_line(added)}")
    if changed:
        parts.append(f"{plural(len(changed), 'changed shard')}: {names_line(changed)}")
    if removed:
        parts.append(f"{plural(len(removed), 'removed shard')}: {names_line(removed)}")
    summary = "; ".join(parts)
    context.log.info(summary + (f"; {settling_line}" if settling else ""))

    changes = sorted(stable)
    # The same tick evaluated again (say its cursor was not saved) asks for the same runs: the run key is
    # the state before the tick plus the changes, so the daemon never launches them twice.
    digest = hashlib.sha256(
        json.dumps([context.cursor or "", [[name, stable[name].to_json()] for name in changes], removed]).encode()
    ).hexdigest()[:16]
    tags = {TRIGGER_TAG: "new_raw_shards", CHANGED_COUNT_TAG: str(len(changes))}
    if changes:
        tags[CHANGED_TAG] = names_tag(changes)
    if removed:
        tags[REMOVED_TAG] = names_tag(removed)
    run_requests = [
        dg.RunRequest(
            run_key=f"new_raw_shards:{configuration.name}:{digest}",
            job_name=configuration_jobs[configuration.name].name,
            partition_key=configuration.feature_set,
            tags=tags,
        )
        for configuration in REGISTERED
    ]
    return dg.SensorResult(run_requests=run_requests, cursor=_cursor(shards, settling))


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


new_raw_shards = new_raw_shards_sensor()
