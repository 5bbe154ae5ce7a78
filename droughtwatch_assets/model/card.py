"""MODEL_CARD.md: what a published model is, in the Hugging Face model-card format (YAML front matter with a
`model-index`, then Markdown), written from the model's config, its evaluation on val and its drift reference."""

from __future__ import annotations

import yaml

from droughtwatch_assets.core.features import NUM_CLASSES
from droughtwatch_assets.core.model_config import ModelConfig
from droughtwatch_assets.model.drift import DriftReference
from droughtwatch_assets.model.evaluate import EvaluationRecord

CLASS_MEANING = {k: f"{k}{'+' if k == NUM_CLASSES - 1 else ''} animals" for k in range(NUM_CLASSES)}
DATA_KIND = {
    "sample": "the generated sample (synthetic data embedded in the package): it has learned synthetic data only and "
    "says nothing about real plots"
}


def model_card(
    config: ModelConfig,
    evaluation: EvaluationRecord,
    parity: float,
    published_as: str,
    reference: DriftReference | None = None,
) -> str:
    """The card of the model file that `evaluation` judged, published as `published_as` (a model name, or
    champion), with the drift reference published beside it (None for a model trained before references)."""
    front = yaml.safe_dump(card_metadata(config, evaluation, published_as), sort_keys=False)
    return f"---\n{front}---\n\n{card_body(config, evaluation, parity, published_as, reference)}"


def card_metadata(config: ModelConfig, evaluation: EvaluationRecord, published_as: str) -> dict:
    """The front matter: what a model hub or a script reads, the model-index with the val figures."""
    return {
        "model_name": published_as,
        "library_name": "onnx",
        "pipeline_tag": "image-classification",
        "tags": ["droughtwatch", "landsat-8", "forage-quality", config.feature_set],
        "model_md5": evaluation.model_md5,
        "data_version": evaluation.data_version,  # the raw data's, as the leaderboard compares it
        "model-index": [
            {
                "name": published_as,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Forage quality from Landsat-8"},
                        "dataset": {
                            "type": "droughtwatch",
                            "name": f"DroughtWatch, data version {evaluation.data_version}",
                            "split": "val",
                        },
                        "metrics": [
                            {"type": "accuracy", "name": "val accuracy", "value": round(evaluation.accuracy, 6)},
                            {"type": "f1", "name": "macro-F1", "value": round(evaluation.macro_f1, 6)},
                        ],
                    }
                ],
            }
        ],
    }


def card_body(
    config: ModelConfig,
    evaluation: EvaluationRecord,
    parity: float,
    published_as: str,
    reference: DriftReference | None = None,
) -> str:
    model_md5 = evaluation.model_md5
    source = config.data_source or "unknown"
    data = DATA_KIND.get(config.data_source, f"real DroughtWatch shards (raw source: {source})")
    sweep = (
        f"chosen by a sweep of {config.sweep.combinations} combinations on a {config.sweep.holdout_fraction:.0%} "
        f"hold-out of train (trial {config.sweep.selected_trial})"
        if config.sweep
        else "no sweep"
    )
    per_class = "\n".join(
        f"| {CLASS_MEANING[k]} | {evaluation.precision[k]:.4f} | {evaluation.recall[k]:.4f} | {evaluation.f1[k]:.4f} "
        f"| {sum(evaluation.confusion_matrix[k])} |"
        for k in range(NUM_CLASSES)
    )
    confusion = "\n".join(
        f"| {k} | " + " | ".join(str(n) for n in evaluation.confusion_matrix[k]) + " |" for k in range(NUM_CLASSES)
    )
    tracker_run = ", ".join(f"{k}: {v}" for k, v in config.tracker_run.items()) or "not tracked"
    body = f"""# {published_as}

A CNN that grades forage quality (how many animals, 0 to 3+, the spot at the centre of the image supports, as
pastoralists reported it) from a 65 x 65 pixel Landsat-8 image of northern Kenya, trained by droughtwatch_assets.
Feature set `{config.feature_set}`: channels {", ".join(config.features)}.

## Intended use and limits

- For advisers comparing plots and seasons in the region the DroughtWatch data covers. Not for other regions,
  sensors or seasons without checking the drift of the inputs first, and not as the only basis of a decision.
- Trained on {data}.
- Val accuracy {evaluation.accuracy:.4f}, against {evaluation.majority_rate:.4f} for always predicting the most frequent
  class: the classes are unbalanced, so judge it by the per-class figures below.

## Training

| setting | value |
|---|---|
| raw data version | {evaluation.data_version} |
| processed data version | {config.data_version} |
| feature set | {config.feature_set} ({len(config.features)} channels) |
| learning rate | {config.learning_rate:g} |
| batch size | {config.batch_size} |
| epochs | {config.epochs} |
| augmentation | {config.augment} |
| seed | {config.seed} |
| class weights | {", ".join(f"{k}: {w:g}" for k, w in config.class_weights.items())} |
| hyperparameters | {sweep} |

## Evaluation on val ({evaluation.records} records)

Accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}, majority-class rate
{evaluation.majority_rate:.4f}.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}

Confusion matrix (rows: true class, columns: predicted class):

| true | 0 | 1 | 2 | 3 |
|---|---|---|---|---|
{confusion}

{class_rates_section(reference)}## Export

ONNX (`model.onnx`, md5 {model_md5}); largest difference from Keras on a val batch: {parity:.3g}.

## Lineage

- Dagster run that trained it: {config.dagster_run_id}
- Tracker run ({config.tracker}): {tracker_run}
"""
    return body


def class_rates_section(reference: DriftReference | None) -> str:
    """The predicted class rates on val that prediction drift is measured against, beside the training label
    priors; nothing for a model without a drift reference."""
    if reference is None:
        return ""
    rates = reference.predicted_class_rates or [None] * NUM_CLASSES
    rows = "\n".join(
        f"| {CLASS_MEANING[k]} | {reference.class_priors[k]:.4f} | {'unknown' if rate is None else f'{rate:.4f}'} |"
        for k, rate in enumerate(rates)
    )
    return f"""## Class rates

Prediction drift (`drift_reference.json`) tests the classes the model predicts on new data against the share of val
records it predicted as each class, not against the training labels, whose shares a model does not predict (the
class weights alone move it away from them).

| class | training label share | predicted share on val |
|---|---|---|
{rows}

"""


def front_matter(card: str) -> dict:
    """The YAML front matter of a model card."""
    if not card.startswith("---\n"):
        raise ValueError("a model card starts with YAML front matter between --- lines")
    return yaml.safe_load(card.split("---\n", 2)[1])
