"""experiments_job as a deployment runs it: a backfill over partitions launched into a real instance with the
project's dagster.yaml, the daemon dequeuing the runs (concurrently: they are different partitions), the
multiprocess executor, and default settings otherwise."""

import itertools
import os

import dagster as dg
import pytest
import yaml

from droughtwatch_assets_tests.conftest import backfill_experiments, daemon_until_runs_end, dagster_home, table_rows


def step_interval(instance: dg.DagsterInstance, run_id: str, step_key: str) -> tuple[float, float]:
    events = [e for e in instance.all_logs(run_id) if e.is_dagster_event and e.step_key == step_key]
    starts = [e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START]
    ends = [e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS]
    return min(starts), max(ends)


@pytest.mark.daemon
def test_a_backfill_of_experiments_job_runs_partitions_at_once_ranks_them_and_promotes_the_best(tmp_path):
    home = dagster_home(tmp_path / "home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data")}
    backfill_experiments(["baseline", "rgb"], env)
    instance = dg.DagsterInstance.from_config(str(home))
    assert len(instance.get_runs()) == 2

    daemon_until_runs_end(env, instance)

    runs = instance.get_runs()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2, "\n".join(
        str(e.message) for r in runs for e in instance.all_logs(r.run_id) if e.message
    )[-4000:]
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["baseline", "rgb"]
    # the two runs overlapped (they are different partitions, and dagster.yaml allows 4 at once) ...
    records = instance.get_run_records()
    assert max(r.start_time for r in records) < min(r.end_time for r in records), "the runs did not overlap"
    # ... but their champion steps took turns (the `champion` pool of 1 in dagster.yaml)
    intervals = sorted(step_interval(instance, r.run_id, "champion") for r in runs)
    for earlier, later in itertools.pairwise(intervals):
        assert earlier[1] <= later[0], intervals

    # a job backfill makes raw_tfrecords in each run (the asset backfill of droughtwatch experiments --backfill makes
    # it once): the runs read the same data, whether each read the source or kept the other's shards
    raw = instance.fetch_materializations(dg.AssetKey("raw_tfrecords"), limit=3).records
    assert len(raw) == 2 and len({r.asset_materialization.tags["dagster/data_version"] for r in raw}) == 1

    # the last leaderboard lists both partitions' models, and the other feature sets as never trained
    [latest] = instance.fetch_materializations(dg.AssetKey("leaderboard"), limit=1).records
    rows = {row["feature set"]: row for row in table_rows(latest.asset_materialization.metadata["leaderboard"])}
    assert {name: row["status"] for name, row in rows.items()} == {
        "baseline": "candidate",
        "rgb": "candidate",
        "ndvi": "not trained",
        "all": "not trained",
    }
    # both learn the sample's signal in the default 2 epochs, so the better one is champion whichever run compared first
    assert all(rows[name]["val accuracy"] > rows[name]["majority class rate"] for name in ("baseline", "rgb")), rows
    champion = yaml.safe_load((tmp_path / "data" / "registry" / "champion" / "config.yaml").read_text())["champion"]
    assert round(champion["val_accuracy"], 4) == max(rows[name]["val accuracy"] for name in ("baseline", "rgb"))
    assert rows[champion["feature_set"]]["val accuracy"] == round(champion["val_accuracy"], 4)
