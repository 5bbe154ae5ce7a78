"""The feature sets' models compared (leaderboard) and the best one promoted (champion)."""

import dagster as dg
from pydantic import Field

from droughtwatch_assets.core.configurations import parity_problem
from droughtwatch_assets.dagster_support.asset_defaults import CHAIN_STEP
from droughtwatch_assets.dagster_support.failures import refusal
from droughtwatch_assets.dagster_support.metadata import champion_history_table
from droughtwatch_assets.defs.assets.leaderboard import EVALUATIONS, Evaluations, by_feature_set
from droughtwatch_assets.model.artifacts import OnnxModels
from droughtwatch_assets.model.publication import Listing, NotEvaluated, list_published, publish_model
from droughtwatch_assets.model.selection import Candidate, Metric, champion_record, choose, with_promotion
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
        "model_evaluation": EVALUATIONS,
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
    leaderboard: list[Candidate],
    onnx_model: OnnxModels,
    model_evaluation: Evaluations,
) -> dg.Output[dict]:
    current = store.published(CHAMPION)
    current_record = current[1].champion if current else None
    history = current[1].history if current else []
    decision = choose(leaderboard, config.metric, config.margin, current_record)
    metadata = {"decision": decision.reason, "previous_champion": current_record["feature_set"] if current else "none"}
    if current:
        metadata.update(complete_promotion(context, config, tracking, current))
    if decision.winner is None:
        context.log.info(f"no new champion: {decision.reason}")
    else:
        winner = decision.winner.feature_set
        evaluation = by_feature_set(model_evaluation).get(winner)
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
    record = champion_record(decision, config.metric, onnx.config.features, onnx.parity["max_abs_diff"])
    history = with_promotion(past, record)
    tags = {"feature_set": winner.feature_set, "data_version": winner.data_version}
    try:
        published = publish_model(
            store,
            onnx,
            evaluation,
            CHAMPION,
            Listing(config.registered_model, champion=True, tags=tags),
            lambda: tracking.step(context, job_type="promote", start=(f"{config.registered_model}_champion", record)),
            lambda: store.retain_after_commit(context.log, models=[CHAMPION]),
            chosen_md5=winner.model_md5,
            config_update={"champion": record, "history": history},
        )
    except NotEvaluated as exc:
        raise refusal(str(exc)) from None
    publication = published.publication
    context.log.info(f"champion: {winner.feature_set} ({decision.reason}), {publication.version_uri}")
    promoted = {**published.tracked, "won_by": decision.won_by or 0.0, "version_uri": publication.version_uri}
    promoted["model_card"] = dg.MetadataValue.md(published.card)
    return record, history, promoted


def complete_promotion(context, config: ChampionConfig, tracking: TrackingResource, current) -> dict:
    """Promote in the tracker the champion the store holds (current: its model file and config) when the tracker
    does not name it champion: its promotion failed after the store had committed it. Metadata of what was done."""
    model, published = current
    version, record = published.published_version, published.champion
    if not version or tracking.names_champion(context, config.registered_model, version):
        return {}
    context.log.warning(f"the tracker does not name champion version {version} champion: promoting it now")
    tags = {"feature_set": record["feature_set"], "data_version": record["data_version"]}
    tracked = list_published(
        model,
        published,
        CHAMPION,
        Listing(config.registered_model, champion=True, tags=tags),
        lambda: tracking.step(context, job_type="promote", start=(f"{config.registered_model}_champion", record)),
    )
    return {**tracked, "completed_promotion": version}


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
    problems = []
    if channels != len(config.features):
        problems.append(f"the model takes {channels} channels; its config lists {len(config.features)} features")
    parity = parity_problem(config.champion["parity"])
    if parity:
        problems.append(parity)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems), "feature_set": config.champion["feature_set"]},
    )
