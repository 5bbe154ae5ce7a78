"""Imported by the step fork servers before their steps fork (fork_server.PRELOADED): work that every step process
would otherwise repeat for itself.

- botocore's S3 models (the API, its endpoint rules), parsed once: storage.s3_client shares them among clients.
- Dagster's schema migrations. A step process opens the instance's SQLite databases (runs, the event index,
  schedules, its run's events), and Dagster checks each one's revision against the head of its migration
  scripts, which alembic finds by loading all ninety of them anew each time: about 0.3 s of CPU per step
  process, most of a check step's own. The scripts do not change while a process runs, so one ScriptDirectory
  per script location, read here, serves every check.
"""

from __future__ import annotations

from alembic.script import ScriptDirectory
from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION, get_alembic_config

from droughtwatch_assets.storage.s3_client import preload_models

_read_scripts = ScriptDirectory.from_config.__func__
_scripts: dict[str, ScriptDirectory] = {}


def _scripts_read_once(cls, config, *args, **kwargs) -> ScriptDirectory:
    location = config.get_main_option("script_location")
    if args or kwargs or not location:
        return _read_scripts(cls, config, *args, **kwargs)
    if location not in _scripts:
        _scripts[location] = _read_scripts(cls, config)
    return _scripts[location]


ScriptDirectory.from_config = classmethod(_scripts_read_once)
ScriptDirectory.from_config(get_alembic_config(__file__, script_location=ALEMBIC_SCRIPTS_LOCATION)).get_heads()
preload_models()
