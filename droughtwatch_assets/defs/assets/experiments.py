"""The feature sets' models compared (leaderboard) and the best one promoted (champion)."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from droughtwatch_assets.artifacts import OnnxArtifact
from droughtwatch_assets.configurations import PARITY_TOLERANCE
from droughtwatch_assets.datasets import ShardedDataset, md5_of
from droughtwatch_assets.defs.asset_defaults import CHAIN_STEP
from droughtwatch_assets.defs.metadata import table
from droughtwatch_assets.defs.partitions import feature_set_partitions
from droughtwatch_assets.defs.resources import ArtifactStore
from droughtwatch_assets.defs.tracking import TrackingResource
from droughtwatch_assets.experiments import Candidate, Metric, candidate, choose, ranked
from droughtwatch_assets.retention import with_source_version
from droughtwatch_assets.tracking.base import tracked

CHAMPION = "champion"


def latest_evaluation(instance: dg.DagsterInstance, feature_set: str) -> dict | None:
    """What the partition's latest model_evaluation recorded, or None if it never ran."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_evaluation"), asset_partitions=[feature_set]), limit=1
    ).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    if "model_md5" not in metadata:  # evaluated by an earlier version that recorded less
        return None
    return {
        "val_accuracy": metadata["val_accuracy"].value,
        "majority_rate": metadata["majority_class_rate"].value,
        "macro_f1": metadata["macro_f1"].value,
        "recall": metadata["recall"].value,
        "data_version": metadata["data_version"].value,
        "model_md5": metadata["model_md5"].value,
    }


@dg.asset(
    **CHAIN_STEP,
    deps=["model_evaluation"],
    group_name="evaluation",
    kinds={"onnx"},
    io_manager_key="value_io_manager",
    description="Every feature set's current evaluated model side by side: val accuracy (the benchmark's metric), "
    "macro-F1, per-class recall and the majority-class rate, on the current raw data version. Models evaluated "
    "on other data are marked stale; feature sets never trained are listed as such.",
)
def leaderboard(context: dg.AssetExecutionContext, raw_tfrecords: ShardedDataset) -> dg.Output[list[dict]]:
    from droughtwatch_assets.visuals import leaderboard_chart, markdown_image

    data_version = raw_tfrecords.manifest["data_version"]
    candidates = ranked(
        [
            candidate(feature_set, latest_evaluation(context.instance, feature_set), data_version)
            for feature_set in feature_set_partitions.get_partition_keys()
        ],
        "val_accuracy",
    )

    def shown(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    rows = [
        [
            c.feature_set,
            c.status,
            *map(shown, (c.val_accuracy, c.macro_f1, *(c.recall or [None] * 4), c.majority_rate)),
            c.data_version,
        ]
        for c in candidates
    ]
    columns = [
        ("feature set", "string"),
        ("status", "string"),
        ("val accuracy", "float"),
        ("macro F1", "float"),
        *((f"recall {k}", "float") for k in range(4)),
        ("majority class rate", "float"),
        ("data version", "string"),
    ]
    return dg.Output(
        [c.as_dict() for c in candidates],
        metadata={
            "data_version": data_version,
            "candidates": sum(c.status == "candidate" for c in candidates),
            "leaderboard": table(columns, rows),
            "chart": dg.MetadataValue.md(markdown_image(leaderboard_chart(candidates, "val_accuracy"), "leaderboard")),
        },
    )


class ChampionConfig(dg.Config):
    metric: Metric = Field(default="val_accuracy", description="what the best model is chosen by")
    margin: float = Field(default=0.0, description="how much a challenger must beat the champion by (same data)")
    registered_model: str = Field(default="droughtwatch", description="the tracker's registered model name")


@dg.asset(
    **CHAIN_STEP,
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
) -> dg.Output[dict]:
    candidates = [Candidate(**row) for row in leaderboard]
    current = store.published(CHAMPION)
    current_record = current[1]["champion"] if current else None
    decision = choose(candidates, config.metric, config.margin, current_record)
    history = current[1].get("history", []) if current else []
    metadata = {"decision": decision.reason, "previous_champion": current_record["feature_set"] if current else "none"}
    if decision.winner is not None:
        winner = decision.winner
        onnx = OnnxArtifact.open(store.current(("onnx_model", winner.feature_set)))
        if md5_of(onnx.onnx_path) != winner.model_md5:
            raise dg.Failure(
                f"onnx_model {winner.feature_set} changed after it was evaluated; materialise "
                f"model_evaluation for {winner.feature_set} again",
                allow_retries=False,
            )
        record = {
            "feature_set": winner.feature_set,
            "features": onnx.config["features"],
            "metric": config.metric,
            "val_accuracy": winner.val_accuracy,
            "macro_f1": winner.macro_f1,
            "data_version": winner.data_version,
            "model_md5": winner.model_md5,
            "won_by": decision.won_by,
            "parity": onnx.parity["max_abs_diff"],
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        history = [
            *history,
            {k: record[k] for k in ("promoted_at", "feature_set", "metric", config.metric, "model_md5")},
        ]
        source = with_source_version(onnx.config, ("onnx_model", winner.feature_set), onnx.root)
        publication = store.publish(CHAMPION, onnx.onnx_path, {**source, "champion": record, "history": history})
        store.retain_after_commit(context.log, models=[CHAMPION])
        context.log.info(f"champion: {winner.feature_set} ({decision.reason}), {publication.version_uri}")
        tracker = tracking.tracker(context, "deployment", store.base_dir, required=True, job_type="promote")
        tracker.start(f"{config.registered_model}_champion", record)
        with tracked(tracker):
            metadata.update(
                tracker.promote(
                    config.registered_model,
                    onnx.onnx_path,
                    {"feature_set": winner.feature_set, "data_version": winner.data_version},
                )
            )
        metadata.update(
            {"champion": winner.feature_set, "won_by": decision.won_by or 0.0, "version_uri": publication.version_uri}
        )
        current_record = record
    else:
        context.log.info(f"no new champion: {decision.reason}")
        metadata["champion"] = current_record["feature_set"] if current_record else "none"
    metadata["history"] = table(
        [
            ("promoted at", "string"),
            ("feature set", "string"),
            ("metric", "string"),
            ("value", "float"),
            ("model md5", "string"),
        ],
        [[h["promoted_at"], h["feature_set"], h["metric"], h.get(h["metric"]), h["model_md5"]] for h in history],
    )
    return dg.Output(
        {
            "promoted": decision.winner is not None,
            "reason": decision.reason,
            "champion": current_record,
            "history": history,
        },
        metadata=metadata,
    )


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
    parity = config["champion"]["parity"]
    problems = []
    if channels != len(config["features"]):
        problems.append(f"the model takes {channels} channels; its config lists {len(config['features'])} features")
    if not parity <= PARITY_TOLERANCE:
        problems.append(f"ONNX/Keras max abs diff {parity} > {PARITY_TOLERANCE}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems), "feature_set": config["champion"]["feature_set"]},
    )
