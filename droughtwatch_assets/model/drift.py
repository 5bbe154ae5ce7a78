"""Drift of a model's inputs and outputs away from the data it was trained on.

Inputs: when a model is trained, a reference of its train split is kept with it: per channel, the edges of bins
at fixed quantiles (deciles) of a seeded pixel sample and the sample's share in each bin, plus the share of blank
images processing vetoed and the class priors. New data is sampled the same way (same seed, same number of records
and pixels) and binned on the reference's edges; the population stability index (PSI) per channel says how far
the shares moved:

    PSI = sum over bins of (share now - reference share) * ln(share now / reference share)

0 is the same distribution; by the usual rule of thumb, under 0.1 is no real change, 0.1 to 0.2 a moderate shift
worth a look, and 0.2 or more a shift the model has not seen. The blank-image share is judged the same way, as a
two-bin distribution (vetoed, kept).

Outputs: the predicted class counts against the model's own predicted class rates on its val split, by Pearson's
chi-square test. Not against the training label priors: a model does not predict the classes at the rates its
labels hold them (the class weights 1, 4, 4, 6 pull one way, what it learnt another), so the priors flag even the
model's own val data. A model published before its predicted class rates were recorded is still compared with the
priors, and the line says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from droughtwatch_assets.core.features import PIXELS
from droughtwatch_assets.core.model_config import ModelConfig
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.model.artifacts import DRIFT_REFERENCE, OnnxArtifact
from droughtwatch_assets.model.evaluate import EvaluationRecord
from droughtwatch_assets.records.tfrecord import read_processed

QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SAMPLE_PIXELS = 200_000  # per channel
SAMPLE_RECORDS = 2_000  # the pixels come from this many records at most, drawn across the split's shards
SAMPLE_SEED = 0
PSI_WARN = 0.1
PSI_FAIL = 0.2
P_VALUE_LIMIT = 0.01
EPSILON = 1e-4  # the share given to an empty bin, so that its logarithm stays finite
BLANK = "blank images"  # the report's row for the share of vetoed images

Status = Literal["ok", "warn", "fail"]


class NothingToCompare(ValueError):
    """A split without a record to sample."""


class DriftReference(BaseModel):
    """What a model's training data looked like: written as drift_reference.json beside the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: list[str]  # the channel order
    data_version: str
    split: str
    seed: int
    sample_records: int  # the draw asked for: records at most, and pixels per channel
    sample_pixels: int
    records: int  # the draw made: records the pixels came from, and pixels per channel
    pixels: int
    quantiles: list[float]
    edges: list[list[float]]  # per channel, the inner bin edges; the outer ones are -inf and +inf
    expected: list[list[float]]  # per channel, the sample's share in each bin
    means: list[float]  # per channel, the sample's mean
    vetoed_fraction: float  # blank images vetoed by processing, of the split's records
    class_priors: list[float]  # the split's class shares (of the labels)
    # the share of val records the model (exported, without test-time augmentation) predicts as each class: what
    # prediction drift is measured against; None in a reference published before they were recorded
    predicted_class_rates: list[float] | None = None

    def with_predicted_class_rates(self, rates: Sequence[float]) -> DriftReference:
        if len(rates) != len(self.class_priors):
            raise ValueError(f"{len(rates)} predicted class rates for {len(self.class_priors)} classes")
        return self.model_copy(update={"predicted_class_rates": [float(r) for r in rates]})

    def expected_classes(self) -> ExpectedClasses:
        """What predictions of this model are tested against: its predicted class rates on val, if recorded."""
        return expected_classes(self.predicted_class_rates, self.class_priors, NO_RATES_IN_REFERENCE)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> DriftReference:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"{where} is not a drift reference ({exc}); publish the model again") from exc


def read_reference(path: str | os.PathLike) -> DriftReference | None:
    """The drift reference at path, or None for a model made before drift references were."""
    path = Path(path)
    return DriftReference.from_json(path.read_text(), str(path)) if path.exists() else None


def reference_to_publish(
    onnx_model: OnnxArtifact, predicted_class_rates: Sequence[float] | None
) -> DriftReference | None:
    """The drift reference published with an exported model: its training data's, with the model's predicted class
    rates on val (model_evaluation's) added when given. None for a model trained before drift references."""
    reference = read_reference(onnx_model.drift_reference_path)
    if reference is None or predicted_class_rates is None:
        return reference
    return reference.with_predicted_class_rates(predicted_class_rates)


def reference_attachments(reference: DriftReference | None) -> dict[str, str]:
    """The drift reference as a file published with the model (besides model.onnx and config.yaml): name -> text."""
    return {DRIFT_REFERENCE: reference.to_json()} if reference else {}


class PublishedModels(Protocol):
    """The registry's reading side (the ArtifactStore resource has it)."""

    def published_names(self) -> list[str]: ...

    def published(self, model_name: str) -> tuple[Path, ModelConfig] | None: ...


@dataclass(frozen=True)
class PublishedReference:
    model_name: str
    version: str
    reference: DriftReference | None  # None: published before drift references were

    @property
    def label(self) -> str:
        return f"{self.model_name} version {self.version}"


def published_reference(registry: PublishedModels, feature_set: str) -> PublishedReference | None:
    """The drift reference of the newest publication of a model trained on this feature set (a configuration's, or
    the champion), or None when no published model was trained on it."""
    found = []
    for name in registry.published_names():
        published = registry.published(name)
        if published is not None and published[1].feature_set == feature_set:
            found.append((published[1].published_version or "", name, published[0].parent / DRIFT_REFERENCE))
    if not found:
        return None
    version, name, path = max(found)  # version names sort by publication time
    return PublishedReference(name, version, read_reference(path))


@dataclass(frozen=True)
class PixelSample:
    values: np.ndarray  # float32 [pixels, channels]
    records: int
    vetoed_fraction: float


def vetoed_fraction(dataset: ShardedDataset, split: str) -> float:
    summary = dataset.manifest.splits[split]
    return summary.vetoed / max(1, summary.records + summary.vetoed)


def pixel_sample(
    dataset: ShardedDataset,
    split: str = "train",
    pixels: int = SAMPLE_PIXELS,
    records: int = SAMPLE_RECORDS,
    seed: int = SAMPLE_SEED,
) -> PixelSample:
    """Pixels of up to `records` records drawn without replacement across the split, the same number from each.

    The draw depends only on the seed and the split's record count: the same data gives the same sample.
    """
    counts = [shard.records for shard in dataset.manifest.splits[split].shards]
    total = sum(counts)
    if not total:
        raise NothingToCompare(f"the {split} split has no records to sample")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(records, total), replace=False))
    per_record = math.ceil(pixels / len(chosen))
    positions = None if per_record >= PIXELS else rng.integers(0, PIXELS, size=(len(chosen), per_record))
    channels = len(dataset.features)
    parts, start, offset = [], 0, 0
    for path, count in zip(dataset.shards(split), counts):
        end = int(np.searchsorted(chosen, offset + count))
        if end > start:
            images = read_processed(path, channels, indices=(chosen[start:end] - offset).tolist()).images
            flat = images.reshape(len(images), PIXELS, channels)
            if positions is None:
                parts.append(flat.reshape(-1, channels))
            else:
                parts.append(np.take_along_axis(flat, positions[start:end, :, None], axis=1).reshape(-1, channels))
        start, offset = end, offset + count
    return PixelSample(np.concatenate(parts), len(chosen), vetoed_fraction(dataset, split))


def shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The share of values in each bin; bin i holds edges[i - 1] <= value < edges[i]."""
    bins = np.searchsorted(np.asarray(edges, np.float64), values.astype(np.float64), side="right")
    return np.bincount(bins, minlength=len(edges) + 1) / max(1, len(values))


def reference_from(
    dataset: ShardedDataset,
    split: str = "train",
    pixels: int = SAMPLE_PIXELS,
    records: int = SAMPLE_RECORDS,
    seed: int = SAMPLE_SEED,
) -> DriftReference:
    sample = pixel_sample(dataset, split, pixels, records, seed)
    values = sample.values.astype(np.float64)
    edges = [np.unique(np.quantile(values[:, c], QUANTILES)).tolist() for c in range(values.shape[1])]
    counts = dataset.class_counts(split)
    return DriftReference(
        features=list(dataset.features),
        data_version=dataset.manifest.data_version,
        split=split,
        seed=seed,
        sample_records=records,
        sample_pixels=pixels,
        records=sample.records,
        pixels=len(values),
        quantiles=list(QUANTILES),
        edges=edges,
        expected=[shares(values[:, c], edges[c]).tolist() for c in range(values.shape[1])],
        means=values.mean(axis=0).tolist(),
        vetoed_fraction=sample.vetoed_fraction,
        class_priors=[c / max(1, sum(counts)) for c in counts],
    )


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of `actual` shares against `expected` ones, over the same bins."""
    e = np.clip(np.asarray(expected, np.float64), EPSILON, None)
    a = np.clip(np.asarray(actual, np.float64), EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class Limits:
    warn: float = PSI_WARN
    fail: float = PSI_FAIL

    def status(self, value: float) -> Status:
        return "fail" if value >= self.fail else "warn" if value >= self.warn else "ok"


@dataclass(frozen=True)
class ChannelDrift:
    """One row of the report: a feature (or the blank-image share), its PSI, and the means it moved between."""

    feature: str
    psi: float
    status: Status
    reference_mean: float
    mean_now: float


STATUS_ORDER: tuple[Status, ...] = ("ok", "warn", "fail")


@dataclass(frozen=True)
class DriftReport:
    rows: list[ChannelDrift]  # the features in channel order, then the blank-image share
    limits: Limits
    records: int  # records sampled now

    @property
    def max_psi(self) -> float:
        return max(row.psi for row in self.rows)

    @property
    def status(self) -> Status:
        return max((row.status for row in self.rows), key=STATUS_ORDER.index)

    @property
    def drifted(self) -> list[str]:
        return [row.feature for row in self.rows if row.status != "ok"]


def compare(reference: DriftReference, dataset: ShardedDataset, limits: Limits = Limits()) -> DriftReport:
    """New data against a reference, sampled as the reference was (same split, seed, records and pixels)."""
    if list(dataset.features) != reference.features:
        raise ValueError(
            f"the data holds features {', '.join(dataset.features)}; the reference was made from "
            f"{', '.join(reference.features)}: not comparable"
        )
    sample = pixel_sample(dataset, reference.split, reference.sample_pixels, reference.sample_records, reference.seed)
    rows = []
    for c, feature in enumerate(reference.features):
        value = psi(reference.expected[c], shares(sample.values[:, c], reference.edges[c]))
        mean_now = float(sample.values[:, c].astype(np.float64).mean())
        rows.append(ChannelDrift(feature, value, limits.status(value), reference.means[c], mean_now))
    before, now = reference.vetoed_fraction, sample.vetoed_fraction
    blank = psi([before, 1 - before], [now, 1 - now])
    rows.append(ChannelDrift(BLANK, blank, limits.status(blank), before, now))
    return DriftReport(rows, limits, sample.records)


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square with a whole number of degrees of freedom: the regularised upper
    incomplete gamma Q(dof / 2, statistic / 2), in its closed forms for whole and half-whole first arguments."""
    if statistic <= 0 or dof <= 0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    half = statistic / 2
    if dof % 2 == 0:
        terms = (-half + i * math.log(half) - math.lgamma(i + 1) for i in range(dof // 2))
        return min(1.0, sum(math.exp(t) for t in terms))
    terms = (-half + (j - 0.5) * math.log(half) - math.lgamma(j + 0.5) for j in range(1, (dof + 1) // 2))
    return min(1.0, math.erfc(math.sqrt(half)) + sum(math.exp(t) for t in terms))


Basis = Literal["val predictions", "training priors"]
BASIS_NAME: dict[Basis, str] = {
    "val predictions": "the model's predicted class rates on val",
    "training priors": "the training priors",
}
NO_RATES_IN_REFERENCE = (
    "the model's drift reference predates its predicted class rates on val; publish the model again to record them"
)


@dataclass(frozen=True)
class ExpectedClasses:
    """What predicted class counts are tested against: class shares (or counts, normalised), what they are, and
    why the training priors stand in for the model's own predicted class rates when they do."""

    shares: Sequence[float]
    basis: Basis = "training priors"
    note: str = ""

    @property
    def name(self) -> str:
        return BASIS_NAME[self.basis]


def expected_classes(rates: Sequence[float] | None, priors: Sequence[float], why_not_rates: str) -> ExpectedClasses:
    """The model's predicted class rates on val when known; else the training priors, `why_not_rates` saying why."""
    if rates is not None:
        return ExpectedClasses(list(rates), "val predictions")
    return ExpectedClasses(list(priors), "training priors", why_not_rates)


def expected_from_evaluation(evaluation: EvaluationRecord, model_md5: str, priors: Sequence[float]) -> ExpectedClasses:
    """The predicted class rates on val of model_evaluation's record, when it judged the model file of `model_md5`
    and recorded them; else the training priors, saying why."""
    if evaluation.model_md5 == model_md5:
        why = "model_evaluation was materialised before it recorded predicted class rates; materialise it again"
        return expected_classes(evaluation.predicted_class_rates, priors, why)
    why = "model_evaluation judged another model file; materialise model_evaluation again"
    return expected_classes(None, priors, why)


@dataclass(frozen=True)
class ClassDrift:
    """Pearson's chi-square of predicted class counts against the expected class shares."""

    statistic: float
    dof: int
    p_value: float
    predictions: int
    expected: ExpectedClasses

    @property
    def drifted(self) -> bool:
        return self.p_value < P_VALUE_LIMIT

    def line(self) -> str:
        on_val = self.expected.basis == "val predictions"
        verdict = (
            f"the predicted classes are not distributed {'as on val' if on_val else 'as in training'} "
            f"(p < {P_VALUE_LIMIT})"
            if self.drifted
            else f"consistent with {'the predictions on val' if on_val else 'training'}"
        )
        return f"chi-square {self.statistic:.2f} ({self.dof} dof), p = {self.p_value:.3g}: {verdict}"

    def summary(self) -> str:
        """The line with what it was measured against, and why the training priors when they stand in."""
        note = f" ({self.expected.note})" if self.expected.note else ""
        return f"class drift against {self.expected.name}{note}: {self.line()}"


def class_drift(counts: Sequence[int], expected: ExpectedClasses) -> ClassDrift:
    """Predicted class counts against the expected shares; a class expected never but predicted is drift."""
    observed = np.asarray(counts, np.float64)
    p = np.asarray(expected.shares, np.float64)
    n = observed.sum()
    if n == 0 or p.sum() == 0:
        return ClassDrift(0.0, 0, 1.0, int(n), expected)
    counts_due = n * p / p.sum()
    possible = counts_due > 0
    if (observed[~possible] > 0).any():  # a class never expected
        statistic = math.inf
    else:
        statistic = float(np.sum((observed[possible] - counts_due[possible]) ** 2 / counts_due[possible]))
    dof = int(possible.sum()) - 1
    return ClassDrift(statistic, dof, chi_square_sf(statistic, dof), int(n), expected)
