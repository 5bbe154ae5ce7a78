import numpy as np
import pytest

from droughtwatch_assets.core.configurations import Hyperparameters
from droughtwatch_assets.model.sweep import Trial, best, grid, holdout_mask


def test_grid_is_every_combination_in_a_stable_order_without_repeats():
    combinations = grid([1e-3, 1e-4, 1e-3], [64], [1, 2], ["none", "dihedral", "none"])
    assert combinations == [
        Hyperparameters(1e-3, 64, 1, "none"),
        Hyperparameters(1e-3, 64, 1, "dihedral"),
        Hyperparameters(1e-3, 64, 2, "none"),
        Hyperparameters(1e-3, 64, 2, "dihedral"),
        Hyperparameters(1e-4, 64, 1, "none"),
        Hyperparameters(1e-4, 64, 1, "dihedral"),
        Hyperparameters(1e-4, 64, 2, "none"),
        Hyperparameters(1e-4, 64, 2, "dihedral"),
    ]
    assert grid([1e-3], [64], [1]) == [Hyperparameters(1e-3, 64, 1, "none")]


def test_the_holdout_is_the_same_for_the_same_seed_and_another_for_another_seed():
    first, again, other = holdout_mask(1000, 0.2, 0), holdout_mask(1000, 0.2, 0), holdout_mask(1000, 0.2, 1)
    assert first.sum() == 200 and (first == again).all() and not (first == other).all()
    assert first.dtype == np.bool_ and first.shape == (1000,)


@pytest.mark.parametrize(("records", "fraction"), [(1, 0.5), (10, 0.01), (10, 0.99), (10, 0.0), (10, 1.0)])
def test_a_holdout_that_leaves_a_side_empty_is_refused(records, fraction):
    with pytest.raises(ValueError, match=r"holdout_fraction|leaves one side empty"):
        holdout_mask(records, fraction, 0)


def test_best_is_the_highest_holdout_accuracy_then_the_lowest_loss_then_the_first():
    def trial(number, accuracy, loss):
        return Trial(number, Hyperparameters(1e-3, 64, number), holdout_accuracy=accuracy, holdout_loss=loss)

    assert best([trial(1, 0.5, 1.0), trial(2, 0.7, 1.2), trial(3, 0.6, 0.1)]).number == 2
    assert best([trial(1, 0.7, 1.0), trial(2, 0.7, 0.9)]).number == 2
    assert best([trial(1, 0.7, 1.0), trial(2, 0.7, 1.0)]).number == 1


def test_the_default_training_config_is_a_single_combination():
    from droughtwatch_assets.defs.assets.trained_model import TrainingConfig

    assert TrainingConfig().combinations() == [Hyperparameters(5e-4, 64, 2, "none")]
    swept = TrainingConfig(epochs=3, augment="dihedral", sweep={"learning_rate": [1e-3, 1e-4]}).combinations()
    assert swept == [Hyperparameters(1e-3, 64, 3, "dihedral"), Hyperparameters(1e-4, 64, 3, "dihedral")]


def test_augment_is_a_sweep_dimension_and_only_the_known_augmentations_are_accepted():
    from pydantic import ValidationError

    from droughtwatch_assets.defs.assets.trained_model import SweepConfig, TrainingConfig

    swept = TrainingConfig(sweep={"augment": ["none", "dihedral"]}).combinations()
    assert [c.augment for c in swept] == ["none", "dihedral"]
    with pytest.raises(ValidationError, match=r"sweep augment \['mirror'\]: each must be one of none, dihedral"):
        SweepConfig(augment=["none", "mirror"])


def test_a_sweep_over_augment_trains_each_and_records_it_in_the_trials_the_summary_and_the_tracker(monkeypatch):
    from droughtwatch_assets.dagster_support.metadata import sweep_table
    from droughtwatch_assets.model import train
    from droughtwatch_assets.model.sweep import Holdout, run_sweep, summary
    from droughtwatch_assets.tracking.base import Tracker

    trained = []

    def fit(fit_split, holdout_split, channels, hyperparameters, *, seed, on_epoch):
        trained.append(hyperparameters.augment)
        accuracy = 0.6 if hyperparameters.augment == "dihedral" else 0.5
        return train.TrainingRun(model=None, history={"val_loss": [1.0], "val_accuracy": [accuracy]})

    monkeypatch.setattr(train, "train", fit)
    combinations = grid([5e-4], [32], [1], ["none", "dihedral"])
    _, trials = run_sweep(["unread"], 79, 1, combinations, Holdout(0.2, 0), seed=0)
    assert trained == ["none", "dihedral"]
    assert [t.row()["augment"] for t in trials] == ["none", "dihedral"] and trials[1].selected
    columns = [column.name for column in sweep_table(trials).schema.columns]
    assert columns[:5] == ["trial", "learning_rate", "batch_size", "epochs", "augment"]
    record = summary(trials, Holdout(0.2, 0))
    assert record.augment == ["none", "dihedral"] and record.selected_trial == 2

    class Recording(Tracker):
        def __init__(self):
            self.trials, self.params = [], {}

        def log_trial(self, name, params, history, selected):
            self.trials.append(params)

        def log_params(self, params):
            self.params.update(params)

    tracker = Recording()
    tracker.log_sweep("ndvi", trials, {"seed": 0}, {"val_accuracy": 0.5})
    assert [params["augment"] for params in tracker.trials] == ["none", "dihedral"]
    assert tracker.params["augment"] == "dihedral"


def test_a_config_written_before_augmentation_still_reads_as_trained_without_it():
    import yaml

    from droughtwatch_assets.core.model_config import ModelConfig
    from droughtwatch_assets_tests.conftest import model_config

    sweep = {
        "combinations": 2,
        "learning_rate": [1e-3, 1e-4],
        "batch_size": [64],
        "epochs": [2],
        "holdout_fraction": 0.2,
        "holdout_seed": 0,
        "selected_trial": 1,
        "holdout_accuracy": 0.7,
    }
    earlier = model_config().model_dump(mode="json", exclude_none=True)
    del earlier["augment"]
    config = ModelConfig.from_yaml(yaml.safe_dump({**earlier, "sweep": sweep}), "an earlier config")
    assert config.augment == "none" and config.sweep.augment == ["none"]
    assert model_config(augment="dihedral").to_yaml().count("augment: dihedral") == 1
