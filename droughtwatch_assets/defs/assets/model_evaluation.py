import dagster as dg
from pydantic import Field

from droughtwatch_assets.dagster_support.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.dagster_support.failures import refusal
from droughtwatch_assets.dagster_support.metadata import evaluation_metadata
from droughtwatch_assets.data.datasets import ShardedDataset, md5_of
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.evaluate import EvaluationRecord, class_rates, evaluate
from droughtwatch_assets.model.predict import predict_processed


class EvaluationConfig(dg.Config):
    tta: bool = Field(
        default=False,
        description="test-time augmentation: average each image's probabilities over its 8 flips and quarter turns",
    )


@dg.asset(
    # 2: the record holds the predicted class rates on val that prediction drift is measured against
    **{**PER_FEATURE_SET, "code_version": "2"},
    group_name="evaluation",
    kinds={"onnx", "numpy"},
    io_manager_key="value_io_manager",
    description="The exported model judged on the validation split: confusion matrix, per-class precision, recall "
    "and F1, precision-recall curves, and accuracy against always predicting the majority class; and the share of "
    "val records predicted as each class (without tta), which prediction drift is measured against. With tta, each "
    "image's probabilities are averaged over its 8 dihedral views.",
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    onnx_model: OnnxArtifact,
    processed_tfrecords: ShardedDataset,
) -> dg.Output[EvaluationRecord]:
    if not processed_tfrecords.records("val"):
        raise refusal(
            f"processed_tfrecords partition '{context.partition_key}' has no val records (all vetoed as "
            f"blank or skipped as bad): there is nothing to evaluate on. Check the raw val/ shards"
        )
    scores = predict_processed(
        onnx_model.onnx_path, processed_tfrecords.shards("val"), len(processed_tfrecords.features), tta=config.tta
    )
    probabilities, labels = scores.probabilities, scores.labels
    result = evaluate(probabilities, labels)
    context.log.info(
        f"val accuracy {result.accuracy:.3f}{' (averaged over 8 views)' if config.tta else ''} against the "
        f"majority-class rate {result.majority_rate:.3f}"
    )
    rates = class_rates(scores.plain_classes)
    record = result.record(md5_of(onnx_model.onnx_path), processed_tfrecords.manifest.raw_data_version, rates)
    metadata = evaluation_metadata(result, probabilities, labels, record, config.tta)
    return dg.Output(record, metadata=metadata)
