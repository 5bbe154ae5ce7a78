"""Without the shared test data, a test that needs it skips, saying where to put it; under CI it fails instead."""

import pytest

from droughtwatch_assets_tests.conftest import shared_file


def test_a_missing_shared_file_skips_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="set DROUGHTWATCH_SHARED_DATA to the folder that holds"):
        shared_file(tmp_path / "droughtwatch-real-part-r-00012.tfrecord")


def test_under_ci_a_missing_shared_file_fails_instead_of_skipping(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="test data missing"):
        shared_file(tmp_path / "droughtwatch-real-part-r-00012.tfrecord")


def test_a_shared_file_that_is_there_is_returned(tmp_path):
    (tmp_path / "shard").write_bytes(b"x")
    assert shared_file(tmp_path / "shard") == tmp_path / "shard"
