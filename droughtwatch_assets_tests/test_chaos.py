"""The chaos campaign: `droughtwatch run` and `droughtwatch experiments` killed with SIGKILL at random moments, over
local storage and over S3 (moto), and the stores checked after every kill by readers of the tests' own
(store_invariants.py; the S3 view is this file's).

Each campaign first runs both commands to the end, which measures T, the duration of a complete run of each. Then
run after run, each one a `run` or an `experiments` (drawn), on new sample data and a new training seed (drawn), is
killed, its whole process group at once, at a moment drawn uniformly in (0, T); every K-th run goes to the end
instead and must succeed, and so must a run that ends before its moment comes. After every run:

- each asset partition's current version is whole: a committed version (v-<time>-<id>; never a staging folder nor
  a version a killed run was writing), every shard its manifest lists there at its size and md5 (raw) and with as
  many TFRecord frames as it says, every model loading (onnxruntime for model.onnx, zipfile's testzip for
  model.keras), every JSON, YAML and Parquet file readable; in S3 also every object of the version's index there
  at its size and md5;
- each published model's current version is a consistent triple: the md5 of its model.onnx is the model_md5 of its
  config.yaml and of its model card's front matter, and the config names that very version;
- no current version went back or vanished, and the version it superseded during the run is still whole (a
  reader may still be reading it; retention keeps it for the grace period): otherwise a version was lost;
- the champion changed only in a run that started the champion step (a STEP_START of `champion` among the events
  of the run the killed process executed, found in the instance by the process tag the run carries).

The campaign ends with `droughtwatch gc --grace-minutes 0`, after which only committed versions may be left: no
staging folder holding a file, no partial publication nor temporary file, no entry in a location beside `current`
and whole versions; in S3 no object under an `objects/` prefix that no `versions/*.json` names and no incomplete
multipart upload; and every current version as it was, whole.

DROUGHTWATCH_CHAOS_SEED sets the seed (default: drawn, and printed as each campaign starts: pytest -s shows it, and
every failure names it); DROUGHTWATCH_CHAOS_LOCAL_KILLS and DROUGHTWATCH_CHAOS_S3_KILLS the kills (default 8 and 4,
what `make test` runs; `make chaos` runs 50 and 20). The seed fixes the choices (the commands, their data, the kill
moments), not the machine's speed, so a rerun with the same seed kills the runs at the same moments, not
necessarily in the same instruction.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from droughtwatch_assets_tests.conftest import (
    CHAMPION_DRAW,
    EXPERIMENT_SAMPLE,
    REPO_ROOT,
    TINY_SAMPLE,
    VENV_BIN,
    dagster_home,
)
from droughtwatch_assets_tests.store_invariants import (
    CHAMPION,
    VERSION,
    Leftovers,
    LocalView,
    holds_a_file,
    md5,
    publication_problems,
    version_problems,
)

SEED = int(os.environ.get("DROUGHTWATCH_CHAOS_SEED") or random.SystemRandom().randrange(2**31))
LOCAL_KILLS = int(os.environ.get("DROUGHTWATCH_CHAOS_LOCAL_KILLS") or 8)
S3_KILLS = int(os.environ.get("DROUGHTWATCH_CHAOS_S3_KILLS") or 4)
K = 4  # every K-th run goes to the end
BUCKET = "dw-chaos"
PREFIX = "droughtwatch"  # the S3 store's prefix (the default); the registry is the bucket's top level
FIRST_CHAMPION_DRAW = CHAMPION_DRAW  # the first complete `experiments` publishes a champion
BLOB_CACHE = 400 * 2**20  # S3 objects kept in memory between checks (content-addressed: a key's bytes never change)


def command(kind: str, draw: int) -> list[str]:
    """`droughtwatch run` or `droughtwatch experiments` on new sample data (seed `draw`) and a new training seed."""
    if kind == "run":
        raw, training = {**TINY_SAMPLE, "sample_seed": draw}, {"epochs": 1, "seed": draw}
        head = ["run"]
    else:
        raw, training = {**EXPERIMENT_SAMPLE, "sample_seed": draw}, {"epochs": 2, "batch_size": 16, "seed": draw}
        head = ["experiments", "--feature-sets", "baseline"]
    config = {"ops": {"raw_tfrecords": {"config": raw}, "trained_model": {"config": training}}}
    return [str(VENV_BIN / "droughtwatch"), *head, "--config-json", json.dumps(config)]


# -- the S3 store, as this test reads it (the local one: store_invariants.LocalView) ---------------------------------
class S3View:
    """The bucket: <prefix>/<asset>/<partition>/{CURRENT, versions/<v>.json, objects/...}; <model>/{CURRENT,
    versions/<v>/...} at the top level; the local cache's .staging/."""

    def __init__(self, endpoint: str, cache: Path, scratch: Path):
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.cache, self.scratch = cache, scratch
        self.blobs: dict[str, bytes] = {}  # content-addressed objects already read, newest last (BLOB_CACHE bytes)
        self.listing: dict[str, dict] = {}

    def _list(self) -> dict[str, dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {o["Key"]: o for page in pages for o in page.get("Contents", [])}

    def _read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def currents(self) -> dict[str, str]:
        try:
            self.listing = self._list()
        except self.client.exceptions.NoSuchBucket:
            self.listing = {}
        found = {}
        for key in sorted(self.listing):
            parts = key.split("/")
            if parts[-1] != "CURRENT":
                continue
            if parts[0] == PREFIX and "objects" not in parts:
                found["/".join(parts[1:-1])] = self._read(key).decode().strip()
            elif len(parts) == 2:
                found[f"registry {parts[0]}"] = self._read(key).decode().strip()
        return found

    def problems(self, where: str, version: str) -> list[str]:
        if not VERSION.fullmatch(version):
            return [f"names {version!r}, not a committed version"]
        with tempfile.TemporaryDirectory(dir=self.scratch) as scratch:
            root = Path(scratch)
            if where.startswith("registry "):
                base = f"{where.split(' ', 1)[1]}/versions/{version}/"
                for key in [k for k in self.listing if k.startswith(base)]:
                    (root / key[len(base) :]).write_bytes(self._read(key))
                return publication_problems(root, version)
            index_key = f"{PREFIX}/{where}/versions/{version}.json"
            if index_key not in self.listing:
                return [f"versions/{version}.json missing"]
            problems = self._index_problems(json.loads(self._read(index_key))["files"], root)
            return problems or version_problems(root, where.split("/")[0])

    def _index_problems(self, files: dict, root: Path | None) -> list[str]:
        """The objects an index names, each there at its size and md5; written under root if given."""
        problems = []
        for relative, entry in files.items():
            if entry["key"] not in self.listing:
                problems.append(f"{relative}: object {entry['key']} missing")
                continue
            if self.listing[entry["key"]]["Size"] != entry["size"]:
                problems.append(
                    f"{relative}: {self.listing[entry['key']]['Size']} bytes, the index says {entry['size']}"
                )
                continue
            if root is None:
                continue
            data = self.blobs.get(entry["key"]) or self._read(entry["key"])
            if md5(data) != entry["md5"] or len(data) != entry["size"]:
                problems.append(f"{relative}: content is not the index's (md5, size)")
                continue
            self.blobs[entry["key"]] = self.blobs.pop(entry["key"], data)
            while sum(map(len, self.blobs.values())) > BLOB_CACHE:
                del self.blobs[next(iter(self.blobs))]
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(data)
        return problems

    def leftovers(self) -> Leftovers:
        found = Leftovers()
        staging = self.cache / ".staging"
        for folder in sorted(staging.iterdir()) if staging.is_dir() else []:
            if holds_a_file(folder):
                found.orphans.append(f"cache staging folder {folder.name} holds files")
            else:
                found.empty_staging += 1
        self.currents()  # a fresh listing
        indexes = {
            k: json.loads(self._read(k))
            for k in self.listing
            if re.fullmatch(rf"{PREFIX}/.+/versions/v-[^/]+\.json", k)
        }
        named = {entry["key"] for index in indexes.values() for entry in index["files"].values()}
        for key in sorted(self.listing):
            if key.startswith(PREFIX + "/") and "/objects/" in key and key not in named:
                found.orphans.append(f"s3://{BUCKET}/{key}: no version names it")
        for key, index in sorted(indexes.items()):
            if problems := self._index_problems(index["files"], None):
                found.orphans.append(f"s3://{BUCKET}/{key}: {problems[0]}")
        uploads = self.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        found.orphans += [f"multipart upload of {u['Key']}" for u in uploads]
        publications: dict[tuple[str, str], set[str]] = {}
        for key in self.listing:
            parts = key.split("/")
            if parts[0] != PREFIX and len(parts) >= 4 and parts[1] == "versions":
                publications.setdefault((parts[0], parts[2]), set()).add("/".join(parts[3:]))
        for (model, version), files in sorted(publications.items()):
            if f"{model}/CURRENT" not in self.listing or not VERSION.fullmatch(version):
                found.orphans.append(f"registry {model}/versions/{version}")
            elif not {"model.onnx", "config.yaml"} <= files:
                found.orphans.append(f"registry {model}/versions/{version}: holds only {sorted(files)}")
        return found


# -- the campaign ----------------------------------------------------------------------------------------------------
def process_tag(pid: int) -> str:
    """The tag `droughtwatch` gives its runs (execution/cli_runs.py): <host>/<pid>/<start time in ticks>."""
    from droughtwatch_assets.execution.cli_runs import process_name

    return process_name(pid)


def group_alive(pgid: int) -> list[int]:
    """The processes of a process group that still run (zombies, which wait for their reaper, do not)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@dataclass
class Figures:
    kills: int = 0
    kills_survived: int = 0  # kills after which every check held
    to_the_end: int = 0
    succeeded: int = 0
    ended_early: int = 0  # runs that ended before their kill moment (they must succeed too)
    committed: int = 0  # new current versions seen
    lost: int = 0
    champion_changes: int = 0
    champion_changes_in_killed_runs: int = 0
    orphans_before_gc: int = 0
    orphans_after_gc: int = 0
    empty_staging_after_gc: int = 0
    killed_in: Counter = field(default_factory=Counter)  # the step each kill hit ("(start)": before the run began)


class Campaign:
    def __init__(self, name: str, view, env: dict, folder: Path, kills: int):
        import dagster as dg

        self.name, self.view, self.env, self.folder, self.target = name, view, env, folder, kills
        self.rng = random.Random(f"{SEED}:{name}")
        self.instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        self.figures, self.problems, self.runs = Figures(), [], 0
        self.whole: set[tuple[str, str]] = set()  # (location, version) found whole while current
        self.durations: dict[str, float] = {}
        (folder / "logs").mkdir(parents=True, exist_ok=True)

    def problem(self, text: str) -> None:
        self.problems.append(f"run {self.runs}: {text}")

    def start(self, kind: str, draw: int | None = None) -> tuple[subprocess.Popen, str, Path]:
        self.runs += 1
        draw = self.rng.randrange(10**6) if draw is None else draw
        log = self.folder / "logs" / f"{self.runs:03d}-{kind}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                command(kind, draw),
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return process, process_tag(process.pid), log

    def ended(self, process: subprocess.Popen, log: Path, why: str) -> None:
        if process.returncode == 0:
            self.figures.succeeded += 1
        else:
            tail = log.read_text()[-1500:]
            self.problem(f"{why} exited with {process.returncode} ({log.name}): ...{tail}")

    def to_the_end(self, kind: str, draw: int | None = None) -> float:
        process, _, log = self.start(kind, draw)
        started = time.monotonic()
        why = f"{kind} (to the end)"
        try:
            process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            self.stop(process)
            why = f"{kind} (to the end) hung: still running after 900 s, killed, and"
        self.figures.to_the_end += 1
        self.ended(process, log, why)
        return time.monotonic() - started

    def stop(self, process: subprocess.Popen) -> None:
        """SIGKILL the process group, and wait until none of it runs any more."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 60
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_alive(process.pid):
            self.problem(f"processes {group_alive(process.pid)} of the killed run outlived the kill")

    def killed(self, kind: str) -> tuple[bool, list[str], str]:
        """Start a run and SIGKILL its process group at a moment drawn in (0, T): (whether it was killed, the steps
        it started, what happened)."""
        moment = self.rng.uniform(0, self.durations[kind])
        process, tag, log = self.start(kind)
        try:
            process.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            self.stop(process)
            self.figures.kills += 1
            steps = self.steps_started(tag)
            where = f"in {steps[-1]}" if steps else "before its run began"
            self.figures.killed_in[steps[-1] if steps else "(start)"] += 1
            return True, steps, f"killed at {moment:.1f} s of {self.durations[kind]:.0f}, {where}"
        self.figures.ended_early += 1
        self.ended(process, log, f"{kind} (ended before its kill moment, {moment:.1f} s)")
        return False, [], f"ended before its kill moment ({moment:.1f} s)"

    def check(self, before: dict[str, str]) -> dict[str, str]:
        """Every current version whole; none of those found whole before gone back, gone, or (superseded since
        `before`, within the grace period) no longer whole."""
        after = self.view.currents()
        for where, version in after.items():
            problems = self.view.problems(where, version)
            self.problems += [f"run {self.runs}: {where}: current version {version}: {p}" for p in problems]
            if not problems:
                self.whole.add((where, version))
        for where, old in before.items():
            if (where, old) not in self.whole:
                continue  # reported when it was current
            new = after.get(where)
            if new is None or new < old:
                self.figures.lost += 1
                self.problem(f"{where}: version {old} was current; now {new or 'none is'}")
            elif new != old and (problems := self.view.problems(where, old)):
                self.figures.lost += 1
                self.problem(f"{where}: version {old}, superseded within the grace period, lost: {problems[0]}")
        self.figures.committed += sum(1 for where, version in after.items() if before.get(where) != version)
        return after

    def steps_started(self, tag: str) -> list[str]:
        """The steps that the runs of the process tagged `tag` started, in order (none: killed before its run)."""
        import dagster as dg

        from droughtwatch_assets.execution.cli_runs import PROCESS_TAG

        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={PROCESS_TAG: tag}))
        return [
            entry.step_key
            for run in reversed(runs)
            for entry in self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        ]

    def run(self) -> Figures:
        print(
            f"chaos campaign {self.name}: seed {SEED} (DROUGHTWATCH_CHAOS_SEED={SEED} repeats it), {self.target} kills"
        )
        started = time.monotonic()
        state: dict[str, str] = {}
        for kind, draw in (("run", None), ("experiments", FIRST_CHAMPION_DRAW)):  # T of each: a complete run
            self.durations[kind] = self.to_the_end(kind, draw)
            state = self.check(state)
        assert not self.problems, self.report()
        assert CHAMPION in state, f"seed {SEED}: no champion was published: the champion check would mean nothing"
        print(f"  T: {', '.join(f'{k} {t:.1f} s' for k, t in self.durations.items())}")
        while self.figures.kills < self.target:
            kind = self.rng.choice(("run", "experiments"))
            failures = len(self.problems)
            killing = (self.runs + 1) % K != 0
            if not killing:
                self.to_the_end(kind)
                after = self.check(state)
                self.figures.champion_changes += after.get(CHAMPION) != state.get(CHAMPION)
            else:
                was_killed, steps, what = self.killed(kind)
                after = self.check(state)
                if after.get(CHAMPION) != state.get(CHAMPION):
                    self.figures.champion_changes += 1
                    self.figures.champion_changes_in_killed_runs += was_killed
                    if was_killed and "champion" not in steps:
                        self.problem(
                            f"the champion changed to {after.get(CHAMPION)}, but the killed run never started its step"
                        )
                self.figures.kills_survived += was_killed and len(self.problems) == failures
            outcome = "ok" if len(self.problems) == failures else self.problems[-1][:300]
            print(f"  run {self.runs} {kind}, {what if killing else 'to the end'}: {outcome}")
            state = after
        self.figures.orphans_before_gc = len(self.view.leftovers().orphans)
        gc = subprocess.run(
            [str(VENV_BIN / "droughtwatch"), "gc", "--grace-minutes", "0"],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if gc.returncode != 0:
            self.problem(f"gc exited with {gc.returncode}: {gc.stdout[-1500:]}{gc.stderr[-1500:]}")
        after_gc = self.check(state)
        if after_gc != state:
            self.problem(f"gc changed the current versions: {state} -> {after_gc}")
        leftovers = self.view.leftovers()
        self.figures.orphans_after_gc = len(leftovers.orphans)
        self.figures.empty_staging_after_gc = leftovers.empty_staging
        self.problems += [f"after gc: {orphan}" for orphan in leftovers.orphans]
        print(f"  {self.summary()} in {time.monotonic() - started:.0f} s")
        self.instance.dispose()
        return self.figures

    def summary(self) -> str:
        f = self.figures
        return (
            f"chaos {self.name}, seed {SEED}: {f.kills_survived} of {f.kills} kills survived; {f.to_the_end} runs to "
            f"the end and {f.ended_early} ended before their kill moment, {f.succeeded} succeeded; {f.committed} "
            f"versions committed, {f.lost} lost; the champion changed {f.champion_changes} times "
            f"({f.champion_changes_in_killed_runs} in killed runs); orphans: {f.orphans_before_gc} before gc, "
            f"{f.orphans_after_gc} after ({f.empty_staging_after_gc} empty staging folders left by design); "
            f"kills by step: {', '.join(f'{step} {n}' for step, n in sorted(f.killed_in.items()))}"
        )

    def report(self) -> str:
        shown = "\n".join(self.problems[:30])
        more = f"\n... and {len(self.problems) - 30} more" if len(self.problems) > 30 else ""
        return f"{self.summary()}\nDROUGHTWATCH_CHAOS_SEED={SEED} repeats the campaign's choices.\n{shown}{more}"


def environment(tmp_path: Path, **extra: str) -> dict:
    """The environment of every command: an instance of its own, a data folder, no tracker; no DROUGHTWATCH_*
    setting of the caller's (a deployment, retention) but the shared data's folder."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith("DROUGHTWATCH_") or k == "DROUGHTWATCH_SHARED_DATA"
    }
    return {
        **inherited,
        "DAGSTER_HOME": str(dagster_home(tmp_path / "dagster_home")),
        "DROUGHTWATCH_DATA_DIR": str(tmp_path / "data"),
        "DROUGHTWATCH_TRACKER": "none",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **extra,
    }


@pytest.mark.chaos
@pytest.mark.integration
def test_chaos_campaign_over_local_storage(tmp_path):
    campaign = Campaign("local", LocalView(tmp_path / "data"), environment(tmp_path), tmp_path, LOCAL_KILLS)
    campaign.run()
    assert not campaign.problems, campaign.report()


@pytest.mark.chaos
@pytest.mark.integration
def test_chaos_campaign_over_s3(tmp_path, s3_env):
    env = environment(
        tmp_path,
        DROUGHTWATCH_DEPLOYMENT="s3",
        DROUGHTWATCH_S3_BUCKET=BUCKET,
        DROUGHTWATCH_S3_CREATE_BUCKET="true",
        **s3_env,
    )
    (tmp_path / "scratch").mkdir()
    view = S3View(s3_env["AWS_ENDPOINT_URL"], tmp_path / "data", tmp_path / "scratch")
    campaign = Campaign("s3", view, env, tmp_path, S3_KILLS)
    campaign.run()
    assert not campaign.problems, campaign.report()
