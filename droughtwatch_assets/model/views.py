"""The 8 dihedral views of a square image: its quarter turns, and those of its mirror image.

View k (0..7) turns the image k % 4 quarter turns counter-clockwise (np.rot90), then mirrors it left-right when
k >= 4. Each view is a permutation of the pixels (no interpolation), and the label stays the same: a field seen
from above is the same field turned or mirrored. numpy only: evaluation uses it in steps that never load TensorFlow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

VIEWS = 8


def view(images: np.ndarray, k: int) -> np.ndarray:
    """View k of images [..., H, W, C] (a view of the array, not a copy)."""
    turned = np.rot90(images, k % 4, axes=(-3, -2))
    return np.flip(turned, axis=-2) if k >= 4 else turned


@functools.cache
def pixel_permutations(size: int) -> np.ndarray:
    """[8, size * size] int32: row k gives, for each pixel of view k in row-major order, the input pixel it shows."""
    pixels = np.arange(size * size, dtype=np.int32).reshape(size, size, 1)
    return np.stack([view(pixels, k).reshape(-1) for k in range(VIEWS)])


def average_over_views(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, plain: np.ndarray | None = None
) -> np.ndarray:
    """Test-time augmentation: the mean of predict(view) over the 8 views of images [b, H, W, C]. `plain`:
    predict(images) when the caller has it already (view 0 is the images themselves)."""
    first = predict(np.ascontiguousarray(images)) if plain is None else plain
    return np.mean([first, *(predict(np.ascontiguousarray(view(images, k))) for k in range(1, VIEWS))], axis=0)
