"""`droughtwatch`: run a configuration's job end to end from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import time

from droughtwatch_assets.configurations import CONFIGURATIONS


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    from droughtwatch_assets.definitions import defs
    from droughtwatch_assets.defs.resources import default_data_dir
    from droughtwatch_assets.storage import CURRENT, LocalArtifactStore

    configuration = CONFIGURATIONS[args.configuration]
    started = time.monotonic()
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def(f"{configuration.name}_job").execute_in_process(
        partition_key=configuration.feature_set, instance=instance, raise_on_error=False)
    elapsed = time.monotonic() - started
    if not result.success:
        print(f"{configuration.name}_job failed after {elapsed:.0f} s; see the errors above", file=sys.stderr)
        return 1
    onnx_dir = LocalArtifactStore(default_data_dir()).location(("onnx_model", configuration.feature_set)) / CURRENT
    print(f"{configuration.name}_job succeeded in {elapsed:.0f} s")
    print(f"ONNX model: {onnx_dir / 'model.onnx'}")
    print(f"config:     {onnx_dir / 'config.yaml'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="droughtwatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialise raw -> processed -> model -> ONNX for a configuration")
    run_parser.add_argument("--configuration", "-c", choices=sorted(CONFIGURATIONS), default="baseline")
    run_parser.set_defaults(handler=run)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
