"""One job per named configuration of the original project; each materialises the whole chain. And the
experiments job, which compares the feature sets.

A configuration is a typed run-config preset that knows its feature set: the job's description names the
partition to launch, and a launch on another partition is refused at the first step (failures.py).
"""

import dagster as dg

from droughtwatch_assets.core.configurations import CONFIGURATION_TAG, CONFIGURATIONS, ModelConfiguration
from droughtwatch_assets.defs.assets.trained_model import TrainingConfig

# What a configuration job materialises: every asset of one feature set. Comparing feature sets is the
# leaderboard's and the champion's job.
ONE_FEATURE_SET = dg.AssetSelection.all() - dg.AssetSelection.assets("leaderboard", "champion")


def preset(configuration: ModelConfiguration) -> dg.RunConfig:
    """The configuration's training settings, as the job's default run config (editable in the launchpad)."""
    training = TrainingConfig(
        model_name=configuration.name,
        epochs=configuration.epochs,
        augment=configuration.augment,
        register_model=configuration.register,
    )
    return dg.RunConfig(ops={"trained_model": training})


def configuration_job(configuration: ModelConfiguration):
    return dg.define_asset_job(
        f"{configuration.name}_job",
        selection=ONE_FEATURE_SET,
        description=f"{configuration.description}. Launch it for the '{configuration.feature_set}' partition.",
        config=preset(configuration),
        tags={CONFIGURATION_TAG: configuration.name},
    )


configuration_jobs = {name: configuration_job(configuration) for name, configuration in CONFIGURATIONS.items()}
baseline_job = configuration_jobs["baseline"]


# A run of one partition trains and evaluates that feature set, then refreshes the leaderboard and lets the
# champion step compare and promote. Every feature set at once is an asset backfill of the same selection
# (`droughtwatch experiments --backfill`), which materialises raw data, leaderboard and champion once.
experiments_job = dg.define_asset_job(
    "experiments_job",
    selection=dg.AssetSelection.assets("champion").upstream(),
    description="One feature set's chain up to its evaluation, then the leaderboard and the champion, which compare "
    "what has been evaluated so far. For every feature set at once, launch an asset backfill of the same assets "
    "(droughtwatch experiments --backfill).",
    tags={"droughtwatch/experiments": "true"},
)

# What the defs folder's loader takes from this module (a module with a Definitions object gives only that one): the
# configurations' jobs are built from a table, not named one by one.
defs = dg.Definitions(jobs=[*configuration_jobs.values(), experiments_job])
