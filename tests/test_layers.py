"""The Keras layers against numpy references: WBMM (forward, gradient, training, saving,
config, odd sizes, rank <= 4 inside), GRN, SqueezeExcite, LayerScale; plus the core's
depthwise_conv2d against TensorFlow's SAME/VALID rules (the converters rely on it).

Float32 tolerance: the layer's sums have at most d = 49 terms of O(1) numbers, so
float32 rounding stays below ~1e-6 relative to the largest output; ``rtol=atol=1e-5``
leaves a 10x margin and still catches any wrong tap (an O(0.1) error).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from wbmm_mobile import core
from wbmm_mobile.layers import GRN, WBMM, LayerScale, SqueezeExcite

F32 = dict(rtol=1e-5, atol=1e-5)
# Keras's own .keras saving calls np.array(variable) the numpy-2 deprecated way; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")


def _wbmm_with_weights(window, channels, rng, use_shortcut=True, use_bias=False, height=None, width=None):
    layer = WBMM(window, use_shortcut=use_shortcut, use_bias=use_bias)
    layer.build((None, height, width, channels))
    layer.table.assign(rng.normal(scale=0.3, size=tuple(layer.table.shape)).astype("float32"))
    if use_bias:
        layer.bias.assign(rng.normal(size=channels).astype("float32"))
    return layer


def _reference(layer, x):
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else None
    return core.wbmm_forward(np.float64(x), layer.table.numpy().astype(np.float64), layer.window,
                             shortcut=layer.use_shortcut, bias=bias)


@pytest.mark.parametrize("shape, window, use_shortcut, use_bias", [
    ((2, 14, 14, 3), 7, True, False),          # divisible
    ((2, 15, 10, 3), 7, True, True),           # pad 6 rows and 4 columns, then crop
    ((1, 9, 11, 2), (3, 5), False, True),      # non-square window, both sides padded
    ((1, 5, 3, 2), (5, 3), True, False),       # a single non-square window
    ((3, 2, 2, 1), 3, False, False),           # map smaller than the window
])
def test_wbmm_layer_matches_numpy_reference(shape, window, use_shortcut, use_bias):
    rng = np.random.default_rng(1)
    layer = _wbmm_with_weights(window, shape[-1], rng, use_shortcut, use_bias)
    x = rng.normal(size=shape).astype("float32")
    out = np.asarray(layer(x))
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(layer, x), **F32)
    assert tuple(layer.table.shape) == (shape[-1], core.table_size(window))
    assert layer.window == core.as_window(window)
    assert (layer.bias is not None) == use_bias


def test_wbmm_layer_weights_and_refusals():
    layer = WBMM((3, 5), use_bias=True)
    layer.build((None, 6, 10, 4))
    assert [w.path.split("/")[-1] for w in layer.trainable_weights] == ["table", "bias"]
    assert tuple(layer.table.shape) == (4, 5 * 9)
    with pytest.raises(ValueError):
        WBMM(0)
    with pytest.raises(ValueError):
        WBMM(3).build((None, 8, 8, None))
    with pytest.raises(ValueError):
        WBMM(3).build((None, 8, 8))


def test_wbmm_gradient_reaches_the_table():
    """dL/dR[c, t] = sum over windows and (i, j) with I[i, j] = t of X[n, i, c] * dL/dY[n, j, c]."""
    rng = np.random.default_rng(2)
    window = (2, 3)
    layer = _wbmm_with_weights(window, 2, rng)
    x = rng.normal(size=(2, 4, 5, 2)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * upstream)
    grad = tape.gradient(loss, layer.table)
    assert grad is not None
    xw = core.partition(core.pad_to_window(np.float64(x), window), window)          # (N, d, C)
    gw = core.partition(core.pad_to_window(np.float64(upstream), window), window)
    pair = np.einsum("nic,njc->cij", xw, gw)
    expected = np.zeros(tuple(layer.table.shape))
    np.add.at(expected, (slice(None), core.relative_position_index(window)), pair)
    np.testing.assert_allclose(np.asarray(grad), expected, **F32)
    assert np.abs(expected).max() > 0.1


def test_wbmm_trains():
    """A few Adam steps pull a fresh layer towards a teacher WBMM: the loss must drop 4x."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    teacher = _wbmm_with_weights(4, 3, rng, use_shortcut=True, use_bias=True)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.asarray(teacher(x))
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, WBMM(4, use_bias=True)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    after = float(model.evaluate(x, y, verbose=0))
    assert after < before / 4, (before, after)


def _small_model(rng):
    inputs = keras.Input((15, 10, 4))
    wbmm = WBMM(7, use_bias=True, name="wbmm")
    x = wbmm(inputs)
    x = SqueezeExcite(name="se")(x)
    x = GRN(name="grn")(x)
    x = LayerScale(0.5, name="scale")(x)
    x = WBMM((3, 5), use_shortcut=False, name="wbmm_3x5")(x)
    model = keras.Model(inputs, x)
    for weight in model.weights:       # move every weight off its (often trivial) init
        weight.assign(rng.normal(scale=0.3, size=tuple(weight.shape)).astype("float32"))
    return model


def test_keras_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    model = _small_model(rng)
    x = rng.normal(size=(3, 15, 10, 4)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert loaded.get_layer("wbmm_3x5").window == (3, 5)
    assert loaded.get_layer("wbmm_3x5").use_shortcut is False
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_get_config_round_trip():
    layer = WBMM((3, 5), use_shortcut=False, use_bias=True, table_regularizer="l2", name="w")
    config = layer.get_config()
    clone = WBMM.from_config(config)
    assert clone.window == (3, 5) and clone.use_shortcut is False and clone.use_bias is True
    assert clone.get_config() == config
    for cls, kwargs, attr in ((GRN, {"epsilon": 1e-3}, "epsilon"), (SqueezeExcite, {"reduction": 2}, "reduction"),
                              (LayerScale, {"init_value": 0.25}, "init_value")):
        original = cls(**kwargs)
        assert getattr(cls.from_config(original.get_config()), attr) == kwargs[attr]


def test_dynamic_batch_and_spatial_size():
    rng = np.random.default_rng(5)
    layer = _wbmm_with_weights((3, 5), 2, rng, use_bias=True)
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, layer(inputs))
    for shape in ((1, 7, 8, 2), (4, 6, 10, 2), (2, 1, 1, 2)):
        x = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(np.asarray(model(x)), _reference(layer, x), **F32)
    # Static H, W with an unknown batch: the traced graph keeps the batch dimension free.
    fn = tf.function(lambda t: layer(t), input_signature=[tf.TensorSpec((None, 15, 10, 2), tf.float32)])
    for batch in (1, 3):
        x = rng.normal(size=(batch, 15, 10, 2)).astype("float32")
        np.testing.assert_allclose(np.asarray(fn(x)), _reference(layer, x), **F32)


def test_wbmm_graph_uses_tensors_of_rank_at_most_4():
    """NNAPI's TRANSPOSE stops at rank 4; the layer's own graph never needs more."""
    layer = _wbmm_with_weights(7, 3, np.random.default_rng(6), use_bias=True)
    fn = tf.function(lambda t: layer(t), input_signature=[tf.TensorSpec((1, 15, 10, 3), tf.float32)])
    graph = fn.get_concrete_function().graph
    ranks = [out.shape.rank for op in graph.get_operations() for out in op.outputs if out.shape.rank is not None]
    assert ranks and max(ranks) <= 4
    assert any(op.type in ("BatchMatMulV2", "BatchMatMulV3") for op in graph.get_operations())


# ---------------------------------------------------------------- the small layers


def test_grn_matches_formula():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 4, 6)).astype("float32")
    layer = GRN()
    layer.build(x.shape)
    gamma, beta = rng.normal(size=6), rng.normal(size=6)
    layer.gamma.assign(gamma.astype("float32"))
    layer.beta.assign(beta.astype("float32"))
    x64 = np.float64(x)
    g = np.sqrt((x64 ** 2).sum(axis=(1, 2), keepdims=True))                # L2 over H, W per channel
    n = g / (g.mean(axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(layer(x)), (np.float32(gamma) * n + 1) * x64 + np.float32(beta), **F32)
    fresh = GRN()
    np.testing.assert_array_equal(np.asarray(fresh(x)), x)                 # zero init = identity


def test_squeeze_excite_matches_formula():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 3, 4, 8)).astype("float32")
    layer = SqueezeExcite()
    layer.build(x.shape)
    assert tuple(layer.reduce_kernel.shape) == (8, 2) and tuple(layer.expand_kernel.shape) == (2, 8)
    w1, b1, w2, b2 = (rng.normal(size=tuple(v.shape)) for v in
                      (layer.reduce_kernel, layer.reduce_bias, layer.expand_kernel, layer.expand_bias))
    for var, value in zip((layer.reduce_kernel, layer.reduce_bias, layer.expand_kernel, layer.expand_bias),
                          (w1, b1, w2, b2)):
        var.assign(value.astype("float32"))
    w1, b1, w2, b2 = (np.float64(np.float32(v)) for v in (w1, b1, w2, b2))
    pooled = np.float64(x).mean(axis=(1, 2))
    gate = 1 / (1 + np.exp(-(np.maximum(pooled @ w1 + b1, 0) @ w2 + b2)))
    np.testing.assert_allclose(np.asarray(layer(x)), np.float64(x) * gate[:, None, None, :], **F32)


def test_layer_scale_starts_at_1e_minus_6():
    x = np.ones((1, 2, 2, 3), "float32")
    layer = LayerScale()
    np.testing.assert_allclose(np.asarray(layer(x)), np.full(x.shape, 1e-6), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- core.depthwise_conv2d vs TF


@pytest.mark.parametrize("size, kernel, strides, padding", [
    ((9, 8), (3, 3), (1, 1), "same"), ((9, 8), (13, 13), (1, 1), "same"), ((10, 7), (4, 5), (1, 1), "same"),
    ((9, 8), (3, 3), (2, 2), "same"), ((10, 11), (5, 4), (2, 2), "same"), ((9, 8), (3, 5), (1, 1), "valid"),
    ((12, 9), (3, 3), (2, 2), "valid"),
])
def test_core_depthwise_conv2d_follows_tensorflow(size, kernel, strides, padding):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, *size, 3))
    k = rng.normal(size=(*kernel, 3))
    expected = tf.nn.depthwise_conv2d(x, k[:, :, :, None], strides=(1, *strides, 1), padding=padding.upper())
    np.testing.assert_allclose(core.depthwise_conv2d(x, k, padding, strides=strides), expected.numpy(),
                               rtol=1e-10, atol=1e-10)
