import numpy as np

from droughtwatch_assets.model.views import VIEWS, average_over_views, pixel_permutations, view


def test_each_view_moves_every_pixel_to_one_place_as_numpy_rotates_and_flips():
    image = np.arange(7 * 7 * 2).reshape(7, 7, 2)
    for k, permutation in enumerate(pixel_permutations(7)):
        np.testing.assert_array_equal(np.sort(permutation), np.arange(7 * 7))
        turned = np.rot90(image, k % 4)
        expected = np.fliplr(turned) if k >= 4 else turned
        np.testing.assert_array_equal(view(image, k), expected)
        np.testing.assert_array_equal(image.reshape(-1, 2)[permutation].reshape(7, 7, 2), expected)


def test_test_time_augmentation_averages_the_predictions_of_the_eight_views():
    images = np.random.default_rng(1).random((3, 4, 4, 2), dtype=np.float32)
    seen = []

    def predict(batch):
        seen.append(batch)
        return batch.reshape(len(batch), -1)[:, :5] * 2

    averaged = average_over_views(predict, images)
    views = np.stack([view(images, k) for k in range(VIEWS)])  # [k, image, 4, 4, 2]
    np.testing.assert_array_equal(np.stack(seen), views)
    assert all(batch.flags.c_contiguous for batch in seen)  # what onnxruntime reads
    np.testing.assert_allclose(averaged, (views.reshape(VIEWS, 3, -1)[:, :, :5] * 2).mean(axis=0), rtol=1e-6)
