"""The exact ``split`` rewrite on tiny models from the real TFLite converter."""

import numpy as np
import pytest

from tests._rewrite_case import Case


@pytest.mark.parametrize("kernel, padding, blocks", [(7, "same", 3), (7, "valid", 3), (13, "same", 9), (9, "same", 4),
                                                    (11, "same", 6)])
def test_split_float32_matches_and_uses_small_convs(kernel, padding, blocks):
    case = Case.depthwise(kernel, padding=padding).convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": blocks, "ADD": blocks - 1},
                                              absent=("BATCH_MATMUL",))
    case.compare(rtol=1e-5, atol=1e-6).compare(rtol=1e-5, atol=1e-6, kernels="xnnpack").reloads()
    assert case.report.verification["passed"] and case.report.verification["max_rel"] <= 1e-4


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_split_keeps_fused_activation_and_bias(activation):
    case = Case.depthwise(7, activation=activation).convert().rewrite(strategy="split")
    case.expect_ops({"DEPTHWISE_CONV_2D": 3}, absent=("RELU", "RELU6"))   # fused into the last ADD
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
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": 3}, absent=("CONV_2D",))
    assert case.report.layers[0].op == "CONV_2D"
    case.compare(rtol=1e-5, atol=1e-6).reloads()


def test_split_float16_weights_stay_float16():
    case = Case.depthwise(7, quantize="float16").convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": 3, "DEQUANTIZE": 3})
    assert case.report.layers[0].precision == "float16"
    # Same float16 numbers, float32 arithmetic: as exact as float32.
    case.compare(rtol=1e-5, atol=1e-6).reloads()
    assert case.report.bytes_after < 2 * case.report.bytes_before + 2048


def test_split_int8_needs_float_islands_and_then_stays_within_one_step():
    Case.depthwise(7, quantize="int8").convert().rewrite(strategy="split").expect_left_alone(
        "split: no int8 form (a sum of separately computed int8 convs cannot be exact")
    case = Case.depthwise(7, quantize="int8").convert().rewrite(strategy="split", allow_float_islands=True)
    case.expect_rewritten("split").expect_ops({"DEQUANTIZE": 1, "QUANTIZE": 1, "DEPTHWISE_CONV_2D": 3})
    assert case.report.mixed_precision and case.report.layers[0].float_island
    case.compare_int8(steps=1).reloads()


def test_taps_that_only_see_padding_are_cropped_exactly():
    # 13x13 'same' on a 5x5 map: only the central 9x9 taps can reach the input (docs/WBMM.md theorem 1).
    case = Case.depthwise(13, size=(5, 5)).convert().rewrite(strategy="split")
    case.expect_rewritten("split").expect_ops({"DEPTHWISE_CONV_2D": 4})   # 9 -> 5 + 4, 2x2 blocks
    case.compare(rtol=1e-5, atol=1e-6)
    Case.depthwise(13, size=(5, 5)).convert().rewrite(strategy="halo").compare(rtol=1e-5, atol=1e-6)


def test_block_layouts_stay_within_25_taps_and_cover_the_kernel():
    from converters.rewrites.depthwise_split import block_layout
    for kh, kw in [(7, 7), (9, 9), (11, 11), (13, 13), (31, 31), (7, 13), (27, 3), (6, 8)]:
        covered = np.zeros((kh, kw), dtype=int)
        for r0, a, c0, b in block_layout(kh, kw):
            assert a * b <= 25
            covered[r0:r0 + a, c0:c0 + b] += 1
        assert (covered == 1).all(), (kh, kw)
    assert block_layout(7, 7) == [(0, 2, 0, 7), (2, 3, 0, 7), (5, 2, 0, 7)]


def test_the_centred_band_reads_the_input_without_pad_or_slice():
    case = Case.depthwise(7).convert().rewrite(strategy="split")
    case.expect_ops({"DEPTHWISE_CONV_2D": 3, "STRIDED_SLICE": 2, "PAD": 1})
    from converters import tflite_io
    model = tflite_io.load_model(case.result.model)
    graph = model.subgraphs[0]
    first = graph.operators[0]
    assert tflite_io.opcode_name(model, first.opcodeIndex) == "DEPTHWISE_CONV_2D"
    assert int(first.inputs[0]) == int(graph.inputs[0]) and first.builtinOptions.padding == 0   # SAME on x
