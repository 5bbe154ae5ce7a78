import keras
import numpy as np

from droughtwatch_assets.model import network as model


def test_baseline_cnn_has_the_original_size():
    assert model.build_model(4).count_params() == 257_022


def test_metrics_are_named_and_thresholded_as_the_original():
    names = [m.name for m in model.class_metrics()]
    assert names == ["pr_0", "re_0", "pr_1", "re_1", "pr_2", "re_2", "pr_3", "re_3"]
    assert model.PR_THRESHOLDS[0] == 0.0 and model.PR_THRESHOLDS[-1] == 0.98 and len(model.PR_THRESHOLDS) == 99


def test_compiled_model_outputs_probabilities():
    m = model.compile_model(model.build_model(1, seed=0), 5e-4)
    out = m.predict(np.zeros((2, 65, 65, 1), np.float32), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-6)
    assert isinstance(m.optimizer, keras.optimizers.Adam)
