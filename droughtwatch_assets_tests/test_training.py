import math

import numpy as np
import pytest
import tensorflow as tf

from droughtwatch_assets.core.configurations import Hyperparameters
from droughtwatch_assets.data.processing import process_shard
from droughtwatch_assets.model import train as training
from droughtwatch_assets.model.augment import dihedral, random_views
from droughtwatch_assets.records.tfrecord import (
    FILENAME_KEY,
    IMAGE_KEY,
    LABEL_KEY,
    encode_example,
    iter_records,
    read_processed,
)
from droughtwatch_assets.records.writer import RecordWriter, write_processed


def test_input_pipeline_keeps_images_and_labels_aligned(real_shard, tmp_path):
    process_shard(real_shard, tmp_path / "shard", ("B4", "NDVI"))
    expected = read_processed(tmp_path / "shard", 2)
    batches = list(training.tfrecord_dataset([tmp_path / "shard"], 2, batch_size=32, records=79))
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy().argmax(axis=1) for _, y in batches])
    np.testing.assert_array_equal(images, expected.images)
    np.testing.assert_array_equal(labels, expected.labels)
    shuffled = list(training.tfrecord_dataset([tmp_path / "shard"], 2, batch_size=79, shuffle_seed=1))
    order = [np.flatnonzero((expected.images == img).all(axis=(1, 2, 3)))[0] for img in shuffled[0][0].numpy()]
    assert sorted(order) == list(range(79)) and order != list(range(79))
    np.testing.assert_array_equal(shuffled[0][1].numpy().argmax(axis=1), expected.labels[order])


def serialised(image: np.ndarray, label: int, *, first: str = IMAGE_KEY, filename: str = "") -> bytes:
    """One processed record with its image or its label first, with or without a filename."""
    features = {IMAGE_KEY: image.astype("<f4").tobytes(), LABEL_KEY: label}
    if first == LABEL_KEY:
        features = {LABEL_KEY: label, IMAGE_KEY: features[IMAGE_KEY]}
    if filename:
        features[FILENAME_KEY] = filename.encode()
    return b"".join(bytes(part) for part in encode_example(features))


def test_processed_records_are_cut_from_their_bytes_and_any_other_layout_parses_alike(real_shard, tmp_path):
    process_shard(real_shard, tmp_path / "shard", ("B4", "NDVI"))
    written = [bytes(payload) for _, payload in iter_records(tmp_path / "shard")][:8]
    expected = read_processed(tmp_path / "shard", 2, limit=8)
    images, labels = expected.images, expected.labels
    parser = training.ProcessedParser(2)
    views = tf.range(8)
    turned = dihedral(tf.constant(images), views).numpy()
    batches = {  # name: (records, whether they have write_processed's layout)
        "as written, with filenames": (written, True),
        "no filenames": ([serialised(i, int(y)) for i, y in zip(images, labels)], True),
        "a long filename": ([serialised(i, int(y), filename="f" * 300) for i, y in zip(images, labels)], True),
        "the label first": ([serialised(i, int(y), first=LABEL_KEY) for i, y in zip(images, labels)], False),
        "one label first": ([serialised(images[0], int(labels[0]), first=LABEL_KEY), *written[1:]], False),
    }
    for name, (records, laid_out) in batches.items():
        batch = tf.constant(records)
        assert bool(parser.laid_out(batch)) is laid_out, name
        shown, one_hot = parser(batch)
        np.testing.assert_array_equal(shown.numpy(), images, err_msg=name)
        np.testing.assert_array_equal(one_hot.numpy(), np.eye(4)[labels], err_msg=name)
        np.testing.assert_array_equal(parser(batch, views)[0].numpy(), turned, err_msg=name)
    # a label of 128 or more takes two bytes: parsed as parse_example parses it (one-hot of nothing)
    wide = tf.constant([serialised(images[0], 200), *written[1:]])
    assert not bool(parser.laid_out(wide))
    np.testing.assert_array_equal(parser(wide)[1].numpy()[0], np.zeros(4))
    short = tf.constant([written[0][: len(written[0]) // 2]])  # zero-padded: goes to parse_example, which refuses it
    assert not bool(parser.laid_out(short))


def test_one_epoch_records_history(real_shard, tmp_path):
    process_shard(real_shard, tmp_path / "shard", ("B2", "B3", "B4", "B5"))
    epochs = []
    shard = training.SplitInput([tmp_path / "shard"], 79)
    run = training.train(
        shard, shard, 4, Hyperparameters(epochs=1, batch_size=32), on_epoch=lambda epoch, logs: epochs.append(epoch)
    )
    assert epochs == [0]
    assert set(run.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "pr_0", "re_3", "val_pr_2"}
    assert len(run.history["val_pr_2"][0]) == 99


def test_zero_epochs_gives_an_untrained_model(real_shard, tmp_path):
    process_shard(real_shard, tmp_path / "shard", ("NDVI",))
    shard = training.SplitInput([tmp_path / "shard"], 79)
    run = training.train(shard, shard, 1, Hyperparameters(epochs=0))
    assert run.history == {} and run.model.count_params() > 0


def test_only_the_training_side_is_augmented_with_views_drawn_from_the_training_seed(real_shard, tmp_path, monkeypatch):
    process_shard(real_shard, tmp_path / "shard", ("NDVI",))
    seeds = []

    def drawing(batches, seed, parse):
        seeds.append(seed)
        return random_views(batches, seed, parse)

    monkeypatch.setattr(training, "random_views", drawing)
    shard = training.SplitInput([tmp_path / "shard"], 79)
    run = training.train(shard, shard, 1, Hyperparameters(epochs=1, batch_size=64, augment="dihedral"), seed=3)
    assert seeds == [3] and len(run.history["val_loss"]) == 1


def test_training_weighs_each_class_by_its_weight_and_records_the_weights_it_fit_with(tmp_path):
    """Blank images leave the untrained network undecided (its biases start at 0): p = 1/4 for every class, so a
    record's loss is its class weight x ln 4, and the loss of the one batch (fit updates after it) is their mean."""
    labels = np.repeat([0, 1, 2, 3], [1, 2, 4, 8])  # a count per class, so that each weight shows apart
    with RecordWriter(tmp_path / "blank") as writer:
        write_processed(writer, np.zeros((15, 65, 65, 1), np.float32), labels, [f"r{i}" for i in range(15)])
    shard = training.SplitInput([tmp_path / "blank"], 15)
    run = training.train(shard, shard, 1, Hyperparameters(epochs=1, batch_size=15))
    # (1 x 1 + 2 x 4 + 4 x 4 + 8 x 6) / 15 = 73 / 15; exchanging any two unequal weights lowers the sum
    assert run.history["loss"][0] == pytest.approx(math.log(4) * 73 / 15, rel=1e-6)
    assert run.class_weights == {0: 1, 1: 4, 2: 4, 3: 6}
