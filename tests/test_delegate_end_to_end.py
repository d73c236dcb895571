"""End to end: models from the converter (issue 2) and the rewriter (issue 3) run on the delegate.

Keras WBMM layers -> ``convert_keras(lowering="custom")`` -> CUSTOM ``WBMM`` ops; a stock
.tflite with large depthwise convs -> ``rewrite_model(strategy="custom")`` ->
``WBMM_DEPTHWISE`` ops. Both need the delegate to run at all; outputs are compared with
Keras / the original model with explicit tolerances, and the node list must show the
delegate took every custom op.
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import delegates

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")


def _run(tflite: bytes, x: np.ndarray, delegate=None, resolver=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
    interpreter = Interpreter(model_content=tflite, experimental_op_resolver_type=resolver,
                              experimental_delegates=[delegate] if delegate is not None else None)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), interpreter


def _two_wbmm_model():
    """WBMM(7, shortcut) -> GELU -> WBMM((5, 3), bias) on a 20x17 map (not a multiple of either window)."""
    from wbmm_mobile.layers import WBMM

    keras.utils.set_random_seed(4)
    inp = keras.Input((20, 17, 12), batch_size=1)
    y = WBMM(7, use_shortcut=True, table_initializer="random_normal")(inp)
    y = keras.layers.Activation("gelu")(y)
    y = WBMM((5, 3), use_shortcut=False, use_bias=True, table_initializer="random_normal",
             bias_initializer="random_normal")(y)
    return keras.Model(inp, y)


@pytest.mark.slow
@pytest.mark.parametrize("precision, rtol", [("float32", 1e-4), ("float16", 1e-2)])
def test_converter_custom_lowering_runs_on_the_delegate(precision, rtol):
    from converters.keras_convert import convert_keras

    model = _two_wbmm_model()
    delegate = delegates.load(num_threads=2)
    result = convert_keras(model, precision=precision, lowering="custom", delegate=delegate)
    assert result.report.verification is not None  # verified through the delegate, not only in numpy
    x = np.random.default_rng(0).standard_normal((1, 20, 17, 12)).astype(np.float32)
    expected = np.asarray(model(x))
    y, interpreter = _run(result.tflite, x, delegate)
    # the project's relative-error policy: max |diff| / max |reference|
    assert np.abs(y - expected).max() <= rtol * np.abs(expected).max()
    report = delegates.delegation_report(interpreter, delegate)
    assert report.count("WBMM") == 2
    with pytest.raises((RuntimeError, ValueError)):
        _run(result.tflite, x)  # without the delegate the custom ops cannot run


@pytest.mark.slow
def test_rewriter_custom_strategy_runs_on_the_delegate():
    from converters.rewrite import RewriteOptions, rewrite_model

    keras.utils.set_random_seed(5)
    inp = keras.Input((18, 18, 10), batch_size=1)
    y = keras.layers.DepthwiseConv2D(13, padding="same", bias_initializer="random_normal")(inp)
    y = keras.layers.ReLU()(y)
    y = keras.layers.DepthwiseConv2D(7, padding="valid", activation="relu6")(y)
    from converters.keras_convert import to_tflite

    original = to_tflite(keras.Model(inp, y))
    delegate = delegates.load()
    result = rewrite_model(original, RewriteOptions(strategy="custom", delegate=delegate))
    assert result.report.rewritten_count == 2
    x = np.random.default_rng(1).standard_normal((1, 18, 18, 10)).astype(np.float32)
    expected, _ = _run(original, x)
    y, interpreter = _run(result.model, x, delegate)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert delegates.delegation_report(interpreter, delegate).count("WBMM_DEPTHWISE") == 2
