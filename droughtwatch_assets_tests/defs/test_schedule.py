"""The daily schedule on a real instance: it skips when nothing changed since the last published baseline, and
requests a run (saying why) after new data, a code_version bump, other training settings, or when forced."""

import shutil
from types import SimpleNamespace

import dagster as dg
import pytest

from droughtwatch_assets.definitions import asset_checks, assets
from droughtwatch_assets.defs import checks
from droughtwatch_assets.defs.assets.trained_model import trained_model
from droughtwatch_assets.defs.jobs import baseline_job
from droughtwatch_assets.defs.schedules import (
    REASON_TAG,
    baseline_daily,
    published_model_freshness,
    published_model_freshness_job,
)
from droughtwatch_assets.wiring.deployment import Deployment, resources_for
from droughtwatch_assets_tests.conftest import table_rows


def definitions(data_dir, raw_folder, chain=assets, **env) -> dg.Definitions:
    """The definitions with the resources a deployment reads from these variables, as `definitions.py` builds them."""
    deployment = Deployment.from_env(
        {
            "DROUGHTWATCH_DATA_DIR": str(data_dir),
            "DROUGHTWATCH_TRACKER": "none",
            "DROUGHTWATCH_RAW_SOURCE": "folder",
            "DROUGHTWATCH_RAW_FOLDER": str(raw_folder),
            **env,
        }
    )
    return dg.Definitions(
        assets=chain,
        asset_checks=asset_checks,
        jobs=[baseline_job, published_model_freshness_job],
        schedules=[baseline_daily, published_model_freshness],
        resources=resources_for(deployment),
    )


def tick(defs: dg.Definitions, instance: dg.DagsterInstance):
    schedule = defs.resolve_schedule_def("baseline_daily")
    with dg.build_schedule_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
    ) as context:
        return schedule.evaluate_tick(context)


def run_requested(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None) -> str:
    """Tick, check that it asks for a run, and run it as the daemon would (the job with the request's tags)."""
    [request] = tick(defs, instance).run_requests
    result = defs.resolve_job_def("baseline_job").execute_in_process(
        partition_key=request.partition_key, tags=request.tags, instance=instance, run_config=run_config
    )
    assert result.success
    return request.tags[REASON_TAG]


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.mark.integration
def test_after_a_published_run_a_tick_skips_naming_it_and_force_retrains(tmp_path, real_folder, instance):
    defs = definitions(tmp_path / "data", real_folder)
    assert run_requested(defs, instance) == "no published model yet"
    [published_run] = instance.get_runs()

    skipped = tick(defs, instance)
    assert skipped.run_requests == []
    assert f"nothing changed since run {published_run.run_id} published the baseline" in skipped.skip_message
    assert "same raw data, same code versions, same training settings" in skipped.skip_message

    for value in ("true", "1", "yes", "TRUE"):
        [forced] = tick(
            definitions(tmp_path / "data", real_folder, DROUGHTWATCH_FORCE_RETRAIN=value), instance
        ).run_requests
        assert forced.tags[REASON_TAG] == "forced (DROUGHTWATCH_FORCE_RETRAIN)"
    for value in ("", "false", "0"):
        not_forced = tick(definitions(tmp_path / "data", real_folder, DROUGHTWATCH_FORCE_RETRAIN=value), instance)
        assert not_forced.run_requests == [], value


@pytest.mark.integration
def test_a_new_shard_a_code_version_bump_or_other_settings_request_a_run_saying_why(
    tmp_path, real_folder, real_shard, instance
):
    defs = definitions(tmp_path / "data", real_folder)
    run_requested(defs, instance)
    assert tick(defs, instance).run_requests == []

    shutil.copyfile(real_shard, real_folder / "train" / "part-r-00120")
    reason = run_requested(defs, instance)
    assert reason == "new data: the raw source changed since the last published model"
    assert tick(defs, instance).run_requests == []  # that run published from the new data

    bumped = [
        trained_model.map_asset_specs(lambda spec: spec.replace_attributes(code_version="2"))
        if a.key == trained_model.key
        else a
        for a in assets
    ]
    [request] = tick(definitions(tmp_path / "data", real_folder, chain=bumped), instance).run_requests
    assert request.tags[REASON_TAG] == "code change: trained_model 1 -> 2"

    # a baseline published with other settings (a launch with edited config) is not what the schedule trains
    run_config = {"ops": {"trained_model": {"config": {"model_name": "baseline", "register_model": True, "epochs": 1}}}}
    result = defs.resolve_job_def("baseline_job").execute_in_process(
        partition_key="baseline", instance=instance, run_config=run_config
    )
    assert result.success
    [request] = tick(defs, instance).run_requests
    assert request.tags[REASON_TAG].startswith("config change:")


def freshness(defs: dg.Definitions, instance: dg.DagsterInstance, max_age_days: float | None = None):
    """The freshness job as its schedule runs it (no run config), or with another max_age_days."""
    config = {"max_age_days": max_age_days} if max_age_days is not None else {}
    result = defs.resolve_job_def("published_model_freshness_job").execute_in_process(
        instance=instance, run_config={"ops": {"published_model_published_model_is_fresh": {"config": config}}}
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.integration
def test_the_published_model_turns_stale_when_newer_raw_data_exists_or_it_is_too_old(
    tmp_path, real_folder, real_shard, instance, monkeypatch
):
    defs = definitions(tmp_path / "data", real_folder)
    result = defs.resolve_job_def("baseline_job").execute_in_process(partition_key="baseline", instance=instance)
    [in_the_run] = [e for e in result.get_asset_check_evaluations() if e.check_name == "published_model_is_fresh"]
    assert in_the_run.passed

    fresh = freshness(defs, instance)
    assert fresh.passed
    [row] = table_rows(fresh.metadata["published_models"])
    assert row["feature set"] == "baseline" and row["status"] == "fresh" and row["run"] == result.run_id

    old = freshness(defs, instance, max_age_days=0)
    assert not old.passed and old.severity == dg.AssetCheckSeverity.WARN
    assert "days ago, more than 0" in old.metadata["stale"].value

    # the default limit is 7 days: the same publication seen 6.9 and 7.1 days later
    published_at = instance.get_run_record_by_id(result.run_id).end_time
    for days, fresh_then in ((6.9, True), (7.1, False)):
        with monkeypatch.context() as patched:
            patched.setattr(checks, "time", SimpleNamespace(time=lambda days=days: published_at + days * 86400))
            later = freshness(defs, instance)
        assert later.passed is fresh_then, (days, later.metadata)
    assert f"published {7.1:.1f} days ago, more than 7" in later.metadata["stale"].value

    # new raw data, materialised by a run that does not publish (processing another feature set, say)
    shutil.copyfile(real_shard, real_folder / "train" / "part-r-00120")
    assert dg.materialize(
        [a for a in assets if a.key.to_user_string() == "raw_tfrecords"], instance=instance, resources=defs.resources
    ).success
    stale = freshness(defs, instance)
    assert not stale.passed
    assert (
        "newer raw data" in stale.metadata["stale"].value
        and "baseline: trained on raw data" in stale.metadata["stale"].value
    )


def test_another_augment_is_a_config_change_and_a_config_from_before_augment_is_none():
    from droughtwatch_assets.dagster_support.provenance import PublishedRun
    from droughtwatch_assets.defs.jobs import preset
    from droughtwatch_assets.defs.schedules import BASELINE, reasons_to_retrain

    scheduled = preset(BASELINE).to_config_dict()["ops"]["trained_model"]["config"]
    earlier = {key: value for key, value in scheduled.items() if key != "augment"}
    earlier["sweep"] = {key: value for key, value in scheduled["sweep"].items() if key != "augment"}
    last = PublishedRun("run", 0.0, "raw", "fingerprint", {}, earlier)
    assert reasons_to_retrain(last, "fingerprint", {}, scheduled) == []
    for changed in ({"augment": "dihedral"}, {"sweep": {**scheduled["sweep"], "augment": ["none", "dihedral"]}}):
        assert reasons_to_retrain(last, "fingerprint", {}, {**scheduled, **changed}) == [
            "config change: the baseline's training settings differ from the last published model's"
        ]
