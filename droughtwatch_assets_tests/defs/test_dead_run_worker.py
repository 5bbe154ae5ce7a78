"""A run whose worker dies (an OOM kill, a lost machine) never blocks its partition: with the project's dagster.yaml
and a real daemon, the code server that started the run worker marks the run failed, and the partition's next run
starts and succeeds. The run worker's process tree is killed as each kind of step starts (processing, training,
export, publication, the champion), one daemon for them all, and after each kill and each next run the stores keep
their invariants (store_invariants.py): every current version whole, every publication a consistent triple, no
current version gone back, and the champion changed only by a run that completed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

import dagster as dg
import psutil
import pytest

from droughtwatch_assets_tests.conftest import (
    CHAMPION_DRAW,
    EXPERIMENT_SAMPLE,
    REPO_ROOT,
    TINY_SAMPLE,
    VENV_BIN,
    dagster_daemon,
    dagster_home,
    wait_for,
)
from droughtwatch_assets_tests.store_invariants import CHAMPION, LocalView

ENDED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@dataclass(frozen=True)
class StepKind:
    job: str
    step: str
    output: str  # where the step commits, as LocalView.currents names it


# Each kind of step, in the order a chain reaches them.
STEP_KINDS = {
    "processing": StepKind("baseline_job", "processed_tfrecords", "processed_tfrecords/baseline"),
    "training": StepKind("baseline_job", "trained_model", "trained_model/baseline"),
    "export": StepKind("baseline_job", "onnx_model", "onnx_model/baseline"),
    "publication": StepKind("baseline_job", "published_model", "registry baseline"),
    "champion": StepKind("experiments_job", "champion", CHAMPION),
}


def run_config(job: str) -> dict:
    if job == "experiments_job":
        raw = {**EXPERIMENT_SAMPLE, "sample_seed": CHAMPION_DRAW}
        training = {"epochs": 2, "batch_size": 16, "seed": CHAMPION_DRAW, "tracker": "none"}
    else:
        # the job's preset, which a run config replaces: the baseline configuration is published
        raw, training = TINY_SAMPLE, {"model_name": "baseline", "register_model": True, "epochs": 1, "tracker": "none"}
    return {"ops": {"raw_tfrecords": {"config": raw}, "trained_model": {"config": training}}}


@dataclass
class Daemon:
    """One dagster-daemon on an instance of its own (the project's dagster.yaml) and a local data folder."""

    env: dict
    instance: dg.DagsterInstance
    view: LocalView

    def launch(self, job: str) -> dg.DagsterRun:
        """`dagster job launch` of the baseline partition, as a user launches one; the run waits for the daemon."""
        known = {run.run_id for run in self.instance.get_runs()}
        command = [VENV_BIN / "dagster", "job", "launch", "-w", "workspace.yaml", "-j", job]
        command += ["--tags", json.dumps({"dagster/partition": "baseline"})]
        command += ["--config-json", json.dumps(run_config(job))]
        completed = subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        [run] = [run for run in self.instance.get_runs() if run.run_id not in known]
        return run

    def status(self, run_id: str) -> dg.DagsterRunStatus:
        return self.instance.get_run_by_id(run_id).status

    def events(self, run_id: str, step: str, event_type: dg.DagsterEventType) -> list:
        return [e for e in self.instance.all_logs(run_id, of_type=event_type) if e.step_key == step]

    def problems(self, before: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """The current versions now, and what breaks the invariants: a current version not whole, or one that was
        current in `before` gone or gone back."""
        after = self.view.currents()
        problems = [
            f"{where}: {version}: {p}" for where, version in after.items() for p in self.view.problems(where, version)
        ]
        problems += [
            f"{where}: version {old} was current; now {after.get(where) or 'none is'}"
            for where, old in before.items()
            if after.get(where) is None or after[where] < old
        ]
        return after, problems


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dead-run-worker")
    home = dagster_home(folder / "home")
    (folder / "data").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DROUGHTWATCH_DATA_DIR": str(folder / "data"),
        "DROUGHTWATCH_TRACKER": "none",
    }
    instance = dg.DagsterInstance.from_config(str(home))
    with dagster_daemon(env):
        yield Daemon(env, instance, LocalView(folder / "data"))
    instance.dispose()


def run_worker_tree(instance: dg.DagsterInstance, run_id: str) -> list[psutil.Process]:
    """The run worker (its pid from the event the code server reports as it starts it) and its processes."""
    pid = next(
        int(m[1])
        for e in instance.all_logs(run_id)
        if (m := re.search(r"Started process for run \(pid: (\d+)\)", e.message))
    )
    worker = psutil.Process(pid)
    return [worker, *worker.children(recursive=True)]


def started(daemon: Daemon, run_id: str, step: str) -> bool:
    return bool(daemon.events(run_id, step, dg.DagsterEventType.STEP_START)) or daemon.status(run_id) in ENDED


@pytest.mark.daemon
@pytest.mark.parametrize("kind", list(STEP_KINDS))
def test_a_run_whose_worker_tree_is_killed_as_a_step_starts_is_failed_and_the_partitions_next_run_succeeds(
    daemon, kind
):
    job, step, output = STEP_KINDS[kind].job, STEP_KINDS[kind].step, STEP_KINDS[kind].output
    before, problems = daemon.problems({})
    assert not problems, problems
    killed = daemon.launch(job)
    deadline = time.monotonic() + 600
    while not started(daemon, killed.run_id, step) and time.monotonic() < deadline:
        time.sleep(0.05)  # the step's own process writes STEP_START; the kill follows within this poll
    assert daemon.status(killed.run_id) not in ENDED, f"the run ended before {step} started"
    tree = run_worker_tree(daemon.instance, killed.run_id)
    assert len(tree) >= 2, tree  # the run worker and at least the step's process
    for process in tree:
        os.kill(process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: daemon.status(killed.run_id) in ENDED, 60, "the killed run was marked ended")
    failed_after = time.monotonic() - killed_at
    assert daemon.status(killed.run_id) == dg.DagsterRunStatus.FAILURE
    # the kill landed in the step: it recorded neither its end nor an output
    ends = (
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
    )
    assert not [e for t in ends for e in daemon.events(killed.run_id, step, t)], f"{step} ended before the kill"
    after_kill, problems = daemon.problems(before)
    assert not problems, problems
    # the steps before the killed one committed; the killed one did not, nor did the champion change
    assert after_kill.get(output) == before.get(output), f"{output} changed in the killed run"
    assert after_kill.get(CHAMPION) == before.get(CHAMPION), "the champion changed in the killed run"

    again = daemon.launch(job)
    wait_for(lambda: daemon.status(again.run_id) in ENDED, 900, "the next run ended")
    succeeded_after = time.monotonic() - killed_at
    assert daemon.status(again.run_id) == dg.DagsterRunStatus.SUCCESS, "\n".join(
        str(e.message) for e in daemon.instance.all_logs(again.run_id)
    )[-3000:]
    after, problems = daemon.problems(after_kill)
    assert not problems, problems
    assert after.get(output) and after[output] != before.get(output), f"the next run committed {output}"
    print(
        f"{kind}: the killed run failed {failed_after:.1f} s after the kill, the next one succeeded "
        f"{succeeded_after:.0f} s after it"
    )
