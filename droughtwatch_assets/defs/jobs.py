"""One job per named configuration of the original project; each materialises the whole chain."""

import dagster as dg

from droughtwatch_assets.configurations import CONFIGURATION_TAG, CONFIGURATIONS
from droughtwatch_assets.defs.tracking import job_hooks


def configuration_job(name: str):
    configuration = CONFIGURATIONS[name]
    return dg.define_asset_job(
        f"{name}_job",
        selection=dg.AssetSelection.all(),
        description=f"{configuration.description}. Launch it for the '{configuration.feature_set}' partition.",
        config={
            "ops": {
                "trained_model": {
                    "config": {
                        "model_name": name,
                        "epochs": configuration.epochs,
                        "register_model": configuration.register,
                    }
                }
            }
        },
        tags={CONFIGURATION_TAG: name},
        hooks=job_hooks(),
    )


configuration_jobs = {name: configuration_job(name) for name in CONFIGURATIONS}
baseline_job = configuration_jobs["baseline"]
