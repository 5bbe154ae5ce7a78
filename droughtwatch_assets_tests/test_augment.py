import numpy as np
import pytest
import tensorflow as tf

from droughtwatch_assets.data.processing import process_shard
from droughtwatch_assets.model.augment import dihedral, random_views
from droughtwatch_assets.model.train import tfrecord_dataset
from droughtwatch_assets.model.views import VIEWS
from droughtwatch_assets.records.tfrecord import read_processed


def rot90_then_mirror(image: np.ndarray, k: int) -> np.ndarray:
    """View k of one [H, W, C] image, written with numpy's own rotation and flip."""
    turned = np.rot90(image, k % 4)
    return np.fliplr(turned) if k >= 4 else turned


def views_of(image: np.ndarray) -> np.ndarray:
    return np.stack([rot90_then_mirror(image, k) for k in range(VIEWS)])


def drawn_views(dataset, image: np.ndarray) -> list[int]:
    """Which view of `image` each image of the dataset is, in order."""
    views = views_of(image)
    return [
        int(np.flatnonzero((views == shown).all(axis=(1, 2, 3)))[0])
        for images, _ in dataset
        for shown in images.numpy()
    ]


def test_each_view_is_an_exact_permutation_of_the_pixels_as_numpy_rotates_and_flips():
    images = np.random.default_rng(0).random((VIEWS, 65, 65, 3), dtype=np.float32)
    shown = dihedral(tf.constant(images), tf.range(VIEWS)).numpy()
    for k in range(VIEWS):
        np.testing.assert_array_equal(shown[k], rot90_then_mirror(images[k], k))
        for channel in range(3):  # the same pixel values, only moved
            np.testing.assert_array_equal(
                np.sort(shown[k, ..., channel], axis=None), np.sort(images[k, ..., channel], axis=None)
            )


def test_the_eight_views_of_an_asymmetric_image_are_all_different():
    image = np.arange(5 * 5 * 2, dtype=np.float32).reshape(1, 5, 5, 2)
    shown = dihedral(tf.constant(np.repeat(image, VIEWS, axis=0)), tf.range(VIEWS)).numpy()
    assert len({view.tobytes() for view in shown}) == VIEWS


def test_the_views_drawn_are_uniform_over_many_draws_and_the_labels_unchanged():
    records = 8000
    image = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    labels = np.arange(records) % 4
    batches = tf.data.Dataset.from_tensor_slices((np.repeat(image[None], records, axis=0), labels)).batch(64)
    augmented = random_views(batches, seed=0)
    counts = np.bincount(drawn_views(augmented, image), minlength=VIEWS)
    expected = records / VIEWS
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert counts.sum() == records and chi_square < 24.32  # the 0.1 % tail of chi-square with 7 degrees of freedom
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in augmented]), labels)


def test_the_same_seed_draws_the_same_views_and_every_epoch_new_ones():
    image = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    batches = tf.data.Dataset.from_tensor_slices((np.repeat(image[None], 256, axis=0), np.zeros(256))).batch(32)
    first, again, other = random_views(batches, 7), random_views(batches, 7), random_views(batches, 8)
    epochs = [drawn_views(first, image), drawn_views(first, image)]
    assert epochs == [drawn_views(again, image), drawn_views(again, image)]
    assert epochs[0] != epochs[1]
    assert drawn_views(other, image) != epochs[0]


def test_the_training_input_shows_each_record_as_one_of_its_views_with_its_label(real_shard, tmp_path):
    process_shard(real_shard, tmp_path / "shard", ("B4", "NDVI"))
    expected = read_processed(tmp_path / "shard", 2)
    dataset = tfrecord_dataset([tmp_path / "shard"], 2, batch_size=32, shuffle_seed=0, records=79, augment="dihedral")
    views = np.stack([views_of(image) for image in expected.images])  # [record, k, 65, 65, 2]
    shown_views = []
    for images, labels in dataset:
        for image, label in zip(images.numpy(), labels.numpy().argmax(axis=1)):
            record, k = np.argwhere((views == image).all(axis=(2, 3, 4)))[0]
            assert label == expected.labels[record]
            shown_views.append(k)
    assert len(shown_views) == 79 and len(set(shown_views)) > 1


def test_augmenting_without_a_shuffle_seed_is_refused(tmp_path):
    with pytest.raises(ValueError, match="draws from the shuffle seed"):
        tfrecord_dataset([tmp_path / "shard"], 2, batch_size=32, augment="dihedral")
