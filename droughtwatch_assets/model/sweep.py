"""A hyperparameter sweep inside one feature set: every combination of a small grid, chosen on a hold-out split.

The hold-out is carved from train with a fixed seed; val is never looked at while choosing, so val accuracy
stays an honest comparison across feature sets (the leaderboard's and champion's metric). The kept model is
the winning combination as trained on train minus the hold-out.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from droughtwatch_assets.core.configurations import Augment, Hyperparameters
from droughtwatch_assets.core.model_config import SweepRecord


def grid(
    learning_rates: Sequence[float],
    batch_sizes: Sequence[int],
    epochs: Sequence[int],
    augments: Sequence[Augment] = ("none",),
) -> list[Hyperparameters]:
    """Every combination, in a stable order (learning rate, then batch size, then epochs, then augment), without
    repeats."""
    combinations = itertools.product(
        dict.fromkeys(learning_rates), dict.fromkeys(batch_sizes), dict.fromkeys(epochs), dict.fromkeys(augments)
    )
    return [Hyperparameters(float(lr), int(batch), int(n), augment) for lr, batch, n, augment in combinations]


def holdout_mask(records: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask over `records` training records in file order: True for the hold-out.

    The same (records, fraction, seed) always gives the same split. Both sides keep at least one record.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout_fraction {fraction} must be between 0 and 1 (exclusive)")
    size = round(records * fraction)
    if records < 2 or not 0 < size < records:
        raise ValueError(
            f"a hold-out of {fraction:.0%} of {records} training records leaves one side empty: a sweep needs "
            f"more training records, or a single combination (no sweep)"
        )
    mask = np.zeros(records, dtype=bool)
    mask[np.random.default_rng(seed).choice(records, size=size, replace=False)] = True
    return mask


@dataclass
class Trial:
    number: int  # 1-based, in grid order
    hyperparameters: Hyperparameters
    history: dict[str, list] = field(default_factory=dict)  # holdout_* in place of Keras' val_*
    holdout_loss: float = float("nan")
    holdout_accuracy: float = float("nan")
    seconds: float = 0.0
    selected: bool = False

    def row(self) -> dict:
        return {
            "trial": self.number,
            **asdict(self.hyperparameters),
            "holdout_accuracy": self.holdout_accuracy,
            "holdout_loss": self.holdout_loss,
            "seconds": self.seconds,
            "selected": self.selected,
        }


def best(trials: Sequence[Trial]) -> Trial:
    """The highest hold-out accuracy; ties go to the lower hold-out loss, then to the earlier trial."""
    return min(trials, key=lambda t: (-t.holdout_accuracy, t.holdout_loss, t.number))


def _as_holdout(history: dict[str, list]) -> dict[str, list]:
    return {(f"holdout_{key[4:]}" if key.startswith("val_") else key): values for key, values in history.items()}


@dataclass(frozen=True)
class Holdout:
    """The share of train held out to choose a combination on, and the seed of that split."""

    fraction: float = 0.2
    seed: int = 0

    def mask(self, records: int) -> np.ndarray:
        return holdout_mask(records, self.fraction, self.seed)


def run_sweep(
    train_files: Sequence[str | os.PathLike],
    train_records: int,
    channels: int,
    combinations: Sequence[Hyperparameters],
    holdout: Holdout,
    *,
    seed: int,
    on_epoch: Callable[[Trial, int, dict], None] = lambda *_: None,
):
    """Train every combination on train minus the hold-out; return (the kept TrainingRun, every Trial)."""
    from droughtwatch_assets.model.train import SplitInput, evaluate_loss_accuracy, train  # TensorFlow: only here

    held_out = holdout.mask(train_records)
    fit_split = SplitInput(train_files, train_records, select=~held_out)
    holdout_split = SplitInput(train_files, train_records, select=held_out)
    trials, kept, kept_trial = [], None, None
    for number, hyperparameters in enumerate(combinations, start=1):
        trial = Trial(number, hyperparameters)
        started = time.monotonic()
        run = train(
            fit_split,
            holdout_split,
            channels,
            hyperparameters,
            seed=seed,
            on_epoch=lambda epoch, logs, trial=trial: on_epoch(trial, epoch, _as_holdout(logs)),
        )
        trial.history = _as_holdout(run.history)
        if trial.history.get("holdout_accuracy"):
            trial.holdout_loss = trial.history["holdout_loss"][-1]
            trial.holdout_accuracy = trial.history["holdout_accuracy"][-1]
        else:  # epochs 0: score the untrained model on the hold-out all the same
            trial.holdout_loss, trial.holdout_accuracy = evaluate_loss_accuracy(
                run.model, train_files, channels, select=held_out
            )
        trial.seconds = time.monotonic() - started
        trials.append(trial)
        if kept_trial is None or best([kept_trial, trial]) is trial:  # only the best model stays in memory
            kept, kept_trial = run, trial
    kept_trial.selected = True
    kept.history = kept_trial.history
    return kept, trials


def summary(trials: Sequence[Trial], holdout: Holdout) -> SweepRecord:
    """The sweep as recorded in the model's config: the grid, the hold-out, and the trial kept."""
    chosen = next(t for t in trials if t.selected)
    return SweepRecord(
        combinations=len(trials),
        learning_rate=sorted({t.hyperparameters.learning_rate for t in trials}),
        batch_size=sorted({t.hyperparameters.batch_size for t in trials}),
        epochs=sorted({t.hyperparameters.epochs for t in trials}),
        augment=list(dict.fromkeys(t.hyperparameters.augment for t in trials)),
        holdout_fraction=holdout.fraction,
        holdout_seed=holdout.seed,
        selected_trial=chosen.number,
        holdout_accuracy=chosen.holdout_accuracy,
    )
