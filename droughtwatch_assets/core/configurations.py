"""The original project's named training configurations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# Minority classes weigh more, as in the original.
CLASS_WEIGHTS: dict[int, float] = {0: 1.0, 1: 4.0, 2: 4.0, 3: 6.0}
# Largest |Keras - onnxruntime| on a validation batch that an export may show and still be published.
PARITY_TOLERANCE = 1e-5


def parity_problem(max_abs_diff: float) -> str | None:
    """What is wrong with an ONNX export that differs from Keras by max_abs_diff, or None if it may be published.
    The one place the tolerance is checked: a NaN difference fails too."""
    if max_abs_diff <= PARITY_TOLERANCE:
        return None
    return f"ONNX/Keras max abs diff {max_abs_diff} > {PARITY_TOLERANCE}"


# The run tag that names the configuration a job trains.
CONFIGURATION_TAG = "droughtwatch/configuration"
# Training-time augmentation: none, as in the original, or a random flip or quarter turn of each image.
Augment = Literal["none", "dihedral"]
AUGMENTS: tuple[str, ...] = get_args(Augment)


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float = 5e-4
    batch_size: int = 64
    epochs: int = 2  # 0 gives the untrained model (the original's 'dummy')
    augment: Augment = "none"


@dataclass(frozen=True)
class ModelConfiguration:
    name: str
    feature_set: str
    epochs: int
    register: bool
    description: str
    augment: Augment = "none"


CONFIGURATIONS: dict[str, ModelConfiguration] = {
    c.name: c
    for c in (
        ModelConfiguration("baseline", "baseline", 2, True, "The baseline CNN on B2,B3,B4,B5, 2 epochs, registered"),
        ModelConfiguration("useful", "baseline", 100, False, "The baseline CNN trained for 100 epochs"),
        ModelConfiguration("dummy", "baseline", 0, False, "An untrained model, still exported"),
        ModelConfiguration("ndvi", "ndvi", 2, False, "The baseline CNN on NDVI alone"),
    )
}


def jobs_for(feature_set: str) -> list[str]:
    return [f"{c.name}_job" for c in CONFIGURATIONS.values() if c.feature_set == feature_set]


def configuration_mismatch(configuration: str | None, model_name: str | None, feature_set: str) -> str | None:
    """Why a run must not train (or publish) `model_name` on `feature_set`, or None when it may.

    A named configuration trains one feature set, and its model name stands for that set in the registry:
    a configuration job launched on another partition, or a model named after a configuration but trained
    on other features, would publish a model whose inputs are not what its readers expect.
    """
    others = ", ".join(jobs_for(feature_set)) or "no configuration job; use `dagster asset materialize`"
    if configuration in CONFIGURATIONS and CONFIGURATIONS[configuration].feature_set != feature_set:
        expected = CONFIGURATIONS[configuration].feature_set
        return (
            f"{configuration}_job trains the '{expected}' feature set, but this run was launched for partition "
            f"'{feature_set}'. Launch {configuration}_job for partition '{expected}' (for '{feature_set}': "
            f"{others})"
        )
    if model_name in CONFIGURATIONS and CONFIGURATIONS[model_name].feature_set != feature_set:
        expected = CONFIGURATIONS[model_name].feature_set
        return (
            f"model_name '{model_name}' is the registered name of the {model_name} configuration, which trains "
            f"the '{expected}' feature set; this run trains '{feature_set}'. Launch it for partition "
            f"'{expected}', or choose another model_name"
        )
    return None
