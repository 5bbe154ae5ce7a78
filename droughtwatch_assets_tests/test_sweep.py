import numpy as np
import pytest

from droughtwatch_assets.core.configurations import Hyperparameters
from droughtwatch_assets.model.sweep import Trial, best, grid, holdout_mask


def test_grid_is_every_combination_in_a_stable_order_without_repeats():
    combinations = grid([1e-3, 1e-4, 1e-3], [64], [1, 2])
    assert combinations == [
        Hyperparameters(1e-3, 64, 1),
        Hyperparameters(1e-3, 64, 2),
        Hyperparameters(1e-4, 64, 1),
        Hyperparameters(1e-4, 64, 2),
    ]


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

    assert TrainingConfig().combinations() == [Hyperparameters(5e-4, 64, 2)]
    swept = TrainingConfig(epochs=3, sweep={"learning_rate": [1e-3, 1e-4]}).combinations()
    assert swept == [Hyperparameters(1e-3, 64, 3), Hyperparameters(1e-4, 64, 3)]
