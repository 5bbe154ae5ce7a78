from dataclasses import asdict
from typing import Literal

import dagster as dg
from pydantic import Field

from droughtwatch_assets.core.configurations import CLASS_WEIGHTS
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.defs.asset_defaults import PER_FEATURE_SET, k8s_pod
from droughtwatch_assets.defs.failures import refusal, refuse_configuration_mismatch
from droughtwatch_assets.defs.metadata import training_metadata
from droughtwatch_assets.defs.resources import ArtifactStore, TrackingResource
from droughtwatch_assets.model.artifacts import ModelArtifact
from droughtwatch_assets.model.sweep import Hyperparameters, grid


class SweepConfig(dg.Config):
    """A grid over the hyperparameters; an empty list takes the single value from the training config."""

    learning_rate: list[float] = Field(default=[], description="learning rates to try, e.g. [0.001, 0.0005]")
    batch_size: list[int] = Field(default=[], description="batch sizes to try")
    epochs: list[int] = Field(default=[], description="epoch counts to try")
    holdout_fraction: float = Field(
        default=0.2, description="share of train held out to choose the combination on (val is never used)"
    )
    holdout_seed: int = Field(default=0, description="the hold-out split's seed: the same split every run")


class TrainingConfig(dg.Config):
    model_name: str = ""  # the name the model is published under; defaults to the feature set
    learning_rate: float = 5e-4
    batch_size: int = 64
    epochs: int = 2  # 0 exports the untrained model (the original's 'dummy')
    sweep: SweepConfig = Field(
        default_factory=SweepConfig,
        description="two or more combinations: train each on train minus a hold-out, keep the best on the hold-out",
    )
    seed: int = 0  # weight initialisation and shuffle order
    register_model: bool = False  # promote to the model registry (the baseline configuration sets it)
    tracker: Literal["deployment", "wandb", "mlflow", "none"] = Field(
        default="deployment", description="wandb, mlflow or none; deployment: DROUGHTWATCH_TRACKER's (else wandb)"
    )
    tracking_required: bool = Field(default=True, description="false: train and warn when the tracker is unreachable")

    def combinations(self) -> list[Hyperparameters]:
        """The sweep's grid, each empty list standing for the single value above: one combination by default."""
        return grid(
            self.sweep.learning_rate or [self.learning_rate],
            self.sweep.batch_size or [self.batch_size],
            self.sweep.epochs or [self.epochs],
        )


@dg.asset(
    **PER_FEATURE_SET,
    op_tags=k8s_pod(cpu="4", memory="8Gi", memory_limit="12Gi"),  # the step that needs the most memory
    group_name="training",
    kinds={"tensorflow", "keras"},
    description="The original baseline CNN trained on one feature set: categorical cross-entropy, Adam, "
    "class weights {0:1, 1:4, 2:4, 3:6}. Saved as .keras with its per-epoch history. With a sweep grid in its "
    "config, every combination is trained and the best on a hold-out carved from train is kept.",
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    store: ArtifactStore,
    tracking: TrackingResource,
    processed_tfrecords: ShardedDataset,
) -> dg.Output[ModelArtifact]:
    refuse_configuration_mismatch(context, config.model_name or context.partition_key)
    data = processed_tfrecords
    combinations = config.combinations()
    sweeping = len(combinations) > 1
    resolved = resolved_config(context, config, tracking, data, single=None if sweeping else combinations[0])
    start = (resolved["model_name"], resolved)
    with tracking.step(context, config.tracker, required=config.tracking_required, start=start) as tracker:
        resolved["tracker"] = tracker.name  # what downstream steps report to
        if sweeping:
            run, trials, val_scores = _sweep(context, config, data, combinations, tracker, resolved)
        else:
            run, trials, val_scores = _fit(context, data, combinations[0], config.seed, tracker), [], {}
        artifact = ModelArtifact(store.new_staging_dir())
        run.model.save(artifact.keras_path)
        tracker.log_keras_model(artifact.keras_path)
        artifact.write_metadata(resolved, run.history)
    metadata = training_metadata(run, resolved, data.class_counts("val"), trials, val_scores, tracker)
    return dg.Output(artifact, metadata=metadata)


def resolved_config(context, config: TrainingConfig, tracking: TrackingResource, data: ShardedDataset, single):
    """The training config as recorded beside the model: a sweep adds the chosen hyperparameters once known."""
    return {
        "model_name": config.model_name or context.partition_key,
        "feature_set": context.partition_key,
        "features": list(data.features),
        **(asdict(single) if single else {}),
        "seed": config.seed,
        "register_model": config.register_model,
        "tracker": tracking.resolve(config.tracker),
        "class_weights": CLASS_WEIGHTS,
        "data_version": data.manifest.data_version,
        "dagster_run_id": context.run.run_id,
    }


def _sweep(context, config: TrainingConfig, data: ShardedDataset, combinations, tracker, resolved: dict):
    """Every combination on train minus the hold-out; the best is kept and scored once on val."""
    from droughtwatch_assets.model.sweep import run_sweep, summary
    from droughtwatch_assets.model.train import evaluate_loss_accuracy

    if not data.records("val"):
        raise refusal(
            f"processed_tfrecords partition '{context.partition_key}': the processed val split has no records, so "
            f"the kept model could not be scored on val. Check the raw val/ shards"
        )

    def on_epoch(trial, epoch: int, logs: dict) -> None:
        context.log.info(
            f"trial {trial.number}/{len(combinations)} {trial.hyperparameters}: epoch {epoch + 1}: loss "
            f"{logs['loss']:.4f} holdout_accuracy {logs['holdout_accuracy']:.4f}"
        )

    try:
        run, trials = run_sweep(
            data.shards("train"),
            len(data.features),
            combinations,
            train_records=data.records("train"),
            holdout_fraction=config.sweep.holdout_fraction,
            holdout_seed=config.sweep.holdout_seed,
            seed=config.seed,
            on_epoch=on_epoch,
        )
    except ValueError as exc:
        raise refusal(f"trained_model partition '{context.partition_key}': {exc}") from exc
    chosen = next(t for t in trials if t.selected)
    resolved.update(asdict(chosen.hyperparameters))
    resolved["sweep"] = summary(trials, config.sweep.holdout_fraction, config.sweep.holdout_seed)
    extra = {"holdout_fraction": config.sweep.holdout_fraction, "seed": config.seed}
    for trial in trials:
        name = f"{resolved['model_name']}_trial{trial.number}"
        tracker.log_trial(name, {**asdict(trial.hyperparameters), **extra}, trial.history, trial.selected)
    tracker.log_params({**asdict(chosen.hyperparameters), "selected_trial": chosen.number})
    val_loss, val_accuracy = evaluate_loss_accuracy(
        run.model, data.shards("val"), len(data.features), data.records("val")
    )
    val_scores = {"val_loss": val_loss, "val_accuracy": val_accuracy}
    tracker.log_summary({**val_scores, "holdout_accuracy": chosen.holdout_accuracy})
    context.log.info(
        f"sweep: trial {chosen.number} of {len(trials)} kept ({chosen.hyperparameters}): hold-out accuracy "
        f"{chosen.holdout_accuracy:.4f}, then val accuracy {val_accuracy:.4f}"
    )
    return run, trials, val_scores


def _fit(context, data: ShardedDataset, hyperparameters: Hyperparameters, seed: int, tracker):
    from droughtwatch_assets.model.train import EmptySplit, train  # TensorFlow loads only when a step trains

    def on_epoch(epoch: int, logs: dict) -> None:
        context.log.info(
            f"epoch {epoch + 1}/{hyperparameters.epochs}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f} "
            f"val_loss {logs['val_loss']:.4f} val_accuracy {logs['val_accuracy']:.4f}"
        )
        tracker.log_epoch(epoch, logs)

    try:
        run = train(
            data.shards("train"),
            data.shards("val"),
            len(data.features),
            learning_rate=hyperparameters.learning_rate,
            batch_size=hyperparameters.batch_size,
            epochs=hyperparameters.epochs,
            seed=seed,
            train_records=data.records("train"),
            val_records=data.records("val"),
            on_epoch=on_epoch,
        )
    except EmptySplit as exc:
        raise refusal(f"processed_tfrecords partition '{context.partition_key}': {exc}") from exc
    return run
