"""The original project's named training configurations."""

from __future__ import annotations

from dataclasses import dataclass

# Minority classes weigh more, as in the original.
CLASS_WEIGHTS: dict[int, float] = {0: 1.0, 1: 4.0, 2: 4.0, 3: 6.0}
# Largest |Keras - onnxruntime| on a validation batch that an export may show and still be published.
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ModelConfiguration:
    name: str
    feature_set: str
    epochs: int
    register: bool
    description: str


CONFIGURATIONS: dict[str, ModelConfiguration] = {
    c.name: c
    for c in (
        ModelConfiguration("baseline", "baseline", 2, True, "The baseline CNN on B2,B3,B4,B5, 2 epochs, registered"),
        ModelConfiguration("useful", "baseline", 100, False, "The baseline CNN trained for 100 epochs"),
        ModelConfiguration("dummy", "baseline", 0, False, "An untrained model, still exported"),
        ModelConfiguration("ndvi", "ndvi", 2, False, "The baseline CNN on NDVI alone"),
    )
}
