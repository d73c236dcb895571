"""The exact ``dilated`` rewrite (centred dilated depthwise convs) on tiny models from the real TFLite converter."""

import numpy as np
import pytest

from converters import tflite_io
from converters.rewrites.depthwise_dilated import block_layout
from tests._rewrite_case import Case


def _dilations(case):
    model = tflite_io.load_model(case.result.model)
    graph = model.subgraphs[0]
    names = tflite_io.op_names(model, 0)
    found = []
    for name, op in zip(names, graph.operators):
        if name == "DEPTHWISE_CONV_2D":
            o = op.builtinOptions
            kernel_shape = tuple(int(s) for s in graph.tensors[int(op.inputs[1])].shape[1:3])
            found.append((kernel_shape, (o.dilationHFactor, o.dilationWFactor), o.padding))
    return sorted(found)


@pytest.mark.parametrize("kernel, blocks", [(7, 3), (9, 4)])
def test_dilated_float32_matches_with_centred_blocks_and_no_copies(kernel, blocks):
    case = Case.depthwise(kernel, size=(12, 11)).convert().rewrite(strategy="dilated")
    case.expect_rewritten("dilated").expect_ops({"DEPTHWISE_CONV_2D": blocks, "ADD": blocks - 1},
                                                absent=("PAD", "STRIDED_SLICE", "BATCH_MATMUL"))
    case.compare(rtol=1e-5, atol=1e-6).compare(rtol=1e-5, atol=1e-6, kernels="xnnpack").reloads()
    assert case.report.verification["passed"]
    if kernel == 7:   # 3x7 at dilation 2x1, 4x3 and 4x4 at 2x2, all SAME on the input
        from ai_edge_litert import schema_py_generated as schema
        assert _dilations(case) == sorted([((3, 7), (2, 1), schema.Padding.SAME), ((4, 3), (2, 2), schema.Padding.SAME),
                                          ((4, 4), (2, 2), schema.Padding.SAME)])


@pytest.mark.parametrize("activation", ["relu6", None])
def test_dilated_keeps_bias_activation_and_grouped_convs(activation):
    case = Case.depthwise(7, activation=activation, grouped=True).convert().rewrite(strategy="dilated")
    case.expect_rewritten("dilated").expect_ops({"DEPTHWISE_CONV_2D": 3}, absent=("RELU6", "CONV_2D"))
    inputs, reference, candidate = case.outputs()
    if activation:
        assert reference.min() >= 0 and reference.max() <= 6 and (reference == 0).any()
    case.compare(rtol=1e-5, atol=1e-6)


def test_dilated_float16_and_int8():
    Case.depthwise(7, quantize="float16").convert().rewrite(strategy="dilated").expect_rewritten("dilated") \
        .expect_ops({"DEPTHWISE_CONV_2D": 3, "DEQUANTIZE": 3}).compare(rtol=1e-5, atol=1e-6)
    Case.depthwise(7, quantize="int8").convert().rewrite(strategy="dilated", allow_float_islands=True) \
        .expect_rewritten("dilated").expect_ops({"QUANTIZE": 1, "DEPTHWISE_CONV_2D": 3}).compare_int8(steps=1)
    Case.depthwise(7, quantize="int8").convert().rewrite(strategy="dilated").expect_left_alone("dilated: no int8 form")


@pytest.mark.parametrize("spec, why", [
    (dict(kernel=7, padding="valid"), "only 'same'"),
    (dict(kernel=13), "no cut of 13x13"),
    (dict(kernel=7, size=(3, 3)), "never reach the map"),
])
def test_dilated_refuses_with_a_reason_and_auto_falls_back(spec, why):
    kernel = spec.pop("kernel")
    case = Case.depthwise(kernel, **spec).convert().rewrite(strategy="dilated")
    layer = case.report.layers[0]
    assert not layer.rewritten and why in layer.reason


def test_block_layouts_cover_each_tap_once_and_stay_centred():
    for kh, kw in [(7, 7), (9, 9), (7, 9), (9, 7), (7, 3), (3, 9)]:
        covered = np.zeros((kh, kw), dtype=int)
        for r0, dr, c0, dc in block_layout(kh, kw):
            rows, cols = range(r0, kh, dr), range(c0, kw, dc)
            assert len(rows) * len(cols) <= 25
            # centred: the class is symmetric about the middle tap
            assert rows[0] + rows[-1] == kh - 1 and cols[0] + cols[-1] == kw - 1
            covered[np.ix_(list(rows), list(cols))] += 1
        assert (covered == 1).all(), (kh, kw)
    assert len(block_layout(7, 7)) == 3
    assert block_layout(11, 11) is None and block_layout(13, 13) is None and block_layout(6, 7) is None
