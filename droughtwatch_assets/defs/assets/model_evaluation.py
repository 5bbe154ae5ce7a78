import dagster as dg

from droughtwatch_assets.core.features import NUM_CLASSES
from droughtwatch_assets.data.datasets import ShardedDataset, md5_of
from droughtwatch_assets.defs.asset_defaults import PER_FEATURE_SET
from droughtwatch_assets.defs.failures import refusal
from droughtwatch_assets.defs.metadata import table
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.evaluate import evaluate
from droughtwatch_assets.model.predict import predict_processed


@dg.asset(
    **PER_FEATURE_SET,
    group_name="evaluation",
    kinds={"onnx", "numpy"},
    io_manager_key="value_io_manager",
    description="The exported model judged on the validation split: confusion matrix, per-class precision, recall "
    "and F1, precision-recall curves, and accuracy against always predicting the majority class.",
)
def model_evaluation(
    context: dg.AssetExecutionContext, onnx_model: OnnxArtifact, processed_tfrecords: ShardedDataset
) -> dg.Output[dict]:
    from droughtwatch_assets.model.plots import confusion_matrix, markdown_image, pr_curves

    if not processed_tfrecords.records("val"):
        raise refusal(
            f"processed_tfrecords partition '{context.partition_key}' has no val records (all vetoed as "
            f"blank or skipped as bad): there is nothing to evaluate on. Check the raw val/ shards"
        )
    probabilities, labels = predict_processed(
        onnx_model.onnx_path, processed_tfrecords.shards("val"), len(processed_tfrecords.features)
    )
    result = evaluate(probabilities, labels)
    context.log.info(f"val accuracy {result.accuracy:.3f} against the majority-class rate {result.majority_rate:.3f}")
    confusion_rows = [[k, *result.confusion[k].tolist()] for k in range(NUM_CLASSES)]
    class_rows = [
        [
            k,
            *(round(float(m[k]), 4) for m in (result.precision, result.recall, result.f1)),
            int(result.confusion[k].sum()),
        ]
        for k in range(NUM_CLASSES)
    ]
    return dg.Output(
        result.as_dict(),
        metadata={
            "val_accuracy": result.accuracy,
            "majority_class_rate": result.majority_rate,
            "beats_majority_by": result.accuracy - result.majority_rate,
            "val_records": len(labels),
            "macro_f1": float(result.f1.mean()),
            "recall": dg.MetadataValue.json([round(float(r), 4) for r in result.recall]),
            # what the leaderboard compares: which model, on which raw data
            "data_version": processed_tfrecords.manifest.get("raw_data_version", ""),
            "model_md5": md5_of(onnx_model.onnx_path),
            "confusion_matrix": table(
                [("true class", "int"), *((f"predicted {k}", "int") for k in range(NUM_CLASSES))], confusion_rows
            ),
            "confusion_matrix_plot": dg.MetadataValue.md(markdown_image(confusion_matrix(result), "confusion matrix")),
            "per_class": table(
                [("class", "int"), ("precision", "float"), ("recall", "float"), ("F1", "float"), ("support", "int")],
                class_rows,
            ),
            "pr_curves": dg.MetadataValue.md(
                markdown_image(pr_curves(probabilities, labels), "precision-recall curves")
            ),
        },
    )
