"""The executor of the local and s3 deployments: Dagster's default, `multi_or_in_process_executor`, with the same run
config, except that the multiprocess mode starts its step processes from a fork server that has already imported
the code location and TensorFlow (fork_server.py), once per run, unless the run config picks a `start_method`.
"""

from __future__ import annotations

import dagster as dg

from droughtwatch_assets.defs.fork_server import PRELOADED


def with_preloading_fork_server(config: dict) -> dict:
    """The executor config with the fork server as the multiprocess mode's start method, unless one is chosen."""
    multiprocess = config.get("multiprocess")
    if multiprocess is None or multiprocess.get("start_method"):
        return config
    return {"multiprocess": {**multiprocess, "start_method": {"forkserver": {"preload_modules": list(PRELOADED)}}}}


@dg.executor(
    name="multi_or_in_process_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema,
    requirements=dg.multi_or_in_process_executor.get_requirements,
)
def local_executor(init_context: dg.InitExecutorContext):
    config = with_preloading_fork_server(dict(init_context.executor_config))
    return dg.multi_or_in_process_executor.executor_creation_fn(init_context._replace(executor_config=config))
