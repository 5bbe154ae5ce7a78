import dagster as dg

from droughtwatch_assets.dagster_support.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.dagster_support.failures import refusal, refuse_configuration_mismatch
from droughtwatch_assets.dagster_support.metadata import publication_metadata
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.model.publication import Listing, NotEvaluated, publish_model
from droughtwatch_assets.wiring.resources import ArtifactStore, TrackingResource


@dg.asset(
    # 2: the drift reference is published too; 3: with the model's predicted class rates on val. The daily schedule
    # retrains once after a bump, so the published model has them
    **{**PER_FEATURE_SET, "code_version": "3"},
    group_name="deployment",
    kinds={"s3", "onnx"},
    io_manager_key="value_io_manager",
    description="The ONNX model and its config.yaml published as <model name>/model.onnx and <model name>/config.yaml "
    "in the registry (s3://<registry bucket>/ in S3 mode), for configurations with register_model set "
    "(the baseline). Each publication also lands whole in <model name>/versions/<version>/ before "
    "<model name>/CURRENT names it, so a reader never pairs a model with another model's config. The training "
    "data's drift reference (drift_reference.json) is published with them, with the model's predicted class rates "
    "on val (model_evaluation's) that prediction drift is measured against; the model card shows both. "
    "Other configurations are not published.",
)
def published_model(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    tracking: TrackingResource,
    onnx_model: OnnxArtifact,
    model_evaluation: EvaluationRecord,
) -> dg.Output[dict]:
    config = onnx_model.config
    name = config.model_name
    refuse_configuration_mismatch(context, name)
    if config.feature_set != context.partition_key:
        raise refusal(
            f"onnx_model partition '{context.partition_key}' holds a model trained on feature set "
            f"'{config.feature_set}'; materialise the chain again for this partition"
        )
    if not config.register_model:
        context.log.info(f"model {name!r} is not a registered configuration; nothing published")
        return dg.Output(
            {"model_name": name, "published": False, "uris": []}, metadata={"model_name": name, "published": False}
        )
    try:
        published = publish_model(
            store,
            onnx_model,
            model_evaluation,
            name,
            Listing(name),
            lambda: tracking.step(context, config.tracker, job_type="publish"),
            lambda: store.retain_after_commit(context.log, models=[name]),
        )
    except NotEvaluated as exc:
        raise refusal(str(exc)) from None
    publication = published.publication
    context.log.info(f"published {name} version {publication.version}: {publication.version_uri}")
    uris = [publication.model_uri, publication.config_uri]
    value = {"model_name": name, "published": True, "uris": uris, "version": publication.version}
    value.update({"version_uri": publication.version_uri, **published.tracked})
    return dg.Output(value, metadata=publication_metadata(name, publication, published.tracked, published.card))
