"""What the CLI says in its own process, without running a job."""

import dagster as dg

from droughtwatch_assets import cli


def test_without_dagster_home_a_run_goes_to_an_ephemeral_instance_and_says_so(monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    instance = cli._instance("run")
    assert instance.is_ephemeral
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DAGSTER_HOME is not set" in err and "the UI will not show it" in err


def test_with_dagster_home_a_run_goes_to_its_instance_silently(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = cli._instance("run")
    assert not instance.is_ephemeral and isinstance(instance, dg.DagsterInstance)
    assert capsys.readouterr().err == ""
