"""Dihedral augmentation in the training input: each image shown as a random one of its 8 views (views.py)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from droughtwatch_assets.model.views import VIEWS, pixel_permutations


# XLA compiles the gather into one loop: about a third of the CPU time of TensorFlow's own gather kernel
@tf.function(jit_compile=True)
def dihedral(images: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """View k[i] of each image i: images [b, H, W, C] with H == W, k [b] int32 in 0..7. One gather per batch."""
    size, shape = images.shape[1], tf.shape(images)
    flat = tf.reshape(images, [shape[0], size * size, shape[3]])
    sources = tf.gather(tf.constant(pixel_permutations(size)), k)
    return tf.reshape(tf.gather(flat, sources, batch_dims=1), shape)


def random_views(
    batches: tf.data.Dataset, seed: int, parse: Callable = lambda batch, views: (dihedral(batch[0], views), batch[1])
) -> tf.data.Dataset:
    """parse(batch, views) -> (images, labels) for each batch, with image i shown as view views[i] of itself and the
    labels unchanged; by default the batches are (images, labels) already.

    The views are drawn per image, uniformly, from `seed`: the same seed gives the same views, and each pass
    over the dataset (each epoch) draws new ones. Parsing and turning share one map stage, and the training
    input's parse fuses the turn into its own copy of the pixels (train.ProcessedParser): a pass of its own
    costs as much as a plain copy of the batch.
    """
    # one key per batch, drawn anew every pass; a stateless draw from it gives each image of the batch its view
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def parse_and_turn(batch, key):
        draw_seed = tf.stack([key, tf.constant(seed, tf.int64)])
        views = tf.random.stateless_uniform(
            tf.shape(tf.nest.flatten(batch)[0])[:1], draw_seed, minval=0, maxval=VIEWS, dtype=tf.int32
        )
        return parse(batch, views)

    return tf.data.Dataset.zip(batches, keys).map(parse_and_turn, num_parallel_calls=tf.data.AUTOTUNE)
