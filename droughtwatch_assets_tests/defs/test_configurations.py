"""A named configuration trains one feature set: launched on another partition, its job refuses before training,
and no model is ever published under a configuration's name with other features."""

import copy
import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from droughtwatch_assets.core.configurations import CONFIGURATIONS
from droughtwatch_assets.definitions import asset_checks, assets, defs
from droughtwatch_assets.defs.jobs import configuration_jobs
from droughtwatch_assets.wiring.deployment import local_resources
from droughtwatch_assets_tests.conftest import (
    REPO_ROOT,
    TINY_SAMPLE,
    TRAINING_CHAIN,
    assets_named,
    materialize_command,
    run_config,
)


def job_on(data_dir: Path, name: str) -> dg.JobDefinition:
    """The configuration's job itself (its selection, tags, hooks and run config), bound to resources on data_dir."""
    bound = dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        jobs=[configuration_jobs[name]],
        resources=local_resources(data_dir),
    )
    return bound.resolve_job_def(f"{name}_job")


@pytest.mark.parametrize("name, partition", [("baseline", "ndvi"), ("ndvi", "baseline"), ("useful", "rgb")])
def test_a_configuration_job_launched_on_another_partition_fails_first_and_publishes_nothing(name, partition, tmp_path):
    result = job_on(tmp_path, name).execute_in_process(partition_key=partition, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("raw_tfrecords")
    expected = CONFIGURATIONS[name].feature_set
    assert f"{name}_job trains the '{expected}' feature set" in str(failure.error)
    assert f"Launch {name}_job for partition '{expected}'" in str(failure.error)
    executed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert executed == {"raw_tfrecords"}
    assert not (tmp_path / "registry").exists() and not (tmp_path / "trained_model").exists()


def test_the_baseline_job_on_its_own_partition_publishes_the_baseline(tmp_path):
    job = job_on(tmp_path, "baseline")
    training = {"model_name": "baseline", "register_model": True, "epochs": 0, "tracker": "none"}  # as launched
    result = job.execute_in_process(partition_key="baseline", run_config=run_config(TINY_SAMPLE, training))
    assert result.success
    published = result.output_for_node("published_model")
    assert published["published"] and published["model_name"] == "baseline"
    assert "features:\n- B2\n- B3\n- B4\n- B5" in (tmp_path / "registry" / "baseline" / "config.yaml").read_text()


def test_the_dummy_jobs_preset_trains_no_epoch(tmp_path):
    """The preset the dummy job gives trained_model, as launched (baseline_job's 2 epochs: test_model_card.py)."""
    config = copy.deepcopy(job_on(tmp_path, "dummy").partitioned_config.get_run_config_for_partition_key("baseline"))
    config["ops"]["trained_model"]["config"]["tracker"] = "none"
    config["ops"]["raw_tfrecords"] = {"config": TINY_SAMPLE}
    config["ops"]["processed_tfrecords"] = {"config": {"workers": 1}}
    result = dg.materialize(
        assets_named("raw_tfrecords", "processed_tfrecords", "trained_model"),
        partition_key="baseline",
        resources=local_resources(tmp_path),
        run_config=config,
    )
    assert result.success
    trained = tmp_path / "trained_model" / "baseline" / "current"
    assert json.loads((trained / "history.json").read_text()) == {}  # no epoch logged
    assert "\nepochs: 0\n" in (trained / "training_config.yaml").read_text()
    assert "model_name: dummy\n" in (trained / "training_config.yaml").read_text()


@pytest.mark.integration
def test_a_model_named_after_a_configuration_is_not_trained_on_other_features(tmp_path):
    """The same mismatch without a job: `dagster asset materialize` with the baseline's registered name."""
    config = {
        "ops": {
            "raw_tfrecords": {"config": TINY_SAMPLE},
            "trained_model": {
                "config": {"model_name": "baseline", "register_model": True, "epochs": 1, "tracker": "none"}
            },
        }
    }
    command = materialize_command(",".join(TRAINING_CHAIN), "ndvi", config)
    env = {"DAGSTER_HOME": str(tmp_path), "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data")}
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "model_name 'baseline' is the registered name of the baseline configuration" in output
    assert not (tmp_path / "data" / "trained_model").exists() and not (tmp_path / "data" / "registry").exists()


def test_every_schedule_launches_its_configuration_on_its_feature_set():
    configuration_schedules = [s for s in defs.schedules if s.job_name.removesuffix("_job") in CONFIGURATIONS]
    assert configuration_schedules
    for schedule in configuration_schedules:
        name = schedule.job_name.removesuffix("_job")
        with (
            dg.instance_for_test() as instance,
            dg.build_schedule_context(
                instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
            ) as context,
        ):
            request = schedule.evaluate_tick(context).run_requests[0]  # nothing published yet: a run
        assert request.partition_key == CONFIGURATIONS[name].feature_set
