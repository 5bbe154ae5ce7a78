"""The drift check on processed_tfrecords against the published model's drift reference, and the predictions'
class drift, through Dagster's materialize(); the check's PSI limits with the check invoked directly."""

import dataclasses
import json
import logging
import pickle
import shutil

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from droughtwatch_assets.core.configurations import CONFIGURATIONS
from droughtwatch_assets.data.datasets import build_raw_dataset, find_split_shards
from droughtwatch_assets.data.processing import ProcessingOptions, process_dataset
from droughtwatch_assets.data.sample import SampleSpec, write_sample
from droughtwatch_assets.defs.checks import DriftConfig, inputs_have_not_drifted
from droughtwatch_assets.model import drift
from droughtwatch_assets.model.drift import BLANK
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets.wiring.resources import LocalStore
from droughtwatch_assets_tests.conftest import (
    DATA_ASSETS,
    TINY_SAMPLE,
    assets_named,
    checks_named,
    model_config,
    run_config,
    table_rows,
)

CHECK = "inputs_have_not_drifted"
UNTRAINED = {"epochs": 0, "tracker": "none", "model_name": "baseline", "register_model": True}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A data folder where an untrained baseline (exported, so TensorFlow loads: the tests using it are
    `integration`) was published from the tiny sample, and the run's result and instance."""
    data = tmp_path_factory.mktemp("published") / "data"
    instance = dg.DagsterInstance.ephemeral()
    chain = assets_named(
        *DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation", "published_model", "predictions"
    )
    result = dg.materialize(
        chain,
        partition_key="baseline",
        resources=local_resources(data),
        run_config=run_config(TINY_SAMPLE, UNTRAINED),
        instance=instance,
    )
    assert result.success
    return data, result, instance


def check_data(tmp_path, published, raw: dict, limits: dict | None = None, downstream=(), change=lambda data: None):
    """raw_tfrecords and processed_tfrecords from `raw` into a copy of the published data folder (`change`d
    first), with the check."""
    data = tmp_path / "data"
    shutil.copytree(published[0], data, symlinks=True)
    change(data)
    config = run_config(raw, {**UNTRAINED, "register_model": False} if downstream else None)
    if limits is not None:
        config.ops[f"processed_tfrecords_{CHECK}"] = {"config": limits}
    result = dg.materialize(
        [*assets_named(*DATA_ASSETS, *downstream), *checks_named(CHECK)],
        partition_key="baseline",
        resources=local_resources(data),
        run_config=config,
    )
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == CHECK]
    return result, evaluation


def test_the_check_is_silent_when_no_model_is_published_yet_and_says_so(tmp_path):
    result = dg.materialize(
        [*assets_named(*DATA_ASSETS), *checks_named(CHECK)],
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=run_config(TINY_SAMPLE),
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["compared_with"].value == "none"
    assert evaluation.metadata["note"].value == "no published model for this feature set yet: nothing to compare with"


@pytest.fixture(scope="module")
def tiny_processed(tmp_path_factory):
    """The tiny sample processed with the baseline features (5 of its 192 train records vetoed as blank), and a
    drift reference of its train split."""
    root = tmp_path_factory.mktemp("tiny")
    write_sample(root / "raw_shards", SampleSpec(train_records=192, val_records=64, records_per_shard=128))
    raw = build_raw_dataset(find_split_shards(root / "raw_shards"), root / "raw", {"type": "folder"})
    processed = process_dataset(raw, root / "processed", "test", ("B2", "B3", "B4", "B5"), ProcessingOptions(workers=1))
    assert processed.manifest.splits["train"].vetoed == 5
    return processed, drift.reference_from(processed)


def checked(tmp_path, reference_onnx, tiny_processed, config: DriftConfig, vetoed_before: float | None = None):
    """inputs_have_not_drifted on the tiny sample, against a baseline published with its reference (with the
    reference's blank-image share set to `vetoed_before`, if given)."""
    processed, reference = tiny_processed
    if vetoed_before is not None:
        reference = reference.model_copy(update={"vetoed_fraction": vetoed_before})
    store = LocalStore(base_dir=str(tmp_path))
    store.publish("baseline", reference_onnx, model_config(), {"drift_reference.json": reference.to_json()})
    return inputs_have_not_drifted(dg.build_asset_context(partition_key="baseline"), config, store, processed)


def test_the_default_psi_limits_are_0_1_and_0_2(tmp_path, reference_onnx, tiny_processed):
    assert (DriftConfig().psi_warn, DriftConfig().psi_fail) == (0.1, 0.2)
    same = checked(tmp_path / "same", reference_onnx, tiny_processed, DriftConfig())
    assert same.passed and same.metadata["max_psi"].value == 0
    assert (same.metadata["psi_warn"].value, same.metadata["psi_fail"].value) == (0.1, 0.2)
    # blank share now n = 5/192 against b: PSI = (n - b) * (ln(n / b) - ln((1 - n) / (1 - b)));
    # b = 0.11: -0.083958 * (-1.440811 - 0.090153) = 0.128534, between the two limits
    warned = checked(tmp_path / "warned", reference_onnx, tiny_processed, DriftConfig(), vetoed_before=0.11)
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert warned.metadata["max_psi"].value == pytest.approx(0.128534, abs=1e-6)
    assert warned.metadata["drifted"].value == BLANK
    # b = 0.15: -0.123958 * (-1.750937 - 0.136120) = 0.233918, above the fail limit
    failed = checked(tmp_path / "failed", reference_onnx, tiny_processed, DriftConfig(), vetoed_before=0.15)
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["max_psi"].value == pytest.approx(0.233918, abs=1e-6)


@pytest.mark.parametrize(
    "psi_warn, psi_fail, passed, severity",
    [
        (1e-9, 1.0, True, None),
        (0.0, 1.0, False, dg.AssetCheckSeverity.WARN),
        (0.0, 0.0, False, dg.AssetCheckSeverity.ERROR),
    ],
    ids=["below the warn limit", "at the warn limit", "at the fail limit"],
)
def test_the_configured_psi_limits_are_reached_at_equality(
    tmp_path, reference_onnx, tiny_processed, psi_warn, psi_fail, passed, severity
):
    """The same data as the reference: every PSI is exactly 0, here the limit itself."""
    config = DriftConfig(psi_warn=psi_warn, psi_fail=psi_fail)
    result = checked(tmp_path, reference_onnx, tiny_processed, config)
    assert result.metadata["max_psi"].value == 0 and result.passed == passed
    if severity is not None:
        assert result.severity == severity
    assert (result.metadata["psi_warn"].value, result.metadata["psi_fail"].value) == (psi_warn, psi_fail)


@pytest.mark.integration
def test_the_drift_reference_is_published_with_the_model(published):
    folder = published[0] / "registry" / "baseline"
    version = (folder / "CURRENT").read_text().strip()
    reference = json.loads((folder / "versions" / version / "drift_reference.json").read_text())
    assert reference["features"] == ["B2", "B3", "B4", "B5"] and reference["split"] == "train"
    assert (folder / "drift_reference.json").read_text() == (
        folder / "versions" / version / "drift_reference.json"
    ).read_text()
    # the training data's reference, with the model's predicted class rates on val added when it is published
    onnx_version = published[0] / "onnx_model" / "baseline" / "current"
    trained = json.loads((onnx_version / "drift_reference.json").read_text())
    assert trained["predicted_class_rates"] is None
    assert reference == {**trained, "predicted_class_rates": reference["predicted_class_rates"]}
    # the same model scored on the same val records by the predictions step: its share of each class
    table = pq.read_table(published[0] / "predictions" / "baseline" / "current" / "predictions.parquet")
    counts = np.bincount(table.column("P_label").to_numpy(), minlength=4)
    assert reference["predicted_class_rates"] == (counts / table.num_rows).tolist()


@pytest.mark.integration
def test_the_published_models_own_data_shows_no_drift(tmp_path, published):
    _, evaluation = check_data(tmp_path, published, TINY_SAMPLE)
    assert evaluation.passed
    rows = table_rows(evaluation.metadata["drift"])
    assert [row["feature"] for row in rows] == ["B2", "B3", "B4", "B5", BLANK]
    assert all(row["PSI"] == 0 and row["status"] == "ok" for row in rows)
    assert evaluation.metadata["compared_with"].value.startswith("baseline version v-")


@pytest.mark.integration
def test_records_from_another_region_fail_the_check_as_an_error_that_does_not_block(tmp_path, published, real_folder):
    raw = {"source": "folder", "folder": str(real_folder)}
    result, evaluation = check_data(tmp_path, published, raw, downstream=("trained_model",))
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    rows = {row["feature"]: row for row in table_rows(evaluation.metadata["drift"])}
    assert rows["B2"]["status"] == "fail" and rows["B2"]["PSI"] >= 0.2
    assert evaluation.metadata["max_psi"].value >= 0.2 and "B2" in evaluation.metadata["drifted"].value
    assert evaluation.metadata["vetoed_fraction"].value == pytest.approx(2 / 81)
    assert result.success and result.asset_materializations_for_node("trained_model")  # training went on


@pytest.mark.integration
@pytest.mark.parametrize(
    "limits, passed, severity",
    [
        ({"psi_warn": 0.1, "psi_fail": 100.0}, False, dg.AssetCheckSeverity.WARN),
        ({"psi_warn": 50.0, "psi_fail": 100.0}, True, None),
    ],
    ids=["a warning below the fail limit", "a pass below both"],
)
def test_the_psi_limits_are_run_config(tmp_path, published, real_folder, limits, passed, severity):
    _, evaluation = check_data(tmp_path, published, {"source": "folder", "folder": str(real_folder)}, limits)
    assert evaluation.passed == passed and evaluation.metadata["psi_fail"].value == 100.0
    if severity is not None:
        assert evaluation.severity == severity
    statuses = {row["status"] for row in table_rows(evaluation.metadata["drift"])}
    assert statuses == ({"ok", "warn"} if not passed else {"ok"})


@pytest.mark.integration
def test_an_unreadable_drift_reference_is_a_warning_that_names_it(tmp_path, published):
    def corrupt(data):
        folder = data / "registry" / "baseline"
        (folder / "versions" / (folder / "CURRENT").read_text().strip() / "drift_reference.json").write_text("{")

    result, evaluation = check_data(tmp_path, published, TINY_SAMPLE, change=corrupt)
    assert result.success and not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    problem = evaluation.metadata["problem"].value
    assert problem.startswith("the published models could not be read: ") and "drift_reference.json is not a" in problem


@pytest.mark.integration
def test_the_models_own_val_split_shows_no_class_drift_though_it_is_far_from_the_training_priors(published):
    """The untrained model predicts one class for every record: far from the sample's class priors, but just what
    it predicted on val, which the predictions score by default."""
    _, result, instance = published
    metadata = result.asset_materializations_for_node("predictions")[0].metadata
    assert metadata["class_drift_against"].value == "the model's predicted class rates on val"
    assert "class_drift_note" not in metadata
    assert metadata["class_drift_chi_square"].value == 0 and metadata["class_drift_p_value"].value == 1
    assert metadata["class_drift"].value.endswith("consistent with the predictions on val")
    rows = table_rows(metadata["prediction_distribution"])
    assert [row["expected share"] for row in rows] == [row["predicted share"] for row in rows]
    assert sorted(row["predicted share"] for row in rows) == [0, 0, 0, 1]  # one class for every record
    assert all(row["training share"] > 0 for row in rows)  # every class among the labels
    assert not [e for e in instance.all_logs(result.run_id) if e.level >= logging.WARNING]


@pytest.mark.integration
def test_predictions_fall_back_to_the_training_priors_when_the_evaluation_judged_another_model(tmp_path, published):
    data = tmp_path / "data"
    shutil.copytree(published[0], data, symlinks=True)
    stored = data / "values" / "model_evaluation" / "baseline"
    record = pickle.loads(stored.read_bytes())
    stored.write_bytes(pickle.dumps(dataclasses.replace(record, model_md5="0" * 32)))  # another model's figures
    instance = dg.DagsterInstance.ephemeral()
    chain = assets_named(*DATA_ASSETS, "trained_model", "onnx_model", "model_evaluation", "predictions")
    result = dg.materialize(
        chain,
        selection=["predictions"],  # the rest as stored
        partition_key="baseline",
        resources=local_resources(data),
        instance=instance,
    )
    assert result.success
    metadata = result.asset_materializations_for_node("predictions")[0].metadata
    why = "model_evaluation judged another model file; materialise model_evaluation again"
    assert metadata["class_drift_against"].value == "the training priors"
    assert metadata["class_drift_note"].value == why
    assert metadata["class_drift_p_value"].value < 0.01 and metadata["class_drift_chi_square"].value > 100
    assert metadata["class_drift"].value.endswith("not distributed as in training (p < 0.01)")
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any(message.startswith(f"class drift against the training priors ({why}): ") for message in warnings)


def test_the_jobs_the_sensor_and_the_schedule_launch_run_the_drift_check():
    from droughtwatch_assets.definitions import defs

    for name in [*(f"{c}_job" for c in CONFIGURATIONS), "experiments_job"]:
        assert f"processed_tfrecords_{CHECK}" in defs.resolve_job_def(name).graph.node_dict, name
    [check] = checks_named(CHECK)
    assert not check.check_specs_by_output_name[next(iter(check.check_specs_by_output_name))].blocking
