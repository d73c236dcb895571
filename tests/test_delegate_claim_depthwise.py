"""claim_depthwise: a stock Keras model's DEPTHWISE_CONV_2D nodes, and its CONV_2D nodes with one
input channel per group (Keras Conv2D(groups=C), as in ConvNeXt), run on the delegate, no rewrite.

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
pytest.importorskip("tensorflow")

from converters.keras_convert import to_tflite  # noqa: E402


def _convert(model, fp16=False) -> bytes:
    return to_tflite(model, "float16" if fp16 else "float32")


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


@pytest.fixture(scope="module")
def grouped_model():
    """What keras.applications.ConvNeXt exports: Conv2D(groups=C) becomes a CONV_2D with a
    (C, kh, kw, 1) kernel. 7x7 SAME + bias, 5x9 VALID + relu6 (fused), then a 7x7 conv with two
    input channels per group and a 1x1 dense conv, which are not depthwise."""
    keras.utils.set_random_seed(1)
    channels = 20  # not a multiple of the SIMD width: the tail block runs too
    inp = keras.Input((23, 21, channels), batch_size=1)
    y = keras.layers.Conv2D(channels, 7, padding="same", groups=channels, bias_initializer="random_normal")(inp)
    y = keras.layers.Conv2D(channels, (5, 9), padding="valid", groups=channels, activation="relu6")(y)
    y = keras.layers.Conv2D(channels, 7, padding="same", groups=channels // 2)(y)
    y = keras.layers.Conv2D(channels, 1)(y)
    model = keras.Model(inp, y)
    x = np.random.default_rng(1).standard_normal((1, 23, 21, channels)).astype(np.float32)
    return model, x, np.asarray(model(x))


@pytest.mark.slow
@pytest.mark.parametrize("fp16", [False, True], ids=["float32", "float16"])
def test_grouped_conv_with_one_channel_per_group_is_claimed(grouped_model, fp16, capfd):
    model, x, expected = grouped_model
    tflite = _convert(model, fp16=fp16)
    # AUTO: XNNPACK runs what the delegate leaves (TFLite's builtin CONV_2D has no groups)
    y, report = _run(tflite, x, resolver=OpResolverType.AUTO, claim_depthwise=1, min_kernel=5, verbose=2)
    tolerance = 2e-2 if fp16 else 1e-4
    np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    assert report.count("CONV_2D") == 2  # the 7x7 and the 5x9; fp16 adds their DEQUANTIZEs
    assert report.count("DEQUANTIZE") == (3 if fp16 else 0)
    err = capfd.readouterr().err
    assert "not a depthwise op (CONV_2D with 2 input channels per group)" in err
    assert "not a depthwise op (CONV_2D with 20 input channels per group)" in err

    _, report_off = _run(tflite, x, resolver=OpResolverType.AUTO)
    assert report_off.claimed_nodes == ()


def test_relu_n1_to_1_is_a_clamp():
    """A DEPTHWISE_CONV_2D whose fused activation is RELU_N1_TO_1 (set in the flatbuffer: Keras has
    no such layer) runs on the delegate as a clamp to [-1, 1], like TFLite's builtin kernel."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    keras.utils.set_random_seed(2)
    inp = keras.Input((15, 13, 6), batch_size=1)
    tflite = _convert(keras.Model(inp, keras.layers.DepthwiseConv2D(9, padding="same")(inp)))
    model = schema.ModelT.InitFromPackedBuf(tflite, 0)
    (op,) = model.subgraphs[0].operators
    op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU_N1_TO_1
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    edited = bytes(builder.Output())
    x = np.random.default_rng(2).standard_normal((1, 15, 13, 6)).astype(np.float32)
    reference = Interpreter(model_content=edited,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], x)
    reference.invoke()
    expected = reference.get_tensor(reference.get_output_details()[0]["index"])
    assert expected.min() == -1.0 and expected.max() == 1.0  # the clamp is reached on both sides
    y, report = _run(edited, x, claim_depthwise=1)
    assert report.claimed_ops == ("DEPTHWISE_CONV_2D",)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
