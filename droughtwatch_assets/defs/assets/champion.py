"""The feature sets' models compared (leaderboard) and the best one promoted (champion)."""

from typing import Any

import dagster as dg
from pydantic import Field

from droughtwatch_assets.core.configurations import PARITY_TOLERANCE
from droughtwatch_assets.dagster_support.asset_defaults import CHAIN_STEP
from droughtwatch_assets.dagster_support.metadata import champion_history_table
from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.model.artifacts import OnnxModels
from droughtwatch_assets.model.card import model_card
from droughtwatch_assets.model.drift import reference_attachments, reference_to_publish
from droughtwatch_assets.model.selection import Candidate, Metric, champion_record, choose, with_promotion
from droughtwatch_assets.storage.registry import CARD_FILE
from droughtwatch_assets.storage.retention import with_source_version
from droughtwatch_assets.wiring.resources import ArtifactStore, TrackingResource

CHAMPION = "champion"


class ChampionConfig(dg.Config):
    metric: Metric = Field(default="val_accuracy", description="what the best model is chosen by")
    margin: float = Field(default=0.0, description="how much a challenger must beat the champion by (same data)")
    registered_model: str = Field(default="droughtwatch", description="the tracker's registered model name")


@dg.asset(
    **CHAIN_STEP,
    ins={
        "onnx_model": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),  # opened lazily: the winner's only
        "model_evaluation": dg.AssetIn(
            partition_mapping=dg.AllPartitionMapping(), metadata={"allow_missing_partitions": True}
        ),
    },
    # one champion step at a time across runs (dagster.yaml's pool limit): each compares against the champion
    # the previous one promoted, so concurrent experiment runs end with the best model, whatever their order
    pool="champion",
    group_name="deployment",
    kinds={"onnx"},
    io_manager_key="value_io_manager",
    description="The best model of the leaderboard, published as champion/model.onnx + config.yaml (a pair, as "
    "every published model) when it beats the majority class and the current champion by the margin; its "
    "config names the feature set and the features an inference client feeds it.",
)
def champion(
    context: dg.AssetExecutionContext,
    config: ChampionConfig,
    store: ArtifactStore,
    tracking: TrackingResource,
    leaderboard: list[dict],
    onnx_model: OnnxModels,
    model_evaluation: Any,  # dict[str, EvaluationRecord]; the record itself when there is one feature set
) -> dg.Output[dict]:
    current = store.published(CHAMPION)
    current_record = current[1].champion if current else None
    history = current[1].history if current else []
    decision = choose([Candidate(**row) for row in leaderboard], config.metric, config.margin, current_record)
    metadata = {"decision": decision.reason, "previous_champion": current_record["feature_set"] if current else "none"}
    if decision.winner is None:
        context.log.info(f"no new champion: {decision.reason}")
    else:
        winner = decision.winner.feature_set
        evaluations = model_evaluation if isinstance(model_evaluation, dict) else {winner: model_evaluation}
        evaluation = evaluations.get(winner)
        current_record, history, promoted = promote(
            context, config, store, tracking, decision, (onnx_model[winner], evaluation), history
        )
        metadata.update(promoted)
    metadata["champion"] = current_record["feature_set"] if current_record else "none"
    metadata["history"] = champion_history_table(history)
    outcome = {"promoted": decision.winner is not None, "reason": decision.reason, "champion": current_record}
    return dg.Output({**outcome, "history": history}, metadata=metadata)


def promote(context, config: ChampionConfig, store: ArtifactStore, tracking: TrackingResource, decision, model, past):
    """Publish the winner (model: its onnx_model and evaluation) as champion/ with its model card, and promote it
    in the tracker: (its record, the history with it, metadata)."""
    winner, (onnx, evaluation) = decision.winner, model
    if md5_of(onnx.onnx_path) != winner.model_md5 or evaluation is None or evaluation.model_md5 != winner.model_md5:
        raise dg.Failure(
            f"onnx_model {winner.feature_set} changed after it was evaluated; materialise "
            f"model_evaluation for {winner.feature_set} again",
            allow_retries=False,
        )
    record = champion_record(decision, config.metric, onnx.config.features, onnx.parity["max_abs_diff"])
    history = with_promotion(past, record)
    source = with_source_version(onnx.config, ("onnx_model", winner.feature_set), onnx.root)
    published = source.model_copy(update={"champion": record, "history": history})
    reference = reference_to_publish(onnx, evaluation.predicted_class_rates)
    card = model_card(onnx.config, evaluation, onnx.parity["max_abs_diff"], CHAMPION, reference)
    publication = store.publish(
        CHAMPION, onnx.onnx_path, published, {**reference_attachments(reference), CARD_FILE: card}
    )
    store.retain_after_commit(context.log, models=[CHAMPION])
    context.log.info(f"champion: {winner.feature_set} ({decision.reason}), {publication.version_uri}")
    tags = {"feature_set": winner.feature_set, "data_version": winner.data_version}
    with tracking.step(context, job_type="promote", start=(f"{config.registered_model}_champion", record)) as tracker:
        promoted = tracker.promote(config.registered_model, onnx.onnx_path, tags)
        tracker.log_model_card(CHAMPION, card)
    promoted.update({"won_by": decision.won_by or 0.0, "version_uri": publication.version_uri})
    promoted["model_card"] = dg.MetadataValue.md(card)
    return record, history, promoted


@dg.asset_check(
    asset=champion,
    blocking=True,
    description="The published champion's ONNX export agreed with Keras, and its input takes as many "
    "channels as its config has features.",
)
def champion_is_sound(store: ArtifactStore) -> dg.AssetCheckResult:
    import onnxruntime as ort

    published = store.published(CHAMPION)
    if published is None:
        return dg.AssetCheckResult(passed=True, metadata={"champion": "none published"})
    model, config = published
    channels = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[3]
    parity = config.champion["parity"]
    problems = []
    if channels != len(config.features):
        problems.append(f"the model takes {channels} channels; its config lists {len(config.features)} features")
    if not parity <= PARITY_TOLERANCE:
        problems.append(f"ONNX/Keras max abs diff {parity} > {PARITY_TOLERANCE}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems), "feature_set": config.champion["feature_set"]},
    )
