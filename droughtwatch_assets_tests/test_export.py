import numpy as np

from droughtwatch_assets.core.configurations import PARITY_TOLERANCE
from droughtwatch_assets.model import export
from droughtwatch_assets.model import network as model
from droughtwatch_assets_tests.conftest import model_config


def test_untrained_model_exports_and_agrees_with_keras(tmp_path):
    keras_model = model.build_model(3, seed=0)
    info = export.export_onnx(keras_model, tmp_path / "model.onnx")
    assert info.input_name == "input" and info.input_shape[1:] == [65, 65, 3]
    assert info.opset >= 13 and info.size_bytes > 100_000
    images = np.random.default_rng(0).random((16, 65, 65, 3), dtype=np.float32)
    assert export.parity_max_abs_diff(keras_model, tmp_path / "model.onnx", images) <= PARITY_TOLERANCE


def test_the_exported_model_carries_its_config(tmp_path):
    from droughtwatch_assets.core.model_config import embedded_config

    keras_model = model.build_model(4, seed=0)
    export.export_onnx(keras_model, tmp_path / "model.onnx")
    assert embedded_config(tmp_path / "model.onnx") is None
    config = model_config()
    export.embed_config(tmp_path / "model.onnx", config)
    assert embedded_config(tmp_path / "model.onnx") == config
    images = np.random.default_rng(0).random((4, 65, 65, 4), dtype=np.float32)
    assert export.parity_max_abs_diff(keras_model, tmp_path / "model.onnx", images) <= PARITY_TOLERANCE
