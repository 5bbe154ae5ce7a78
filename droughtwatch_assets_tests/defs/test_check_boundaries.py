"""The documented limits of the asset checks, each at equality and on both sides of it."""

import dagster as dg
import numpy as np
import pytest

from droughtwatch_assets.dagster_support.provenance import PublishedRun
from droughtwatch_assets.defs.checks import (
    FreshnessConfig,
    beats_the_majority_class,
    onnx_matches_keras,
)
from droughtwatch_assets.model.artifacts import OnnxArtifact
from droughtwatch_assets.model.evaluate import EvaluationRecord


def parity_check(tmp_path, max_abs_diff: float) -> dg.AssetCheckResult:
    artifact = OnnxArtifact(tmp_path)
    artifact.write_parity(max_abs_diff, 64)
    return onnx_matches_keras(artifact)


@pytest.mark.parametrize(
    "max_abs_diff, passed",
    [(0.0, True), (9e-6, True), (1e-5, True), (np.nextafter(1e-5, 1), False), (1.5e-5, False), (1e-4, False)],
)
def test_the_onnx_export_passes_up_to_a_max_abs_diff_of_1e_5_inclusive(tmp_path, max_abs_diff, passed):
    result = parity_check(tmp_path, float(max_abs_diff))
    assert result.passed is passed
    assert result.metadata["tolerance"].value == 1e-5 and result.metadata["batch"].value == 64


def record(accuracy: float, majority_rate: float) -> EvaluationRecord:
    return EvaluationRecord("md5", "v1", 12, accuracy, majority_rate, [0.0] * 4, [0.0] * 4, [0.0] * 4, [[0] * 4] * 4)


@pytest.mark.parametrize(
    "accuracy, passed", [(7 / 12, True), (6 / 12, False), (5 / 12, False)], ids=["above", "equal", "below"]
)
def test_a_model_must_beat_the_majority_class_not_just_match_it(accuracy, passed):
    result = beats_the_majority_class(record(accuracy, 6 / 12))
    assert result.passed is passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["accuracy"].value == accuracy and result.metadata["majority_rate"].value == 6 / 12


def publication(raw_data_version: str = "r1") -> PublishedRun:
    return PublishedRun("run", 0.0, raw_data_version, None, {}, {})


def test_a_published_model_stays_fresh_up_to_7_days_inclusive():
    assert FreshnessConfig().max_age_days == 7
    assert publication().staleness("r1", 6.5, 7) == []
    assert publication().staleness("r1", 7.0, 7) == []
    [problem] = publication().staleness("r1", float(np.nextafter(7.0, 8)), 7)
    assert problem == "published 7.0 days ago, more than 7"
    assert publication().staleness("r1", 8.0, 7) == ["published 8.0 days ago, more than 7"]


def test_a_published_model_trained_on_older_raw_data_is_stale_whatever_its_age():
    assert publication("r1").staleness("r2", 0.0, 7) == ["trained on raw data r1, newer raw data r2 exists"]
    assert publication("r1").staleness(None, 0.0, 7) == []
