"""Whole models through rewrite_model: several layers with mixed decisions, a resizable batch."""

import functools

import numpy as np
import pytest

from converters import tflite_io, verify
from converters.rewrite import RewriteOptions, rewrite_model


@functools.lru_cache(maxsize=None)
def small_net(batch_size=1) -> bytes:
    """Stem conv, a 7x7 depthwise (rewritten), a 3x3 depthwise (too small), a 9x9 stride-2
    depthwise (refused), a grouped 7x7 Conv2D (rewritten), a dense head."""
    import keras
    from converters.keras_convert import to_tflite

    keras.utils.set_random_seed(3)
    x = inputs = keras.Input((16, 16, 3), batch_size=batch_size)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(7, padding="same", bias_initializer="random_normal")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(9, strides=2, padding="same")(x)
    x = keras.layers.Conv2D(8, 7, padding="same", groups=8, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    return to_tflite(keras.Model(inputs, outputs))


@pytest.mark.parametrize("strategy", ["split", "halo"])
def test_every_depthwise_layer_is_reported(strategy):
    result = rewrite_model(small_net(), RewriteOptions(strategy=strategy))
    layers = {layer.kernel: layer for layer in result.report.layers}
    assert set(layers) == {"7x7", "3x3", "9x9"} and len(result.report.layers) == 4
    rewritten = [layer for layer in result.report.layers if layer.rewritten]
    assert [layer.op for layer in rewritten] == ["DEPTHWISE_CONV_2D", "CONV_2D"]
    assert all(layer.strategy == strategy for layer in rewritten)
    assert "below --min-kernel" in layers["3x3"].reason and "stride 2x2" in layers["9x9"].reason
    ops = tflite_io.op_names(tflite_io.load_model(result.model))
    assert ops.count("CONV_2D") == 1                                   # only the stem is left
    assert result.report.verification["passed"] and result.report.verification["max_rel"] <= 1e-4
    inputs = verify.random_inputs(small_net(), 11)
    np.testing.assert_allclose(verify.run_tflite(result.model, inputs, kernels="cpu")[0],
                               verify.run_tflite(small_net(), inputs, kernels="cpu")[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["split", "halo"])
def test_dynamic_batch_survives_the_rewrite(strategy):
    original = small_net(batch_size=None)
    graph = tflite_io.load_model(original).subgraphs[0]
    assert int(graph.tensors[int(graph.inputs[0])].shapeSignature[0]) == -1
    result = rewrite_model(original, RewriteOptions(strategy=strategy))
    assert result.report.rewritten_count == 2
    batch3 = [np.random.default_rng(2).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)]
    expected = verify.run_tflite(original, batch3, kernels="cpu")[0]
    got = verify.run_tflite(result.model, batch3, kernels="cpu")[0]
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_nothing_to_rewrite_returns_the_input_unchanged():
    data = small_net()
    result = rewrite_model(data, RewriteOptions(min_kernel=99))
    assert result.model == data and result.report.rewritten_count == 0
    assert all("below --min-kernel 99" in layer.reason for layer in result.report.layers)
