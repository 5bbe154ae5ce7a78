from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dagster as dg
from pydantic import Field, field_validator

from droughtwatch_assets.core.configurations import AUGMENTS, CLASS_WEIGHTS, Augment, Hyperparameters
from droughtwatch_assets.core.model_config import ModelConfig, SweepRecord
from droughtwatch_assets.dagster_support.asset_defaults import PER_FEATURE_SET, step_size
from droughtwatch_assets.dagster_support.failures import refusal, refuse_configuration_mismatch
from droughtwatch_assets.dagster_support.metadata import training_metadata
from droughtwatch_assets.data.datasets import ShardedDataset
from droughtwatch_assets.model.artifacts import ModelArtifact
from droughtwatch_assets.model.drift import reference_from
from droughtwatch_assets.model.sweep import Holdout, grid
from droughtwatch_assets.wiring.resources import ArtifactIOManager, TrackingResource


class SweepConfig(dg.Config):
    """A grid over the hyperparameters; an empty list takes the single value from the training config."""

    learning_rate: list[float] = Field(default=[], description="learning rates to try, e.g. [0.001, 0.0005]")
    batch_size: list[int] = Field(default=[], description="batch sizes to try")
    epochs: list[int] = Field(default=[], description="epoch counts to try")
    # list[str], not list[Augment]: Dagster's config schema takes a Literal only as a field's own type
    augment: list[str] = Field(default=[], description="augmentations to try: none, dihedral")
    holdout_fraction: float = Field(
        default=0.2, description="share of train held out to choose the combination on (val is never used)"
    )
    holdout_seed: int = Field(default=0, description="the hold-out split's seed: the same split every run")

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, augment: list[str]) -> list[str]:
        unknown = [value for value in augment if value not in AUGMENTS]
        if unknown:
            raise ValueError(f"sweep augment {unknown}: each must be one of {', '.join(AUGMENTS)}")
        return augment


class TrainingConfig(dg.Config):
    model_name: str = ""  # the name the model is published under; defaults to the feature set
    learning_rate: float = 5e-4
    batch_size: int = 64
    epochs: int = 2  # 0 exports the untrained model (the original's 'dummy')
    augment: Augment = Field(
        default="none",
        description="none, as in the original; dihedral: each training image a random flip or quarter turn of "
        "itself, drawn anew every epoch from the seed (validation is never augmented)",
    )
    sweep: SweepConfig = Field(
        default_factory=SweepConfig,
        description="two or more combinations: train each on train minus a hold-out, keep the best on the hold-out",
    )
    seed: int = 0  # weight initialisation, shuffle order and augmentation
    register_model: bool = False  # promote to the model registry (the baseline configuration sets it)
    tracker: Literal["deployment", "wandb", "mlflow", "none"] = Field(
        default="deployment", description="wandb, mlflow or none; deployment: DROUGHTWATCH_TRACKER's (else wandb)"
    )
    tracking_required: bool = Field(default=True, description="false: train and warn when the tracker is unreachable")

    @property
    def holdout(self) -> Holdout:
        return Holdout(self.sweep.holdout_fraction, self.sweep.holdout_seed)

    def combinations(self) -> list[Hyperparameters]:
        """The sweep's grid, each empty list standing for the single value above: one combination by default."""
        return grid(
            self.sweep.learning_rate or [self.learning_rate],
            self.sweep.batch_size or [self.batch_size],
            self.sweep.epochs or [self.epochs],
            self.sweep.augment or [self.augment],
        )


@dg.asset(
    **PER_FEATURE_SET,
    op_tags=step_size(cpu=4, memory_gib=8, memory_limit_gib=12),  # the step that needs the most memory
    group_name="training",
    kinds={"tensorflow", "keras"},
    description="The original baseline CNN trained on one feature set: categorical cross-entropy, Adam, "
    "class weights {0:1, 1:4, 2:4, 3:6}. Saved as .keras with its per-epoch history and the train split's drift "
    "reference (drift_reference.json: per-channel decile bins of a seeded pixel sample). With a sweep grid in its "
    "config, every combination is trained and the best on a hold-out carved from train is kept.",
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    io_manager: dg.ResourceParam[ArtifactIOManager],
    tracking: TrackingResource,
    processed_tfrecords: ShardedDataset,
) -> dg.Output[ModelArtifact]:
    refuse_configuration_mismatch(context, config.model_name or context.partition_key)
    data = processed_tfrecords
    combinations = config.combinations()
    identity = model_identity(context, config, data)
    # the tracker hears of the weights before training; the model's config records those fit received
    start = {**identity, "class_weights": CLASS_WEIGHTS, "tracker": tracking.resolve(config.tracker)}
    if len(combinations) == 1:
        start.update(asdict(combinations[0]))
    with tracking.step(
        context, config.tracker, required=config.tracking_required, start=(start["model_name"], start)
    ) as tracker:
        if len(combinations) > 1:
            trained = _sweep(context, config, data, combinations, tracker)
        else:
            trained = Trained(_fit(context, data, combinations[0], config.seed, tracker), combinations[0])
        model_config = ModelConfig(
            **identity,
            **asdict(trained.hyperparameters),
            class_weights=trained.run.class_weights,
            tracker=tracker.name,
            tracker_run=tracker.metadata(),
            sweep=trained.sweep,
        )
        artifact = ModelArtifact(io_manager.staging_dir())
        trained.run.model.save(artifact.keras_path)
        tracker.log_keras_model(artifact.keras_path)
        artifact.write_metadata(model_config, trained.run.history)
        artifact.drift_reference_path.write_text(reference_from(data).to_json())  # what drift is measured against
    metadata = training_metadata(trained, model_config, data.class_counts("val"), tracker)
    return dg.Output(artifact, metadata=metadata)


@dataclass(frozen=True)
class Trained:
    """A trained model and how it was chosen: the trials, val scores and sweep record of a sweep."""

    run: Any  # model.train.TrainingRun (TensorFlow loads only when a step trains)
    hyperparameters: Hyperparameters
    trials: list = field(default_factory=list)
    val_scores: dict = field(default_factory=dict)
    sweep: SweepRecord | None = None


def model_identity(context, config: TrainingConfig, data: ShardedDataset) -> dict:
    """The model's config fields known before training; the hyperparameters follow once chosen."""
    return {
        "model_name": config.model_name or context.partition_key,
        "feature_set": context.partition_key,
        "features": list(data.features),
        "seed": config.seed,
        "register_model": config.register_model,
        "data_version": data.manifest.data_version,
        "data_source": data.manifest.source.get("type", ""),
        "dagster_run_id": context.run.run_id,
    }


def _sweep(context, config: TrainingConfig, data: ShardedDataset, combinations, tracker) -> Trained:
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
            data.records("train"),
            len(data.features),
            combinations,
            config.holdout,
            seed=config.seed,
            on_epoch=on_epoch,
        )
    except ValueError as exc:
        raise refusal(f"trained_model partition '{context.partition_key}': {exc}") from exc
    chosen = next(t for t in trials if t.selected)
    val_loss, val_accuracy = evaluate_loss_accuracy(
        run.model, data.shards("val"), len(data.features), data.records("val")
    )
    val_scores = {"val_loss": val_loss, "val_accuracy": val_accuracy}
    extra = {"holdout_fraction": config.holdout.fraction, "seed": config.seed}
    tracker.log_sweep(config.model_name or context.partition_key, trials, extra, val_scores)
    context.log.info(
        f"sweep: trial {chosen.number} of {len(trials)} kept ({chosen.hyperparameters}): hold-out accuracy "
        f"{chosen.holdout_accuracy:.4f}, then val accuracy {val_accuracy:.4f}"
    )
    return Trained(run, chosen.hyperparameters, trials, val_scores, summary(trials, config.holdout))


def _fit(context, data: ShardedDataset, hyperparameters: Hyperparameters, seed: int, tracker):
    from droughtwatch_assets.model.train import EmptySplit, SplitInput, train  # TensorFlow loads only to train

    def on_epoch(epoch: int, logs: dict) -> None:
        context.log.info(
            f"epoch {epoch + 1}/{hyperparameters.epochs}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f} "
            f"val_loss {logs['val_loss']:.4f} val_accuracy {logs['val_accuracy']:.4f}"
        )
        tracker.log_epoch(epoch, logs)

    splits = [SplitInput(data.shards(split), data.records(split)) for split in ("train", "val")]
    try:
        return train(*splits, len(data.features), hyperparameters, seed=seed, on_epoch=on_epoch)
    except EmptySplit as exc:
        raise refusal(f"processed_tfrecords partition '{context.partition_key}': {exc}") from exc
