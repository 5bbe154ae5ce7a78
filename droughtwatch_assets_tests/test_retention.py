"""Retention: old versions of asset partitions and published models go, on local disk and in S3 (moto's server
on loopback); the newest, the current, the recently superseded and the published ones stay."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.storage import retention
from droughtwatch_assets.storage import s3_client as s3
from droughtwatch_assets.storage.local import LocalArtifactStore
from droughtwatch_assets.storage.registry import LocalModelRegistry, S3ModelRegistry
from droughtwatch_assets.storage.retention import RetentionPolicy, with_source_version
from droughtwatch_assets.storage.s3 import S3ArtifactStore
from droughtwatch_assets_tests.conftest import model_config

DATA = ("processed_tfrecords", "baseline")
ONNX = ("onnx_model", "baseline")
SHARED_VAL_SHARD = b"the same val shard in every version " * 50
NO_GRACE = RetentionPolicy(keep=5, grace=timedelta(0))


def version_at(moment: datetime) -> str:
    return f"v-{moment.strftime(retention.VERSION_TIME_FORMAT)}-{uuid.uuid4().hex[:6]}"


def test_a_version_superseded_within_the_grace_period_stays():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    # committed two days ago, but current until ten minutes ago: a reader may still be in it
    names = [version_at(now - timedelta(days=d)) for d in (3, 2)] + [version_at(now - timedelta(minutes=10))]
    policy = RetentionPolicy(keep=1, grace=timedelta(hours=1))
    assert retention.expired_versions(names, names[-1], set(), policy, now) == [names[0]]
    assert retention.expired_versions(names, names[-1], set(), policy, now + timedelta(hours=1)) == names[:2]
    assert retention.expired_versions(names, names[0], {names[1]}, policy, now + timedelta(hours=1)) == []


def test_a_policy_that_keeps_nothing_is_refused():
    with pytest.raises(ValueError, match="at least 1 version"):
        RetentionPolicy(keep=0)
    with pytest.raises(ValueError, match="cannot be negative"):
        RetentionPolicy(grace=timedelta(minutes=-1))


class LocalBackend:
    def __init__(self, tmp_path):
        self.root = tmp_path / "data"
        self.store = LocalArtifactStore(self.root)
        self.registry = LocalModelRegistry(self.root / "registry")
        self.client = None

    def versions(self, key) -> list[str]:
        return self.store.versions(key)[0]

    def open(self, key, version) -> Path:
        return self.store.location(key) / version

    def registry_versions(self, model) -> list[str]:
        return sorted(p.name for p in (self.registry.root / model / "versions").iterdir())

    def snapshot(self) -> dict[str, int]:
        return {str(p): p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink()}

    def assert_no_unreferenced_objects(self):
        for key in (DATA, ONNX):
            location = self.store.location(key)
            assert sorted(p.name for p in location.iterdir()) == sorted(["current", *self.versions(key)])


class S3Backend:
    def __init__(self, tmp_path, endpoint):
        self.client = s3.client(endpoint, "us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
        self.bucket, registry_bucket = f"dw-{uuid.uuid4().hex[:8]}", f"dw-registry-{uuid.uuid4().hex[:8]}"
        self.store = S3ArtifactStore(self.client, self.bucket, "pre", tmp_path / "cache", create_bucket=True)
        self.registry_store = S3ArtifactStore(self.client, registry_bucket, "", tmp_path / "cache", create_bucket=True)
        self.registry = S3ModelRegistry(self.registry_store)
        self.tmp_path = tmp_path

    def versions(self, key) -> list[str]:
        base = self.store.key(*key, "versions") + "/"
        return sorted(o["Key"][len(base) : -len(".json")] for o in self.store.listing(base))

    def open(self, key, version) -> Path:
        """The version read back through a fresh cache: every object it names is downloaded and md5-checked."""
        reader = S3ArtifactStore(self.client, self.bucket, "pre", self.tmp_path / f"reader-{uuid.uuid4().hex[:6]}")
        return reader.version(key, version)

    def registry_versions(self, model) -> list[str]:
        base = self.registry_store.key(model, "versions") + "/"
        return sorted({o["Key"][len(base) :].split("/")[0] for o in self.registry_store.listing(base)})

    def snapshot(self) -> dict[str, int]:
        return {
            f"{store.bucket}/{o['Key']}": o["Size"]
            for store in (self.store, self.registry_store)
            for o in store.listing("")
        }

    def assert_no_unreferenced_objects(self):
        for key in (DATA, ONNX):
            named = {
                entry["key"]
                for version in self.versions(key)
                for entry in self.store.read_json(self.store.key(*key, "versions", f"{version}.json"))["files"].values()
            }
            stored = {o["Key"] for o in self.store.listing(self.store.key(*key, "objects") + "/")}
            assert stored == named


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request, tmp_path):
    if request.param == "local":
        return LocalBackend(tmp_path)
    return S3Backend(tmp_path, request.getfixturevalue("s3_endpoint"))


def commit(store, key, files: dict[str, bytes]) -> None:
    staging = store.new_staging_dir()
    for relative, body in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(body)
    store.commit(staging, key)


def eight_runs(backend) -> None:
    """8 versions of a dataset (a changing train shard, the same val shard) and of an ONNX model."""
    for n in range(8):
        dataset = {
            "train/part-r-00000": f"train shard of run {n} ".encode() * 40,
            "val/part-r-00000": SHARED_VAL_SHARD,
            "manifest.json": json.dumps({"data_version": f"d{n}"}).encode(),
        }
        commit(backend.store, DATA, dataset)
        commit(backend.store, ONNX, {"model.onnx": f"model {n}".encode() * 100, "config.yaml": b"feature_set: x\n"})


def publish(backend, model, onnx_bytes: bytes, config, tmp_path) -> None:
    onnx = tmp_path / f"{uuid.uuid4().hex}.onnx"
    onnx.write_bytes(onnx_bytes)
    backend.registry.publish(model, onnx, config)


def test_gc_keeps_the_newest_the_current_and_the_published_versions(backend, tmp_path):
    eight_runs(backend)
    data_versions, onnx_versions = backend.versions(DATA), backend.versions(ONNX)
    assert len(data_versions) == len(onnx_versions) == 8
    # published before source_versions was recorded: found by model_md5 (onnx v0) and data_version (data v0)
    publish(backend, "baseline", b"model 0" * 100, model_config(data_version="d0"), tmp_path)
    latest = with_source_version(model_config(data_version="d7"), ONNX, Path(onnx_versions[7]))
    for _ in range(6):
        publish(backend, "baseline", b"model 7" * 100, latest, tmp_path)
    champion = with_source_version(model_config(data_version="d1"), ONNX, Path(onnx_versions[1]))
    publish(backend, "champion", b"model 1" * 100, champion, tmp_path)
    publications = backend.registry_versions("baseline")

    # keeping 7 publications keeps the oldest, which holds onnx v0 and data v0 besides the newest 7
    assert retention.plan(backend.store, backend.registry, RetentionPolicy(keep=7, grace=timedelta(0))).removals == ()
    # everything was superseded seconds ago: within the default grace period nothing goes
    assert retention.plan(backend.store, backend.registry, RetentionPolicy(keep=5)).removals == ()

    before = backend.snapshot()
    dry = retention.plan(backend.store, backend.registry, NO_GRACE)
    assert backend.snapshot() == before  # planning deletes nothing
    expected = {
        ("processed_tfrecords/baseline", data_versions[0]),
        ("processed_tfrecords/baseline", data_versions[2]),
        ("onnx_model/baseline", onnx_versions[0]),
        ("onnx_model/baseline", onnx_versions[2]),
        ("registry baseline", publications[0]),
        ("registry baseline", publications[1]),
    }
    assert {(r.location, r.version) for r in dry.removals} == expected
    lines = dry.lines(dry_run=True)
    assert len(lines) == 7 and lines[-1].startswith(f"total: 6 versions, {dry.total_bytes} bytes would be freed")

    retention.apply(retention.plan(backend.store, backend.registry, NO_GRACE), backend.client)
    after = backend.snapshot()
    assert sum(before.values()) - sum(after.values()) == dry.total_bytes  # the bytes it announced
    assert backend.versions(DATA) == [data_versions[1], *data_versions[3:]]
    assert backend.versions(ONNX) == [onnx_versions[1], *onnx_versions[3:]]
    assert backend.registry_versions("baseline") == publications[2:]
    assert len(backend.registry_versions("champion")) == 1
    for n in (1, 3, 4, 5, 6, 7):
        dataset = backend.open(DATA, data_versions[n])
        assert json.loads((dataset / "manifest.json").read_text()) == {"data_version": f"d{n}"}
        assert (dataset / "val/part-r-00000").read_bytes() == SHARED_VAL_SHARD
        assert (backend.open(ONNX, onnx_versions[n]) / "model.onnx").read_bytes() == f"model {n}".encode() * 100
    backend.assert_no_unreferenced_objects()
    assert retention.plan(backend.store, backend.registry, NO_GRACE).removals == ()


def test_s3_objects_that_no_version_names_go_once_older_than_the_grace_period(tmp_path, s3_endpoint):
    backend = S3Backend(tmp_path, s3_endpoint)
    eight_runs(backend)
    stray = backend.store.key(*DATA, "objects", "train", "part-r-00001", "0" * 32)  # an interrupted commit's
    backend.store.put_bytes(stray, b"x" * 123)
    policy = RetentionPolicy(keep=8, grace=timedelta(hours=1))
    assert retention.plan(backend.store, backend.registry, policy).removals == ()
    later = retention.plan(backend.store, backend.registry, policy, now=datetime.now(UTC) + timedelta(hours=2))
    assert [(r.location, r.version, r.size) for r in later.removals] == [
        ("processed_tfrecords/baseline", retention.UNREFERENCED, 123)
    ]
    retention.apply(later, backend.client)
    backend.assert_no_unreferenced_objects()
    assert len(backend.versions(DATA)) == 8


def test_only_the_given_partitions_and_models_are_pruned(tmp_path):
    backend = LocalBackend(tmp_path)
    eight_runs(backend)
    plan = retention.plan(backend.store, backend.registry, NO_GRACE, keys=[ONNX], models=[])
    assert {r.location for r in plan.removals} == {"onnx_model/baseline"} and len(plan.removals) == 3
    assert md5_of(backend.open(ONNX, backend.versions(ONNX)[-1]) / "model.onnx")  # planning left it in place


def test_keeping_n_versions_keeps_exactly_the_newest_n_and_the_current_one():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    names = [version_at(now - timedelta(days=d)) for d in (5, 4, 3, 2, 1)]

    def expired(keep: int, current: str) -> list[str]:
        return retention.expired_versions(names, current, set(), RetentionPolicy(keep, timedelta(0)), now)

    assert expired(keep=1, current=names[4]) == names[:4]
    assert expired(keep=2, current=names[4]) == names[:3]
    assert expired(keep=2, current=names[0]) == names[1:3]  # the current one on top of the newest 2
    assert expired(keep=4, current=names[4]) == names[:1]
    assert expired(keep=5, current=names[4]) == []


@pytest.mark.parametrize(
    ("superseded_ago", "expired"),
    [
        (timedelta(hours=1) - timedelta(microseconds=1), False),
        (timedelta(hours=1), True),  # "superseded less than an hour ago" stays: exactly an hour is not less
        (timedelta(hours=1, microseconds=1), True),
    ],
)
def test_a_version_superseded_exactly_the_grace_period_ago_goes(superseded_ago, expired):
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    old, successor = now - timedelta(days=3), now - superseded_ago
    names = [version_at(old), version_at(successor), version_at(now - timedelta(minutes=1))]
    policy = RetentionPolicy(keep=1, grace=timedelta(hours=1))
    assert retention.expired_versions(names, names[-1], set(), policy, now) == ([names[0]] if expired else [])


def test_the_model_filter_plans_only_the_named_models_and_keeps_what_the_others_publications_reference(tmp_path):
    backend = LocalBackend(tmp_path)
    eight_runs(backend)
    data_versions, onnx_versions = backend.versions(DATA), backend.versions(ONNX)
    # baseline's publications come from onnx v0-v2 (data d0-d2), champion's from v3-v5; ndvi's reference nothing
    for model, runs in (("baseline", (0, 1, 2)), ("champion", (3, 4, 5))):
        for n in runs:
            config = with_source_version(model_config(data_version=f"d{n}"), ONNX, Path(onnx_versions[n]))
            publish(backend, model, f"model {n}".encode() * 100, config, tmp_path)
    for n in range(3):
        publish(backend, "ndvi", f"ndvi {n}".encode(), model_config(feature_set="ndvi", data_version="x"), tmp_path)
    publications = {model: backend.registry_versions(model) for model in ("baseline", "champion", "ndvi")}
    assert [len(p) for p in publications.values()] == [3, 3, 3]
    keep_two = RetentionPolicy(keep=2, grace=timedelta(0))  # each model's oldest publication, onnx and data v0-v5

    def planned(models) -> set[tuple[str, str]]:
        return {
            (r.location, r.version)
            for r in retention.plan(backend.store, backend.registry, keep_two, models=models).removals
        }

    # baseline's oldest publication stays, unplanned, and keeps onnx v0 and data d0 with it
    assert planned(["champion"]) == {
        ("registry champion", publications["champion"][0]),
        ("onnx_model/baseline", onnx_versions[3]),
        ("processed_tfrecords/baseline", data_versions[3]),
    }
    assert planned(["baseline", "ndvi"]) == {
        ("registry baseline", publications["baseline"][0]),
        ("registry ndvi", publications["ndvi"][0]),
        ("onnx_model/baseline", onnx_versions[0]),
        ("processed_tfrecords/baseline", data_versions[0]),
    }
    assert (
        planned(None)
        == planned(["baseline", "champion", "ndvi"])
        == {
            ("registry baseline", publications["baseline"][0]),
            ("registry champion", publications["champion"][0]),
            ("registry ndvi", publications["ndvi"][0]),
            ("onnx_model/baseline", onnx_versions[0]),
            ("onnx_model/baseline", onnx_versions[3]),
            ("processed_tfrecords/baseline", data_versions[0]),
            ("processed_tfrecords/baseline", data_versions[3]),
        }
    )
    assert planned([]) == set()  # every publication stays, and all of onnx and data v0-v5 with them
