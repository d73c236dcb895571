"""claim_depthwise: a stock Keras model's DEPTHWISE_CONV_2D nodes run on the delegate, no rewrite.

Models come from the real converter (``TFLiteConverter.from_keras_model``);
outputs are compared with Keras itself. Negative cases assert which nodes are
left to TFLite and why they are (small kernel, stride, option off).
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import delegates

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


def _convert(model, fp16=False) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


@pytest.fixture(scope="module")
def stock_model():
    """13x13 SAME + bias + relu (fused), 7x9 VALID, 3x3 SAME, 7x7 stride 2: four depthwise convs."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((24, 22, 20), batch_size=1)
    y = keras.layers.DepthwiseConv2D(13, padding="same", activation="relu",
                                     bias_initializer="random_normal")(inp)
    y = keras.layers.DepthwiseConv2D((7, 9), padding="valid", use_bias=False)(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(y)
    y = keras.layers.DepthwiseConv2D(7, strides=2, padding="same")(y)
    model = keras.Model(inp, y)
    x = np.random.default_rng(0).standard_normal((1, 24, 22, 20)).astype(np.float32)
    return model, x, np.asarray(model(x))


def _run(tflite: bytes, x, resolver=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **options):
    delegate = delegates.load(**options)
    interpreter = Interpreter(model_content=tflite, experimental_delegates=[delegate],
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), \
        delegates.delegation_report(interpreter, delegate)


@pytest.mark.slow
def test_large_depthwise_convs_are_claimed_and_exact(stock_model, capfd):
    model, x, expected = stock_model
    tflite = _convert(model)
    y, report = _run(tflite, x, claim_depthwise=1, num_threads=2, verbose=1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert report.claimed_ops == ("DEPTHWISE_CONV_2D", "DEPTHWISE_CONV_2D")  # 13x13 and 7x9
    err = capfd.readouterr().err
    assert "kernel 3x3 is below min_kernel 7" in err
    assert "stride is not 1" in err

    # min_kernel raises the bar; claim_depthwise off claims nothing
    y13, report13 = _run(tflite, x, claim_depthwise=1, min_kernel=13)
    np.testing.assert_allclose(y13, expected, rtol=1e-4, atol=1e-4)
    assert report13.claimed_nodes == report.claimed_nodes[:1]
    _, report_off = _run(tflite, x)
    assert report_off.claimed_nodes == ()

    # with XNNPACK applied as well (AUTO resolver) we still get first pick
    y_auto, report_auto = _run(tflite, x, resolver=OpResolverType.AUTO, claim_depthwise=1)
    np.testing.assert_allclose(y_auto, expected, rtol=1e-4, atol=1e-4)
    assert report_auto.count("DEPTHWISE_CONV_2D") == 2


@pytest.mark.slow
def test_float16_weights_behind_dequantize_are_folded(stock_model):
    model, x, _ = stock_model
    tflite = _convert(model, fp16=True)
    # reference: the same fp16 model on TFLite's builtin kernels
    reference = Interpreter(model_content=tflite,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], x)
    reference.invoke()
    expected = reference.get_tensor(reference.get_output_details()[0]["index"])
    y, report = _run(tflite, x, claim_depthwise=1)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert report.count("DEPTHWISE_CONV_2D") == 2
    assert report.count("DEQUANTIZE") == 3  # fp16 kernels of both claimed convs and the bias of the 13x13
