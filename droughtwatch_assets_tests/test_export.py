import keras
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from droughtwatch_assets.model import export
from droughtwatch_assets.model import network as model
from droughtwatch_assets_tests.conftest import model_config


def test_untrained_model_exports_and_agrees_with_keras(tmp_path):
    keras_model = model.build_model(3, seed=0)
    info = export.export_onnx(keras_model, tmp_path / "model.onnx")
    assert info.input_name == "input" and info.input_shape[1:] == [65, 65, 3]
    assert info.opset >= 13 and info.size_bytes > 100_000
    images = np.random.default_rng(0).random((16, 65, 65, 3), dtype=np.float32)
    assert export.parity_max_abs_diff(keras_model, tmp_path / "model.onnx", images) <= 1e-5


def test_the_exported_model_carries_its_config(tmp_path):
    from droughtwatch_assets.core.model_config import embedded_config

    keras_model = model.build_model(4, seed=0)
    export.export_onnx(keras_model, tmp_path / "model.onnx")
    assert embedded_config(tmp_path / "model.onnx") is None
    config = model_config()
    export.embed_config(tmp_path / "model.onnx", config)
    assert embedded_config(tmp_path / "model.onnx") == config
    images = np.random.default_rng(0).random((4, 65, 65, 4), dtype=np.float32)
    assert export.parity_max_abs_diff(keras_model, tmp_path / "model.onnx", images) <= 1e-5


def shifted(path, shift: list[float], target) -> None:
    """The ONNX model at path with `shift` added to its output probabilities, class by class."""
    graph_model = onnx.load(path)
    graph = graph_model.graph
    output = graph.output[0].name
    graph.initializer.append(numpy_helper.from_array(np.array(shift, np.float32), "shift"))
    graph.node.append(helper.make_node("Add", [output, "shift"], ["shifted"]))
    graph.output[0].name = "shifted"
    onnx.save(graph_model, target)


def test_parity_is_the_largest_absolute_difference_over_the_batch_and_the_classes(tmp_path):
    inputs = keras.Input((65, 65, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    keras_model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(pooled))
    export.export_onnx(keras_model, tmp_path / "model.onnx")
    images = np.random.default_rng(0).random((8, 65, 65, 3), dtype=np.float32)
    assert export.parity_max_abs_diff(keras_model, tmp_path / "model.onnx", images) <= 1e-6
    # every probability moved by 1e-3, 3e-3, 0 or 2e-3: the largest move is 3e-3 (the mean one 1.5e-3)
    shifted(tmp_path / "model.onnx", [1e-3, -3e-3, 0.0, 2e-3], tmp_path / "shifted.onnx")
    diff = export.parity_max_abs_diff(keras_model, tmp_path / "shifted.onnx", images)
    assert diff == pytest.approx(3e-3, abs=1e-6)
    assert export.parity_max_abs_diff(keras_model, tmp_path / "shifted.onnx", images[:0]) == 0
