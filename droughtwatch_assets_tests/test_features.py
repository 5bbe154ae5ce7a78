import pytest

from droughtwatch_assets.core import features


def test_registry_has_11_bands_and_3_indices():
    assert features.BANDS == tuple(f"B{i}" for i in range(1, 12))
    assert features.FEATURES[-3:] == ("NDVI", "NDMI", "EVI")


def test_default_feature_sets():
    sets = features.load_feature_sets()
    assert sets["baseline"] == ("B2", "B3", "B4", "B5")
    assert sets["ndvi"] == ("NDVI",)
    assert sets["rgb"] == ("B4", "B3", "B2")
    assert sets["all"] == features.FEATURES


def test_a_set_is_added_by_editing_the_yaml_the_deployment_names(tmp_path):
    from droughtwatch_assets.wiring.settings import Deployment

    path = tmp_path / "sets.yaml"
    path.write_text("moisture: [NDMI, B6]\n")
    deployment = Deployment.from_env({"DROUGHTWATCH_FEATURE_SETS": str(path)})
    sets = features.load_feature_sets(deployment.feature_sets_file)
    assert features.feature_set("moisture", sets) == ("NDMI", "B6")
    assert Deployment.from_env({}).feature_sets_file == str(features.FEATURE_SETS_FILE)


@pytest.mark.parametrize(
    "body, message", [("x: [B12]\n", "unknown feature"), ("x: []\n", "empty"), ("x: [B2, B2]\n", "twice")]
)
def test_bad_feature_sets_are_refused(tmp_path, body, message):
    path = tmp_path / "sets.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        features.load_feature_sets(path)


def test_bands_needed_for_indices():
    assert features.bands_needed(("EVI", "B3")) == ("B2", "B3", "B4", "B5")
