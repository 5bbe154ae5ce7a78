"""`droughtwatch`: run a configuration's job end to end from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

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


def predict(args: argparse.Namespace) -> int:
    import tempfile

    from droughtwatch_assets.features import load_feature_sets, validate_features
    from droughtwatch_assets.predict import input_shards, predict_shards, write_parquet
    from droughtwatch_assets.records import RecordError

    sets = load_feature_sets()
    features = sets.get(args.features) or validate_features(args.features.split(","), "--features")
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model.startswith("s3://"):
            from droughtwatch_assets.s3 import download_uri

            model = download_uri(model, Path(scratch) / "model.onnx")
        try:
            result = predict_shards(model, features, input_shards(args.input))
        except (RecordError, FileNotFoundError, ValueError) as exc:
            print(f"droughtwatch predict: {exc}", file=sys.stderr)
            return 2
    write_parquet(result, args.output)
    print(f"{result.table.num_rows} predictions from {result.records} records ({result.vetoed} blank images vetoed) "
          f"-> {args.output}")
    print("predicted class counts: " + ", ".join(f"{k}: {n}" for k, n in enumerate(result.class_distribution())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="droughtwatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialise raw -> processed -> model -> ONNX for a configuration")
    run_parser.add_argument("--configuration", "-c", choices=sorted(CONFIGURATIONS), default="baseline")
    run_parser.set_defaults(handler=run)
    predict_parser = commands.add_parser("predict", help="score raw shards with an ONNX model, into a Parquet table")
    predict_parser.add_argument("--model", required=True, help="an ONNX file or s3://bucket/key")
    predict_parser.add_argument("--features", required=True,
                                help="comma-separated features in the model's channel order, or a feature-set name")
    predict_parser.add_argument("--input", required=True, help="a raw shard, or a folder of part-* shards")
    predict_parser.add_argument("--output", required=True, help="the Parquet file to write")
    predict_parser.set_defaults(handler=predict)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
