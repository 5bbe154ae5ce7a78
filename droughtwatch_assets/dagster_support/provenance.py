"""What a published model was made from, read back from the instance: the raw data, the code versions of the
chain and the training settings of the run that last published it. The daily schedule compares them with
what a run would use now; the freshness check compares the data with the newest raw data."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from droughtwatch_assets.dagster_support.asset_defaults import TRAINING_CHAIN

CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class PublishedRun:
    """The run that last materialised published_model for one feature set, and what it recorded (the model
    itself, once published, is a storage.registry.Publication)."""

    run_id: str
    published_at: float  # unix seconds
    raw_data_version: str | None
    source_fingerprint: str | None
    code_versions: dict[str, str]  # asset -> the code version it ran with
    training_config: dict

    def staleness(self, newest_raw_data: str | None, age_days: float, max_age_days: float) -> list[str]:
        """Why this publication is stale: newer raw data exists, or it is older than max_age_days."""
        problems = []
        if newest_raw_data and self.raw_data_version != newest_raw_data:
            problems.append(
                f"trained on raw data {self.raw_data_version or 'unknown'}, newer raw data {newest_raw_data} exists"
            )
        if age_days > max_age_days:
            problems.append(f"published {age_days:.1f} days ago, more than {max_age_days:g}")
        return problems


def last_publication(instance: dg.DagsterInstance, feature_set: str) -> PublishedRun | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("published_model"), asset_partitions=[feature_set]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    materialized = {
        event.dagster_event.asset_key.to_user_string(): event.dagster_event.step_materialization_data.materialization
        for event in instance.all_logs(record.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    }
    raw = materialized.get("raw_tfrecords")
    fingerprint = raw.metadata.get("source_fingerprint") if raw else None
    run = instance.get_run_by_id(record.run_id)
    training = ((run.run_config if run else {}).get("ops", {}).get("trained_model") or {}).get("config", {})
    return PublishedRun(
        run_id=record.run_id,
        published_at=record.timestamp,
        raw_data_version=(raw.tags or {}).get(DATA_VERSION_TAG) if raw else None,
        source_fingerprint=fingerprint.value if fingerprint else None,
        code_versions={
            name: (event.tags or {}).get(CODE_VERSION_TAG, "")
            for name, event in materialized.items()
            if name in TRAINING_CHAIN
        },
        training_config=training,
    )


def latest_raw_data_version(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("raw_tfrecords"))
    if event is None or event.asset_materialization is None:
        return None
    return (event.asset_materialization.tags or {}).get(DATA_VERSION_TAG)
