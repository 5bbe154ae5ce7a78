"""The single entry point: `dagster dev` and `dagster asset materialize -m droughtwatch_assets.definitions`.

Everything in `defs/` is loaded as `dg` loads a project's defs folder, so a file that `dg scaffold defs` adds there
is part of the code location. The deployment (settings.current(), read once) adds its resource set and executor.
"""

from pathlib import Path

import dagster as dg

from droughtwatch_assets.wiring.deployment import executor_for, resources_for
from droughtwatch_assets.wiring.settings import current

deployment = current()

defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    dg.Definitions(resources=resources_for(deployment), executor=executor_for(deployment)),
)

# Once each (the loader meets an asset again in each module that imports it): for materialising in a script or test.
assets = list({id(a): a for a in defs.assets or []}.values())
asset_checks = list({id(c): c for c in defs.asset_checks or []}.values())
