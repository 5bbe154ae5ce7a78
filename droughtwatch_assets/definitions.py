"""The single entry point: `dagster dev` and `dagster asset materialize -m droughtwatch_assets.definitions`.

The environment is read once, by `settings.current()`: the deployment picks the resource set and the executor.
"""

import dagster as dg

from droughtwatch_assets.defs.assets.champion import champion, champion_is_sound
from droughtwatch_assets.defs.assets.leaderboard import leaderboard
from droughtwatch_assets.defs.assets.model_evaluation import model_evaluation
from droughtwatch_assets.defs.assets.onnx_model import onnx_model
from droughtwatch_assets.defs.assets.predictions import predictions
from droughtwatch_assets.defs.assets.processed_tfrecords import processed_tfrecords
from droughtwatch_assets.defs.assets.published_model import published_model
from droughtwatch_assets.defs.assets.raw_tfrecords import raw_tfrecords
from droughtwatch_assets.defs.assets.trained_model import trained_model
from droughtwatch_assets.defs.checks import asset_checks
from droughtwatch_assets.defs.cli_runs import dead_cli_runs
from droughtwatch_assets.defs.deployment import executor_for, resources_for
from droughtwatch_assets.defs.jobs import configuration_jobs, experiments_job
from droughtwatch_assets.defs.schedules import (
    baseline_daily,
    published_model_freshness,
    published_model_freshness_job,
)
from droughtwatch_assets.defs.sensors import new_raw_shards_sensor
from droughtwatch_assets.defs.settings import current

assets = [
    raw_tfrecords,
    processed_tfrecords,
    trained_model,
    onnx_model,
    published_model,
    model_evaluation,
    predictions,
    leaderboard,
    champion,
]

deployment = current()

defs = dg.Definitions(
    assets=assets,
    asset_checks=[*asset_checks, champion_is_sound],
    jobs=[*configuration_jobs.values(), experiments_job, published_model_freshness_job],
    schedules=[baseline_daily, published_model_freshness],
    sensors=[new_raw_shards_sensor(deployment.sensor_interval_seconds), dead_cli_runs],
    resources=resources_for(deployment),
    executor=executor_for(deployment),
)
