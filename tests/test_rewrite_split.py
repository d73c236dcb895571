"""The exact ``split`` rewrite on tiny models from the real TFLite converter."""

import pytest

from tests._rewrite_case import Case


@pytest.mark.parametrize("kernel, padding, blocks", [(7, "same", 4), (7, "valid", 4), (13, "same", 9), (9, "same", 4)])
def test_split_float32_matches_and_uses_small_convs(kernel, padding, blocks):
    case = Case.depthwise(kernel, padding=padding).convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": blocks, "ADD": blocks - 1},
                                              absent=("BATCH_MATMUL",))
    case.compare(rtol=1e-5, atol=1e-6).compare(rtol=1e-5, atol=1e-6, kernels="xnnpack").reloads()
    assert case.report.verification["passed"] and case.report.verification["max_rel"] <= 1e-4


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_split_keeps_fused_activation_and_bias(activation):
    case = Case.depthwise(7, activation=activation).convert().rewrite(strategy="split")
    case.expect_ops({"DEPTHWISE_CONV_2D": 4}, absent=("RELU", "RELU6"))   # fused into the last ADD
    inputs, reference, candidate = case.outputs()
    assert reference.min() >= 0 and (reference == 0).any()                 # the activation did something
    if activation == "relu6":
        assert reference.max() <= 6
    case.compare(rtol=1e-5, atol=1e-6)


def test_split_without_bias():
    Case.depthwise(7, bias=False).convert().rewrite(strategy="split").expect_rewritten("split") \
        .compare(rtol=1e-5, atol=1e-6)


def test_split_grouped_conv2d_is_a_depthwise_conv():
    # Keras' ConvNeXt writes its 7x7 convs as Conv2D(groups=C), which stays CONV_2D in .tflite.
    case = Case.depthwise(7, grouped=True).convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": 4}, absent=("CONV_2D",))
    assert case.report.layers[0].op == "CONV_2D"
    case.compare(rtol=1e-5, atol=1e-6).reloads()


def test_split_float16_weights_stay_float16():
    case = Case.depthwise(7, quantize="float16").convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": 4, "DEQUANTIZE": 4})
    assert case.report.layers[0].precision == "float16"
    # Same float16 numbers, float32 arithmetic: as exact as float32.
    case.compare(rtol=1e-5, atol=1e-6).reloads()
    assert case.report.bytes_after < 2 * case.report.bytes_before + 2048


def test_split_int8_keeps_quantisation_within_one_step():
    case = Case.depthwise(7, quantize="int8").convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEQUANTIZE": 1, "QUANTIZE": 1, "DEPTHWISE_CONV_2D": 4})
    case.compare_int8(steps=1.0).reloads()


def test_taps_that_only_see_padding_are_cropped_exactly():
    # 13x13 'same' on a 5x5 map: only the central 9x9 taps can reach the input (WBMM.md theorem 1).
    case = Case.depthwise(13, size=(5, 5)).convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": 4})   # 9 -> 5 + 4, 2x2 blocks
    case.compare(rtol=1e-5, atol=1e-6)
    Case.depthwise(13, size=(5, 5)).convert().rewrite(strategy="halo").compare(rtol=1e-5, atol=1e-6)
