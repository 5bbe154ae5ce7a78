"""`new_raw_shards` on a real Dagster instance, over the folder source and over an S3 source on moto's server."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType, TickStatus

from droughtwatch_assets.defs.jobs import configuration_jobs
from droughtwatch_assets.defs.sensors import (
    CHANGED_COUNT_TAG,
    CHANGED_TAG,
    REMOVED_TAG,
    TRIGGER_TAG,
    new_raw_shards,
)
from droughtwatch_assets.sources.watch import TAG_LIMIT, names_tag
from droughtwatch_assets.wiring.deployment import AWS_VARIABLES, local_resources
from droughtwatch_assets_tests.conftest import dagster_cli, dagster_daemon, dagster_home


class Ticker:
    """Ticks the sensor as the daemon does: the cursor of one tick goes to the next, on one instance."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions):
        self.instance, self.defs, self.cursor = instance, defs, None

    def tick(self) -> dg.SensorResult:
        # As the code server does: the repository, and the top-level resources the sensor needs.
        resources = {key: self.defs.resources[key] for key in new_raw_shards.required_resource_keys}
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs, resources=resources
        ) as context:
            data = new_raw_shards.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def definitions(data_dir: Path, **raw) -> dg.Definitions:
    from droughtwatch_assets.definitions import assets

    aws_variables = tuple(name for name in AWS_VARIABLES if os.environ.get(name))
    return dg.Definitions(
        assets=assets,
        jobs=list(configuration_jobs.values()),
        sensors=[new_raw_shards],
        resources=local_resources(data_dir, aws_variables=aws_variables, **raw),
    )


def materialised(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """An instance on which raw_tfrecords has been materialised, so the first tick only starts watching."""
    instance.report_runless_asset_event(dg.AssetMaterialization("raw_tfrecords"))
    return instance


# -- the two sources, behind one interface: put (whole or partial) and remove a shard ----------------------


class FolderSource:
    def __init__(self, root: Path):
        self.root = root
        for split in ("train", "val"):
            (root / split).mkdir(parents=True)

    def settings(self) -> dict:
        return {"raw_source": "folder", "raw_folder": str(self.root)}

    def put(self, name: str, data: bytes) -> None:
        (self.root / name).write_bytes(data)

    def append(self, name: str, data: bytes) -> None:
        with open(self.root / name, "ab") as f:
            f.write(data)

    def remove(self, name: str) -> None:
        (self.root / name).unlink()


class S3Source:
    """Shards under s3://<bucket>/incoming; an object cannot grow, so "append" uploads it again, longer."""

    def __init__(self, endpoint: str):
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket = f"raw-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.contents: dict[str, bytes] = {}

    def settings(self) -> dict:
        return {"raw_source": "s3", "raw_uri": f"s3://{self.bucket}/incoming"}

    def put(self, name: str, data: bytes) -> None:
        self.contents[name] = data
        self.client.put_object(Bucket=self.bucket, Key=f"incoming/{name}", Body=data)

    def append(self, name: str, data: bytes) -> None:
        self.put(name, self.contents[name] + data)

    def remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"incoming/{name}")


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def source(request, tmp_path):
    if request.param == "folder":
        return FolderSource(tmp_path / "raw")
    request.getfixturevalue("s3_env")
    return S3Source(request.getfixturevalue("s3_endpoint"))


def with_two_shards(source) -> None:
    source.put("train/part-r-00000", b"train shard 0")
    source.put("val/part-r-00000", b"val shard 0")


def test_a_new_shard_gives_one_run_request_naming_it_and_no_change_gives_none(source, tmp_path):
    with_two_shards(source)
    ticker = Ticker(materialised(dg.DagsterInstance.ephemeral()), definitions(tmp_path / "data", **source.settings()))

    first = ticker.tick()
    assert first.run_requests == [] and first.skip_message.startswith("first tick: watching 2 shards")
    assert ticker.tick().skip_message == "no change: 2 shards watched"

    source.put("train/part-r-00120", b"a new shard")
    arriving = ticker.tick()
    assert arriving.run_requests == []
    assert "1 shard still being written or just arrived: train/part-r-00120" in arriving.skip_message

    picked = ticker.tick()
    assert len(picked.run_requests) == 1 and picked.skip_message is None
    request = picked.run_requests[0]
    assert request.job_name == "baseline_job" and request.partition_key == "baseline"
    assert request.tags[CHANGED_TAG] == "train/part-r-00120" and request.tags[CHANGED_COUNT_TAG] == "1"
    assert request.tags[TRIGGER_TAG] == "new_raw_shards" and REMOVED_TAG not in request.tags

    again = ticker.tick()
    assert again.run_requests == [] and again.skip_message == "no change: 3 shards watched"


def test_a_growing_shard_is_picked_up_only_once_its_size_holds_between_two_ticks(source, tmp_path):
    with_two_shards(source)
    ticker = Ticker(materialised(dg.DagsterInstance.ephemeral()), definitions(tmp_path / "data", **source.settings()))
    ticker.tick()

    source.put("val/part-r-00007", b"first half ")
    assert ticker.tick().run_requests == []
    source.append("val/part-r-00007", b"and the second half")
    growing = ticker.tick()
    assert growing.run_requests == [], "its size changed since the last tick: still being written"
    assert "val/part-r-00007" in growing.skip_message

    stable = ticker.tick()
    assert [r.tags[CHANGED_TAG] for r in stable.run_requests] == ["val/part-r-00007"]
    assert ticker.tick().run_requests == []


def test_changed_and_removed_shards_request_a_run_that_names_them(source, tmp_path):
    with_two_shards(source)
    source.put("train/part-r-00001", b"train shard 1")
    ticker = Ticker(materialised(dg.DagsterInstance.ephemeral()), definitions(tmp_path / "data", **source.settings()))
    ticker.tick()

    source.put("train/part-r-00000", b"train shard 0, written again")
    source.remove("train/part-r-00001")
    first = ticker.tick()
    assert len(first.run_requests) == 1, "a removal needs no settling"
    assert first.run_requests[0].tags[REMOVED_TAG] == "train/part-r-00001"
    assert CHANGED_TAG not in first.run_requests[0].tags, "the rewritten shard is still settling"
    second = ticker.tick()
    assert [r.tags[CHANGED_TAG] for r in second.run_requests] == ["train/part-r-00000"]
    assert ticker.tick().skip_message == "no change: 2 shards watched"


def test_first_tick_on_an_instance_that_never_materialised_raw_counts_every_shard_as_new(tmp_path):
    folder = FolderSource(tmp_path / "raw")
    with_two_shards(folder)
    ticker = Ticker(dg.DagsterInstance.ephemeral(), definitions(tmp_path / "data", **folder.settings()))

    first = ticker.tick()
    assert first.run_requests == [] and "never materialised" in first.skip_message
    second = ticker.tick()
    assert [r.tags[CHANGED_TAG] for r in second.run_requests] == ["train/part-r-00000,val/part-r-00000"]


def test_a_repeated_tick_asks_for_the_same_run_key_so_the_daemon_launches_it_once(tmp_path):
    folder = FolderSource(tmp_path / "raw")
    with_two_shards(folder)
    ticker = Ticker(materialised(dg.DagsterInstance.ephemeral()), definitions(tmp_path / "data", **folder.settings()))
    ticker.tick()
    folder.put("train/part-r-00003", b"new")
    ticker.tick()
    before = ticker.cursor
    once = ticker.tick()
    ticker.cursor = before  # the cursor of that tick was lost: the daemon evaluates it again
    twice = ticker.tick()
    assert [r.run_key for r in once.run_requests] == [r.run_key for r in twice.run_requests]
    assert once.run_requests[0].run_key.startswith("new_raw_shards:baseline:")


def test_the_sample_source_has_nothing_to_watch(tmp_path):
    ticker = Ticker(dg.DagsterInstance.ephemeral(), definitions(tmp_path / "data"))
    result = ticker.tick()
    assert result.run_requests == []
    assert result.skip_message.startswith("nothing to watch: the raw source is 'sample'")


def test_the_sensor_is_registered_stopped_with_the_registered_configurations():
    from droughtwatch_assets.definitions import defs

    sensor = defs.resolve_sensor_def("new_raw_shards")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED and sensor.minimum_interval_seconds == 60
    assert [target.job_name for target in sensor.targets] == ["baseline_job"]


def test_the_changed_shards_tag_is_cut_to_its_limit_and_says_how_many_more():
    names = [f"train/part-r-{i:05d}" for i in range(200)]
    value = names_tag(names)
    assert len(value) <= TAG_LIMIT and value.startswith("train/part-r-00000,train/part-r-00001,")
    shown = value.split(",…")[0].split(",")
    assert value.endswith(f",… (+{200 - len(shown)} more)")
    assert names_tag(names[:3]) == ",".join(names[:3])
    for count in range(1, 120):  # around the limit: each value fits, and says how many it leaves out
        value = names_tag(names[:count])
        assert len(value) <= TAG_LIMIT
        listed = value.split(",…")[0].split(",")
        assert listed == names[: len(listed)]
        assert value == ",".join(names[:count]) or value.endswith(f",… (+{count - len(listed)} more)")


def test_the_sensor_cursor_is_json_of_stable_and_pending_stamps(tmp_path):
    folder = FolderSource(tmp_path / "raw")
    with_two_shards(folder)
    ticker = Ticker(materialised(dg.DagsterInstance.ephemeral()), definitions(tmp_path / "data", **folder.settings()))
    ticker.tick()
    folder.put("val/part-r-00001", b"12345")
    ticker.tick()
    cursor = json.loads(ticker.cursor)
    assert sorted(cursor["shards"]) == ["train/part-r-00000", "val/part-r-00000"]
    assert cursor["pending"]["val/part-r-00001"]["size"] == 5 and "mtime_ns" in cursor["pending"]["val/part-r-00001"]


def wait_for(condition, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout} s")


@pytest.mark.daemon
def test_turned_on_as_users_do_a_shard_dropped_into_the_folder_starts_a_baseline_run_naming_it(
    tmp_path, real_folder, real_shard
):
    home = dagster_home(tmp_path / "home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
        "DROUGHTWATCH_RAW_SOURCE": "folder",
        "DROUGHTWATCH_RAW_FOLDER": str(real_folder),
        "DROUGHTWATCH_SENSOR_INTERVAL_SECONDS": "2",
    }
    instance = materialised(dg.DagsterInstance.from_config(str(home)))  # the first tick only starts watching
    dagster_cli("sensor", "start", "new_raw_shards", "-w", "workspace.yaml", env=env)
    [state] = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    assert state.instigator_name == "new_raw_shards" and state.status == InstigatorStatus.RUNNING

    def ticks():
        return instance.get_ticks(state.instigator_origin_id, state.selector_id)

    def ended_ticks():  # a tick is stored as STARTED before it lists the folder: drop the shard only after one ended
        return [t for t in ticks() if t.status != TickStatus.STARTED]

    with dagster_daemon(env):
        wait_for(ended_ticks, "the daemon's first sensor tick to end", timeout=300)
        assert instance.get_runs() == []
        shutil.copyfile(real_shard, real_folder / "train" / "part-r-00077")
        [run] = wait_for(instance.get_runs, "a run requested by the sensor", timeout=300)
        ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        wait_for(lambda: instance.get_run_by_id(run.run_id).status in ended, "the sensor's run to end")

    run = instance.get_run_by_id(run.run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, "\n".join(
        str(e.message) for e in instance.all_logs(run.run_id) if e.message
    )[-3000:]
    assert run.job_name == "baseline_job" and run.tags["dagster/partition"] == "baseline"
    assert run.tags[CHANGED_TAG] == "train/part-r-00077" and run.tags[TRIGGER_TAG] == "new_raw_shards"
    assert run.tags["dagster/sensor_name"] == "new_raw_shards"
    first_tick = ticks()[-1]  # newest first
    assert first_tick.skip_reason.startswith("first tick: watching 2 shards"), first_tick.skip_reason
