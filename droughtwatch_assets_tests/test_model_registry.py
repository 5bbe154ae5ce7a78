"""Publishing a model and its config as a pair that no reader sees torn, locally and in S3."""

import shutil
import threading
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from droughtwatch_assets.core.model_config import ModelConfig
from droughtwatch_assets.data.datasets import md5_of
from droughtwatch_assets.storage import s3_client as s3
from droughtwatch_assets.storage.registry import (
    LocalModelRegistry,
    S3ModelRegistry,
    TornPair,
    check_pair,
    fetch_published,
)
from droughtwatch_assets.storage.retention import RetentionPolicy
from droughtwatch_assets.storage.s3 import S3ArtifactStore
from droughtwatch_assets_tests.conftest import model_config


@pytest.fixture
def two_models(tmp_path, reference_onnx):
    """Two different model files, each with the config that belongs to it."""
    other = tmp_path / "other.onnx"
    shutil.copyfile(reference_onnx, other)
    with open(other, "ab") as f:  # trailing bytes: another file, still loadable by onnxruntime
        f.write(b"\0" * 16)
    return [
        (reference_onnx, model_config(seed=0)),
        (other, model_config(seed=1)),
    ]


def test_each_publication_is_a_versioned_pair_named_by_current(tmp_path, two_models):
    registry = LocalModelRegistry(tmp_path / "registry")
    first = registry.publish("baseline", *two_models[0])
    second = registry.publish("baseline", *two_models[1])
    folder = tmp_path / "registry" / "baseline"
    assert (folder / "CURRENT").read_text() == second.version != first.version
    for publication, (model, config) in zip((first, second), two_models):
        version = folder / "versions" / publication.version
        published = yaml.safe_load((version / "config.yaml").read_text())
        assert published["seed"] == config.seed and published["model_md5"] == md5_of(model)
    top = yaml.safe_load((folder / "config.yaml").read_text())
    assert top["model_md5"] == md5_of(folder / "model.onnx") == md5_of(two_models[1][0])
    model, config = fetch_published(str(folder), tmp_path / "scratch")
    assert config.seed == 1 and md5_of(model) == config.model_md5


def test_a_reader_never_gets_a_model_with_another_models_config(tmp_path, two_models):
    registry = LocalModelRegistry(tmp_path / "registry")
    folder = tmp_path / "registry" / "baseline"
    registry.publish("baseline", *two_models[0])
    stop, seen = threading.Event(), set()
    seed_of = {md5_of(model): config.seed for model, config in two_models}

    def publish() -> None:
        for i in range(40):
            registry.publish("baseline", *two_models[i % 2])
        stop.set()

    writer = threading.Thread(target=publish)
    writer.start()
    while not stop.is_set():
        model, config = fetch_published(str(folder), tmp_path / "scratch")  # CURRENT, then its version
        assert md5_of(model) == config.model_md5
        seen.add(config.seed)
        top_config = ModelConfig.from_yaml((folder / "config.yaml").read_text(), "top-level config.yaml")
        try:  # the original layout: two files, whose model_md5 tells a torn read
            check_pair(folder / "model.onnx", top_config, str(folder))
        except TornPair:
            continue
        assert top_config.seed == seed_of[top_config.model_md5]
    writer.join()
    assert seen == {0, 1}


def test_a_torn_top_level_pair_is_detected(tmp_path, two_models):
    folder = tmp_path / "baseline"
    LocalModelRegistry(tmp_path).publish("baseline", *two_models[0])
    (folder / "CURRENT").unlink()  # a reader of the original layout only
    shutil.copyfile(two_models[1][0], folder / "model.onnx")  # a new model.onnx, the old config.yaml
    with pytest.raises(TornPair, match=r"config\.yaml belongs to another model\.onnx"):
        fetch_published(str(folder), tmp_path / "scratch")


def test_s3_publications_are_versioned_pairs_named_by_current(tmp_path, two_models, s3_env):
    client = s3.client(s3_env["AWS_ENDPOINT_URL"], "us-east-1")
    store = S3ArtifactStore(client, "dw-publish", "", tmp_path / "cache", create_bucket=True)
    first = S3ModelRegistry(store).publish("baseline", *two_models[0])
    second = S3ModelRegistry(store).publish("baseline", *two_models[1])
    assert client.get_object(Bucket="dw-publish", Key="baseline/CURRENT")["Body"].read().decode() == second.version
    assert second.version_uri == f"s3://dw-publish/baseline/versions/{second.version}/"
    assert first.model_uri == second.model_uri == "s3://dw-publish/baseline/model.onnx"
    model, config = fetch_published("s3://dw-publish/baseline/", tmp_path / "scratch")
    assert config.seed == 1 and md5_of(model) == md5_of(two_models[1][0]) == config.model_md5
    top = yaml.safe_load(client.get_object(Bucket="dw-publish", Key="baseline/config.yaml")["Body"].read())
    assert top["model_md5"] == config.model_md5


def test_attachments_are_published_in_the_same_version_as_the_model(tmp_path, two_models):
    registry = LocalModelRegistry(tmp_path / "registry")
    first = registry.publish("baseline", *two_models[0], {"NOTES.md": "card of the first"})
    second = registry.publish("baseline", *two_models[1], {"NOTES.md": "card of the second"})
    folder = tmp_path / "registry" / "baseline"
    assert (folder / "versions" / first.version / "NOTES.md").read_text() == "card of the first"
    assert (folder / "NOTES.md").read_text() == "card of the second"
    model, config = registry.current("baseline")
    assert (model.parent / "NOTES.md").read_text() == "card of the second" and config.seed == 1
    assert model.parent.name == second.version and registry.model_names() == ["baseline"]


def test_s3_attachments_come_down_with_the_current_version(tmp_path, two_models, s3_env):
    client = s3.client(s3_env["AWS_ENDPOINT_URL"], "us-east-1")
    store = S3ArtifactStore(client, "dw-attach", "", tmp_path / "cache", create_bucket=True)
    S3ModelRegistry(store).publish("baseline", *two_models[0], {"NOTES.md": "card of the first"})
    S3ModelRegistry(store).publish("baseline", *two_models[1], {"NOTES.md": "card of the second"})
    model, config = S3ModelRegistry(store).current("baseline", tmp_path / "scratch")
    assert (model.parent / "NOTES.md").read_text() == "card of the second" and config.seed == 1
    top = client.get_object(Bucket="dw-attach", Key="baseline/NOTES.md")["Body"].read().decode()
    assert top == "card of the second"


def test_a_published_s3_folder_fetched_for_predictions_brings_its_attachments(tmp_path, two_models, s3_env):
    client = s3.client(s3_env["AWS_ENDPOINT_URL"], "us-east-1")
    store = S3ArtifactStore(client, "dw-fetch-attach", "", tmp_path / "cache", create_bucket=True)
    S3ModelRegistry(store).publish("baseline", *two_models[0], {"drift_reference.json": "{}"})
    model, _ = fetch_published("s3://dw-fetch-attach/baseline/", tmp_path / "scratch")
    assert (model.parent / "drift_reference.json").read_text() == "{}"
    assert sorted(p.name for p in model.parent.iterdir()) == ["config.yaml", "drift_reference.json", "model.onnx"]


def published_at(version: str) -> datetime:
    """A publication's time, from its name v-<%Y%m%dT%H%M%S%f in UTC>-<id>."""
    return datetime.strptime(version.split("-")[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def test_registry_retention_keeps_exactly_the_newest_n_publications_of_the_models_it_is_given(tmp_path, two_models):
    registry = LocalModelRegistry(tmp_path / "registry")
    versions = {
        name: [registry.publish(name, *two_models[i % 2]).version for i in range(4)]
        for name in ("baseline", "champion")
    }
    later = published_at(versions["champion"][-1]) + timedelta(days=1)

    def removed(keep: int, models=None) -> list[tuple[str, str]]:
        plan, _ = registry.plan_retention(RetentionPolicy(keep, timedelta(0)), later, models)
        return [(r.location, r.version) for r in plan.removals]

    assert removed(keep=4) == []
    assert removed(keep=3) == [
        ("registry baseline", versions["baseline"][0]),
        ("registry champion", versions["champion"][0]),
    ]
    assert removed(keep=3, models=["champion"]) == [("registry champion", versions["champion"][0])]
    assert removed(keep=1, models=["baseline"]) == [("registry baseline", v) for v in versions["baseline"][:3]]
    _, kept_configs = registry.plan_retention(RetentionPolicy(1, timedelta(0)), later, ["baseline"])
    assert len(kept_configs) == 1 + 4  # baseline's current one, and all of champion's


@pytest.mark.parametrize(("after_grace", "removed"), [(-timedelta(microseconds=1), False), (timedelta(0), True)])
def test_a_publication_goes_once_superseded_for_the_whole_grace_period(tmp_path, two_models, after_grace, removed):
    registry = LocalModelRegistry(tmp_path / "registry")
    first, second = (registry.publish("baseline", *model).version for model in two_models)
    now = published_at(second) + timedelta(minutes=10) + after_grace  # `second` superseded `first`
    plan, kept_configs = registry.plan_retention(RetentionPolicy(1, timedelta(minutes=10)), now)
    assert [r.version for r in plan.removals] == ([first] if removed else [])
    assert len(kept_configs) == (1 if removed else 2)
