"""`droughtwatch`: run a configuration's job end to end from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time

from droughtwatch_assets.core.configurations import CONFIGURATIONS


def _instance(command: str):
    """The instance of $DAGSTER_HOME, so runs show in the UI; without it an ephemeral one, said aloud. Runs that a
    droughtwatch process on this machine left behind when it died are marked failed first."""
    import os

    import dagster as dg

    from droughtwatch_assets.execution.cli_runs import fail_runs_of_dead_processes
    from droughtwatch_assets.wiring.settings import dagster_home

    if dagster_home():
        instance = dg.DagsterInstance.get()
        for run_id in fail_runs_of_dead_processes(instance, f"droughtwatch {command} (pid {os.getpid()})"):
            print(f"droughtwatch: run {run_id} was left STARTED by a droughtwatch process that died; marked failed")
        return instance
    print(
        "droughtwatch: DAGSTER_HOME is not set, so this run is kept in memory only and the UI will not show it "
        "(make run sets DAGSTER_HOME=.dagster_home)",
        file=sys.stderr,
    )
    return dg.DagsterInstance.ephemeral()


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    from droughtwatch_assets.dagster_support.partitions import FEATURE_SETS
    from droughtwatch_assets.definitions import defs
    from droughtwatch_assets.defs.jobs import preset
    from droughtwatch_assets.execution.cli_runs import process_tags
    from droughtwatch_assets.wiring.resources import artifact_key

    if args.configuration not in CONFIGURATIONS:
        hint = (
            f"; '{args.configuration}' is a feature set: train it with "
            f"`droughtwatch experiments --feature-sets {args.configuration}`"
            if args.configuration in FEATURE_SETS
            else ""
        )
        return usage_error(f"run: no configuration '{args.configuration}' (one of {', '.join(CONFIGURATIONS)}){hint}")
    configuration = CONFIGURATIONS[args.configuration]
    try:
        given = json.loads(args.config_json) if args.config_json else {}
    except ValueError as exc:
        return usage_error(f"run: --config-json is not JSON ({exc})")
    run_config = merged(merged(preset(configuration).to_config_dict(), PROGRESS), given)
    started = time.monotonic()
    instance = _instance("run")
    result = defs.resolve_job_def(f"{configuration.name}_job").execute_in_process(
        run_config=run_config,
        partition_key=configuration.feature_set,
        instance=instance,
        raise_on_error=False,
        tags=process_tags(),
    )
    elapsed = time.monotonic() - started
    if not result.success:
        print(f"{configuration.name}_job failed after {elapsed:.0f} s; see the errors above", file=sys.stderr)
        return 1
    key = artifact_key(dg.AssetKey("onnx_model"), configuration.feature_set)
    print(f"{configuration.name}_job succeeded in {elapsed:.0f} s")
    with dg.build_resources({"store": defs.resources["store"]}) as resources:  # resolves the EnvVar credentials
        print(f"ONNX model: {resources.store.file_uri(key, 'model.onnx')}")
        print(f"config:     {resources.store.file_uri(key, 'config.yaml')}")
    published = result.output_for_node("published_model")
    if published.get("published"):
        folder = published["uris"][0].rsplit("/", 1)[0].removeprefix("file://")
        print(f"published:  {folder}/ (version {published['version']})")
    return 0


# The runs' log on the console: progress at INFO, without Dagster's DEBUG lines for every event
PROGRESS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def merged(base: dict, over: dict) -> dict:
    """`over` laid over `base`, mappings merged key by key."""
    result = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both else value
    return result


def experiments(args: argparse.Namespace) -> int:
    """experiments_job once per feature set, one after the other, then the leaderboard and the champion."""

    from droughtwatch_assets.dagster_support.partitions import feature_set_partitions
    from droughtwatch_assets.definitions import defs
    from droughtwatch_assets.execution.cli_runs import process_tags

    known = feature_set_partitions.get_partition_keys()
    feature_sets = args.feature_sets.split(",") if args.feature_sets else known
    unknown = [name for name in feature_sets if name not in known]
    if unknown:
        print(
            f"droughtwatch experiments: no feature set {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr
        )
        return 2
    try:
        given = json.loads(args.config_json) if args.config_json else {}
    except ValueError as exc:
        return usage_error(f"experiments: --config-json is not JSON ({exc})")
    if args.backfill:
        return experiments_backfill(args, defs, feature_sets, given or None)
    run_config = merged(PROGRESS, given)
    instance = _instance("experiments")
    job = defs.resolve_job_def("experiments_job")
    started = time.monotonic()
    for feature_set in feature_sets:
        run_started = time.monotonic()
        result = job.execute_in_process(
            run_config=run_config,
            partition_key=feature_set,
            instance=instance,
            raise_on_error=False,
            tags=process_tags(),
        )
        if not result.success:
            print(f"experiments_job failed on '{feature_set}'; see the errors above", file=sys.stderr)
            return 1
        print(f"{feature_set}: evaluated in {time.monotonic() - run_started:.0f} s")
    board = result.output_for_node("leaderboard")
    print(f"experiments_job: {len(feature_sets)} feature sets in {time.monotonic() - started:.0f} s")
    for row in board:
        accuracy = "-" if row.val_accuracy is None else f"{row.val_accuracy:.4f}"
        print(f"  {row.feature_set:<12} {row.status:<12} val_accuracy {accuracy}")
    decision = result.asset_materializations_for_node("champion")[0].metadata["decision"].value
    print(f"champion: {decision}")
    return 0


def experiments_backfill(args: argparse.Namespace, defs, feature_sets: list[str], run_config: dict | None) -> int:
    """One asset backfill over the feature sets, run by the daemon of DAGSTER_HOME's instance."""
    import dagster as dg

    from droughtwatch_assets.execution.experiments_backfill import SUCCEEDED, request_backfill, wait_for_backfill
    from droughtwatch_assets.wiring.settings import dagster_home

    if not dagster_home():
        print(
            "droughtwatch experiments --backfill: DAGSTER_HOME is not set; the daemon that runs the backfill reads "
            "the instance there (make dev sets it to .dagster_home)",
            file=sys.stderr,
        )
        return 2
    try:
        backfill_id = request_backfill(defs, feature_sets, run_config)
    except RuntimeError as exc:
        print(f"droughtwatch experiments --backfill: {exc}", file=sys.stderr)
        return 2
    print(f"backfill {backfill_id}: {', '.join(feature_sets)}, run by the daemon (dagster-daemon, or make dev)")
    print(f"watch it at {args.ui_url.rstrip('/')}/runs/b/{backfill_id}")
    if not args.wait:
        return 0
    instance = dg.DagsterInstance.get()
    status = wait_for_backfill(instance, backfill_id)
    print(f"backfill {backfill_id}: {status}")
    if status not in SUCCEEDED:
        return 1
    champion = instance.get_latest_materialization_event(dg.AssetKey("champion"))
    print(f"champion: {champion.asset_materialization.metadata['decision'].value}")
    return 0


def predict(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from droughtwatch_assets.core.features import load_feature_sets, validate_features
    from droughtwatch_assets.core.model_config import embedded_config
    from droughtwatch_assets.model.artifacts import DRIFT_REFERENCE
    from droughtwatch_assets.model.drift import class_drift, read_reference
    from droughtwatch_assets.model.predict import input_shards, predict_shards, write_parquet
    from droughtwatch_assets.records.tfrecord import RecordError
    from droughtwatch_assets.storage.registry import fetch_published
    from droughtwatch_assets.wiring.settings import current

    folder = Path(args.output).absolute().parent
    if not folder.is_dir():
        return usage_error(f"predict: --output {args.output}: the folder {folder} does not exist; create it first")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            model, config = fetch_published(args.model, scratch)
            config = config or embedded_config(model)
            if args.features:
                sets = load_feature_sets(current().feature_sets_file)
                features = sets.get(args.features) or validate_features(args.features.split(","), "--features")
            elif config:
                features = tuple(config.features)
            else:
                raise ValueError(f"{args.model} carries no config naming its features; pass --features")
            result = predict_shards(model, features, input_shards(args.input), on_bad_record=args.on_bad_record)
            reference = read_reference(model.parent / DRIFT_REFERENCE)  # published with the model, if it has one
        except (RecordError, FileNotFoundError, ValueError, RuntimeError) as exc:
            print(f"droughtwatch predict: {exc}", file=sys.stderr)
            return 2
    write_parquet(result, args.output)
    skipped = f", {len(result.skipped)} bad records skipped" if result.skipped else ""
    print(
        f"{result.table.num_rows} predictions from {result.records} records ({result.vetoed} blank images vetoed"
        f"{skipped}) -> {args.output}"
    )
    print("predicted class counts: " + ", ".join(f"{k}: {n}" for k, n in enumerate(result.class_distribution())))
    if reference is None:
        print("class drift: no class rates known (the model carries no drift reference)")
        return 0
    drift = class_drift(result.class_distribution(), reference.expected_classes())
    print(drift.summary())
    if drift.drifted:
        print(f"droughtwatch predict: warning: class drift, {drift.line()}", file=sys.stderr)
    return 0


def gc(args: argparse.Namespace) -> int:
    import dagster as dg

    from droughtwatch_assets.storage.s3_client import S3Error
    from droughtwatch_assets.wiring.deployment import build_resources

    try:
        with dg.build_resources({"store": build_resources()["store"]}) as resources:  # resolves EnvVar credentials
            store = resources.store
            policy = store.retention_policy(args.keep, args.grace_minutes)
            plan = store.retention_plan(policy)
            if not args.dry_run:
                store.remove(plan)
    except dg.Failure as exc:
        return usage_error(f"gc: {exc.description}")
    except (S3Error, OSError, ValueError) as exc:
        return usage_error(f"gc: {exc}")
    print("\n".join(plan.lines(dry_run=args.dry_run)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droughtwatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialise raw -> processed -> model -> ONNX for a configuration")
    run_parser.add_argument(
        "--configuration", "-c", default="baseline", help=f"one of {', '.join(CONFIGURATIONS)} (default: baseline)"
    )
    run_parser.add_argument(
        "--config-json", default="", help="run config, as JSON, merged over the configuration's own (its preset)"
    )
    run_parser.set_defaults(handler=run)
    experiments_parser = commands.add_parser(
        "experiments", help="train and evaluate every feature set, then rank them and promote the champion"
    )
    experiments_parser.add_argument(
        "--feature-sets", default="", help="comma-separated feature sets (default: every one in feature_sets.yaml)"
    )
    experiments_parser.add_argument(
        "--backfill",
        action="store_true",
        help="ask the daemon for one asset backfill instead of running here: raw data, leaderboard and champion "
        "once, each feature set's chain once",
    )
    experiments_parser.add_argument("--wait", action="store_true", help="with --backfill: wait for it to end")
    experiments_parser.add_argument("--config-json", default="", help="run config for every run, as JSON")
    experiments_parser.add_argument(
        "--ui-url", default="http://127.0.0.1:3000", help="with --backfill: the Dagster UI, to link the backfill"
    )
    experiments_parser.set_defaults(handler=experiments)
    predict_parser = commands.add_parser("predict", help="score raw shards with an ONNX model, into a Parquet table")
    predict_parser.add_argument(
        "--model",
        required=True,
        help="an ONNX file, a published <model>/ folder, or s3://bucket/<model>/ (or s3://bucket/key.onnx)",
    )
    predict_parser.add_argument(
        "--features",
        default="",
        help="comma-separated features in the model's channel order, or a feature-set name; "
        "default: the features in the model's config",
    )
    predict_parser.add_argument(
        "--on-bad-record",
        choices=["fail", "skip"],
        default="fail",
        help="skip: drop unreadable records, count them, and go on",
    )
    predict_parser.add_argument("--input", required=True, help="a raw shard, or a folder of part-* shards")
    predict_parser.add_argument("--output", required=True, help="the Parquet file to write")
    predict_parser.set_defaults(handler=predict)
    gc_parser = commands.add_parser(
        "gc",
        help="remove old versions of every asset partition and published model in the deployment's store, "
        "keeping the newest, the current, recent and published ones, and what killed runs left (staging folders, "
        "partial publications, S3 objects no version names, incomplete multipart uploads)",
    )
    gc_parser.add_argument("--dry-run", action="store_true", help="list what would go and its bytes; remove nothing")
    gc_parser.add_argument(
        "--keep", type=int, default=None, help="versions to keep of each (default: DROUGHTWATCH_KEEP_VERSIONS, else 5)"
    )
    gc_parser.add_argument(
        "--grace-minutes",
        type=float,
        default=None,
        help="keep versions superseded, and leftovers of runs changed, less than this long ago "
        "(default: DROUGHTWATCH_GRACE_MINUTES, else 60)",
    )
    gc_parser.set_defaults(handler=gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    from droughtwatch_assets.wiring.settings import SettingsError

    # Dagster's notes on the preview and beta APIs the definitions use on purpose (pyproject.toml lists them)
    warnings.filterwarnings("ignore", message=r".*is currently in (preview|beta)")

    try:
        return args.handler(args)
    except SettingsError as exc:
        return usage_error(f"{args.command}: {exc}")


def usage_error(message: str) -> int:
    """A mistake the user can fix: one line on stderr, exit code 2."""
    print(f"droughtwatch {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
