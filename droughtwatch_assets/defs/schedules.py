"""The daily baseline retraining, which skips when a run would only repeat the last published model."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from droughtwatch_assets.core.configurations import CONFIGURATIONS
from droughtwatch_assets.dagster_support.asset_defaults import TRAINING_CHAIN
from droughtwatch_assets.dagster_support.provenance import PublishedRun, last_publication
from droughtwatch_assets.defs.assets.raw_tfrecords import RawDataConfig
from droughtwatch_assets.defs.assets.trained_model import TrainingConfig
from droughtwatch_assets.defs.checks import published_model_is_fresh
from droughtwatch_assets.defs.jobs import baseline_job, preset
from droughtwatch_assets.sources.raw import source_fingerprint
from droughtwatch_assets.wiring.resources import RawSourceResource, RetrainingPolicy

REASON_TAG = "droughtwatch/retrain_reason"
BASELINE = CONFIGURATIONS["baseline"]
# Settings that change the model; the tracker a run reports to does not.
TRAINING_SETTINGS = (
    "model_name",
    "learning_rate",
    "batch_size",
    "epochs",
    "augment",
    "sweep",
    "seed",
    "register_model",
)


def training_settings(config: dict) -> dict:
    resolved = TrainingConfig(**config).model_dump()
    return {key: resolved[key] for key in TRAINING_SETTINGS}


def reasons_to_retrain(
    last: PublishedRun | None, fingerprint: str, code_versions: dict[str, str], training: dict
) -> list[str]:
    """Why a run now would give another model than the last published one; empty when it would not."""
    if last is None:
        return ["no published model yet"]
    reasons = []
    if last.source_fingerprint != fingerprint:
        reasons.append("new data: the raw source changed since the last published model")
    changed = sorted(name for name in TRAINING_CHAIN if last.code_versions.get(name) != code_versions.get(name))
    if changed:
        reasons.append(
            "code change: "
            + ", ".join(
                f"{name} {last.code_versions.get(name) or 'not run'} -> {code_versions[name]}" for name in changed
            )
        )
    if training_settings(last.training_config) != training_settings(training):
        reasons.append("config change: the baseline's training settings differ from the last published model's")
    return reasons


@dg.schedule(
    job=baseline_job,
    cron_schedule="0 0 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain the baseline every day at midnight when the raw data, the chain's code versions or the "
    "training settings changed since the last published model; skip, saying so, when none did. "
    "DROUGHTWATCH_FORCE_RETRAIN=true retrains anyway. Stopped by default, like the original DAG.",
)
def baseline_daily(
    context: dg.ScheduleEvaluationContext, raw_source: RawSourceResource, retraining: RetrainingPolicy
) -> dg.RunRequest | dg.SkipReason:
    source = RawDataConfig().to_source(raw_source)  # what the scheduled run reads: the job sets no raw config
    fingerprint = source_fingerprint(source, raw_source.client() if source.kind == "s3" else None)
    graph = context.repository_def.asset_graph
    code_versions = {name: graph.get(dg.AssetKey(name)).code_version or "" for name in TRAINING_CHAIN}
    training = preset(BASELINE).to_config_dict()["ops"]["trained_model"]["config"]
    last = last_publication(context.instance, BASELINE.feature_set)
    reasons = reasons_to_retrain(last, fingerprint, code_versions, training)
    if retraining.force:
        reasons = ["forced (DROUGHTWATCH_FORCE_RETRAIN)", *reasons]
    if not reasons:
        published = datetime.fromtimestamp(last.published_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return dg.SkipReason(
            f"nothing changed since run {last.run_id} published the baseline ({published}): same raw data, same "
            f"code versions, same training settings. Set DROUGHTWATCH_FORCE_RETRAIN=true, or launch baseline_job, "
            f"to retrain anyway"
        )
    context.log.info("; ".join(reasons))
    return dg.RunRequest(partition_key=BASELINE.feature_set, tags={REASON_TAG: "; ".join(reasons)[:1000]})


published_model_freshness_job = dg.define_asset_job(
    "published_model_freshness_job",
    selection=dg.AssetSelection.checks(published_model_is_fresh),
    description="Only the published_model_is_fresh check: is every published model trained on the newest raw data, "
    "and recent enough?",
)

published_model_freshness = dg.ScheduleDefinition(
    name="published_model_freshness",
    job=published_model_freshness_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every hour, check that the published models are fresh, so the asset page shows a stale one "
    "(stopped by default, like the other automation).",
)
