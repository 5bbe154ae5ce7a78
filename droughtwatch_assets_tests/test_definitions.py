import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from droughtwatch_assets.definitions import defs
from droughtwatch_assets_tests.conftest import REPO_ROOT


def test_definitions_load_with_the_whole_chain():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw_tfrecords",
        "processed_tfrecords",
        "trained_model",
        "onnx_model",
        "published_model",
        "model_evaluation",
        "predictions",
        "leaderboard",
        "champion",
    }
    partitions = graph.get(dg.AssetKey("processed_tfrecords")).partitions_def.get_partition_keys()
    assert {"baseline", "ndvi", "rgb", "all"} <= set(partitions)


def test_the_defs_folder_gives_every_job_schedule_sensor_and_check_once():
    repository = defs.get_repository_def()
    assert set(repository.job_names) == {
        "__ASSET_JOB",
        "baseline_job",
        "useful_job",
        "dummy_job",
        "ndvi_job",
        "experiments_job",
        "published_model_freshness_job",
    }
    assert sorted(s.name for s in repository.schedule_defs) == ["baseline_daily", "published_model_freshness"]
    assert sorted(s.name for s in repository.sensor_defs) == ["dead_cli_runs", "new_raw_shards"]
    checks = sorted(key.name for key in repository.asset_graph.asset_check_keys)
    assert checks == [
        "beats_the_majority_class",
        "champion_is_sound",
        "class_balance_is_stable",
        "inputs_have_not_drifted",
        "onnx_matches_keras",
        "processed_values_are_valid",
        "published_model_is_fresh",
    ]


@pytest.mark.integration
def test_a_file_that_dg_scaffolds_into_defs_is_part_of_the_code_location(tmp_path):
    """`dg scaffold defs` in a copy of the project, then `dg list defs`: the new asset is listed beside the chain."""
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(REPO_ROOT / "droughtwatch_assets", project / "droughtwatch_assets")
    env = {**os.environ, "PYTHONPATH": str(project), "DAGSTER_HOME": str(tmp_path)}
    dg_cli = f"{sys.exec_prefix}/bin/dg"

    def dg_command(*args):
        result = subprocess.run(
            [dg_cli, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    dg_command("scaffold", "defs", "dagster.asset", "scaffolded.py")
    assert (project / "droughtwatch_assets" / "defs" / "scaffolded.py").exists()
    listed = json.loads(dg_command("list", "defs", "--json"))
    assert "scaffolded" in {asset["asset_key"] for asset in listed["assets"]}
    assert "champion" in {asset["asset_key"] for asset in listed["assets"]}


# The original's configurations: job -> (its partition, epochs, registered)
PRESETS = {
    "baseline_job": ("baseline", 2, True),
    "useful_job": ("baseline", 100, False),
    "dummy_job": ("baseline", 0, False),
    "ndvi_job": ("ndvi", 2, False),
}


@pytest.mark.parametrize("job_name", list(PRESETS))
def test_each_configuration_job_presets_the_original_training_settings(job_name):
    feature_set, epochs, registered = PRESETS[job_name]
    job = defs.resolve_job_def(job_name)
    config = job.partitioned_config.get_run_config_for_partition_key(feature_set)
    training = config["ops"]["trained_model"]["config"]
    name = job_name.removesuffix("_job")
    assert (training["model_name"], training["epochs"], training["register_model"]) == (name, epochs, registered)
    assert (training["learning_rate"], training["batch_size"], training["seed"]) == (5e-4, 64, 0)
    assert training["sweep"]["learning_rate"] == training["sweep"]["batch_size"] == training["sweep"]["epochs"] == []
    assert training["augment"] == "none" and training["sweep"]["augment"] == []
    assert job.tags["droughtwatch/configuration"] == name
    assert f"Launch it for the '{feature_set}' partition" in job.description


def test_class_weights_are_the_originals():
    from droughtwatch_assets.core.configurations import CLASS_WEIGHTS

    assert CLASS_WEIGHTS == {0: 1.0, 1: 4.0, 2: 4.0, 3: 6.0}


def test_daily_schedule_is_stopped_and_runs_the_baseline_partition():
    schedule = defs.resolve_schedule_def("baseline_daily")
    assert schedule.cron_schedule == "0 0 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(), resources=defs.resources
        ) as context,
    ):
        request = schedule.evaluate_tick(context).run_requests[0]  # nothing published yet
    assert (
        request.partition_key == "baseline" and request.tags["droughtwatch/retrain_reason"] == "no published model yet"
    )
    freshness = defs.resolve_schedule_def("published_model_freshness")
    assert freshness.default_status == dg.DefaultScheduleStatus.STOPPED and freshness.cron_schedule == "0 * * * *"


@pytest.mark.integration
def test_loading_definitions_does_not_import_tensorflow():
    code = "import sys, droughtwatch_assets.definitions; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.integration
def test_the_workspace_loads_the_code_location(tmp_path):
    from droughtwatch_assets_tests.conftest import REPO_ROOT

    dagster = f"{sys.exec_prefix}/bin/dagster"
    result = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation successful for code location droughtwatch_assets" in result.stdout + result.stderr


@pytest.mark.integration
def test_the_kubernetes_executor_is_chosen_by_env():
    code = (
        "from droughtwatch_assets.definitions import defs; "
        "print(defs.resolve_job_def('baseline_job').executor_def.name)"
    )
    env = {**os.environ, "DROUGHTWATCH_DEPLOYMENT": "k8s"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "k8s"


def test_the_heavy_steps_size_their_kubernetes_pods():
    graph = defs.resolve_asset_graph()
    for key, memory in (("processed_tfrecords", "4Gi"), ("trained_model", "8Gi")):
        tags = graph.get(dg.AssetKey(key)).assets_def.op.tags
        resources = json.loads(tags["dagster-k8s/config"])["container_config"]["resources"]  # tags are strings
        assert resources["requests"]["memory"] == memory and resources["requests"]["cpu"] == "4"


def test_only_the_steps_that_track_require_the_tracker():
    graph = defs.resolve_asset_graph()
    requiring = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if "tracking" in graph.get(key).assets_def.required_resource_keys
    }
    assert requiring == {"trained_model", "onnx_model", "published_model", "champion"}


def test_only_the_steps_that_publish_require_the_store():
    """Steps that write files get their staging folder and their previous output from the IO manager."""
    graph = defs.resolve_asset_graph()
    requiring = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if "store" in graph.get(key).assets_def.required_resource_keys
    }
    assert requiring == {"published_model", "champion"}


def test_the_deployment_switch_picks_the_resource_set():
    from droughtwatch_assets.wiring.deployment import Deployment, resources_for
    from droughtwatch_assets.wiring.resources import LocalStore, S3Store

    assert Deployment.from_env({}).name == "local"
    assert Deployment.from_env({"DROUGHTWATCH_DEPLOYMENT": "s3"}).name == "s3"
    assert Deployment.from_env({"DROUGHTWATCH_DEPLOYMENT": "k8s"}).name == "k8s"
    # the aliases of 0.1.0's first releases are gone: they no longer pick a deployment
    assert Deployment.from_env({"DROUGHTWATCH_STORAGE": "s3", "DROUGHTWATCH_EXECUTOR": "k8s"}).name == "local"
    assert isinstance(resources_for(Deployment.from_env({}))["store"], LocalStore)
    s3 = resources_for(Deployment.from_env({"DROUGHTWATCH_DEPLOYMENT": "k8s", "DROUGHTWATCH_S3_BUCKET": "b"}))
    assert isinstance(s3["store"], S3Store) and s3["store"].bucket == "b"
    with pytest.raises(ValueError, match="DROUGHTWATCH_DEPLOYMENT='cloud' is not one of local, s3, k8s, dask"):
        Deployment.from_env({"DROUGHTWATCH_DEPLOYMENT": "cloud"})


def test_the_s3_raw_source_comes_from_env_with_storage_credentials_as_env_vars():
    from droughtwatch_assets.wiring.deployment import K8S_ENV_VARS, Deployment, resources_for

    env = {
        "DROUGHTWATCH_RAW_SOURCE": "s3",
        "DROUGHTWATCH_RAW_URI": "s3://landsat/droughtwatch",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "not-in-config",
        "DROUGHTWATCH_DEPLOYMENT": "k8s",
    }
    deployment = Deployment.from_env(env)
    raw_source = resources_for(deployment)["raw_source"]
    assert (raw_source.source, raw_source.uri) == ("s3", "s3://landsat/droughtwatch")
    assert raw_source.s3.aws_secret_access_key == dg.EnvVar("AWS_SECRET_ACCESS_KEY"), "secrets stay EnvVar"
    assert resources_for(deployment)["store"].s3.aws_access_key_id == dg.EnvVar("AWS_ACCESS_KEY_ID")
    assert {"DROUGHTWATCH_RAW_SOURCE", "DROUGHTWATCH_RAW_URI"} <= set(K8S_ENV_VARS)
    assert {"DROUGHTWATCH_RAW_SOURCE", "DROUGHTWATCH_RAW_URI"} <= set(deployment.k8s_env_vars)
    with pytest.raises(ValueError, match="DROUGHTWATCH_RAW_SOURCE='ftp' is not one of sample, folder, archive, s3"):
        Deployment.from_env({"DROUGHTWATCH_RAW_SOURCE": "ftp"})


@pytest.mark.integration
def test_dg_lists_and_checks_the_same_definitions_as_dagster(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "VIRTUAL_ENV": sys.exec_prefix}
    dg_cli = f"{sys.exec_prefix}/bin/dg"
    listed = subprocess.run(
        [dg_cli, "list", "defs", "--json"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout)
    graph = defs.resolve_asset_graph()
    assert {a["asset_key"] for a in found["assets"]} == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {j["name"] for j in found["jobs"]} >= {"baseline_job", "experiments_job", "published_model_freshness_job"}
    assert sorted(s["name"] for s in found["sensors"]) == ["dead_cli_runs", "new_raw_shards"]
    assert {s["name"] for s in found["schedules"]} == {"baseline_daily", "published_model_freshness"}
    checked = subprocess.run(
        [dg_cli, "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


def test_every_environment_variable_the_code_reads_is_documented_and_every_documented_one_is_read():
    import re

    code = "\n".join(p.read_text() for p in (REPO_ROOT / "droughtwatch_assets").rglob("*.py"))
    code += (REPO_ROOT / "droughtwatch_assets_tests" / "conftest.py").read_text()  # the tests' own: the shared data
    read = set(re.findall(r"\"(DROUGHTWATCH_[A-Z0-9_]+)\"", code))
    documented = set(re.findall(r"`(DROUGHTWATCH_[A-Z0-9_]+)`", (REPO_ROOT / "docs" / "configuration.md").read_text()))
    retired = {"DROUGHTWATCH_STORAGE", "DROUGHTWATCH_EXECUTOR"}  # documented as retired, read nowhere
    assert read - documented == set(), "read by the code but not documented in docs/configuration.md"
    assert documented - retired - read == set(), "documented but read nowhere"
    assert read & retired == set()


def test_the_environment_is_read_in_one_place():
    import re

    readers = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "droughtwatch_assets").rglob("*.py")
        if re.search(r"os\.environ|os\.getenv|getenv\(", path.read_text())
    )
    assert readers == ["droughtwatch_assets/wiring/settings.py"]


def test_local_runs_use_dagsters_multiprocess_executor_with_steps_forked_from_a_preloading_fork_server():
    import importlib

    executor = defs.resolve_job_def("baseline_job").executor_def
    config = executor.apply_config_mapping({}).value["config"]
    assert executor.name == "multiprocess"
    preload = config["start_method"]["forkserver"]["preload_modules"]
    assert preload == [
        "droughtwatch_assets.definitions",
        "droughtwatch_assets.model.train",
        "droughtwatch_assets.model.export",
    ]
    for module in preload:  # the fork server skips a module that fails to import, silently
        importlib.import_module(module)
