"""Windowed mode: KxK (odd K) -> WBMM with window (K+1)/2 whose table is the kernel."""

import numpy as np
import pytest

from converters import custom_ops, tflite_io, verify
from tests._rewrite_case import Case
from wbmm_mobile import core


def _kernel_and_bias(case):
    model = tflite_io.load_model(case.original)
    op = model.subgraphs[0].operators[-1]
    kernel = tflite_io.constant_value(model, 0, int(op.inputs[1]))[0].astype(np.float64)
    bias = tflite_io.constant_value(model, 0, int(op.inputs[2])).astype(np.float64)
    return kernel, bias


@pytest.mark.parametrize("kernel, size", [(7, (12, 12)), (7, (10, 13)), (13, (14, 14))])
def test_windowed_equals_the_numpy_wbmm_reference(kernel, size):
    case = Case.depthwise(kernel, size=size).convert().rewrite(mode="windowed")
    case.expect_rewritten("windowed").expect_ops({"BATCH_MATMUL": 1}, absent=("DEPTHWISE_CONV_2D",))
    taps, bias = _kernel_and_bias(case)
    inputs, reference, candidate = case.outputs()
    window = ((kernel + 1) // 2,) * 2
    expected = core.windowed_depthwise(inputs[0].astype(np.float64), taps, window) + bias
    np.testing.assert_allclose(candidate, expected, rtol=1e-5, atol=1e-5)
    # and the table route of the paper gives the same numbers
    table, w = core.kernel_to_table(taps)
    np.testing.assert_allclose(expected, core.wbmm_forward(inputs[0], table, w, shortcut=False, bias=bias),
                               rtol=1e-9, atol=1e-9)
    case.reloads()


def test_windowed_warns_and_reports_the_measured_deviation():
    case = Case.depthwise(7, size=(12, 12)).convert().rewrite(mode="windowed")
    report = case.report
    assert any("changes the function" in w for w in report.warnings)
    _, reference, candidate = case.outputs(seed=0, kernels="xnnpack")
    measured = float(np.abs(reference - candidate).max())
    assert measured > 1e-3                                            # windows really cut the map
    assert report.verification["max_abs"] >= measured * 0.5          # the report's figure is a real measurement
    assert "deviation" in report.verification_note


def test_windowed_single_window_map_is_exact():
    # A 4x4 map with window 4 (K=7) is one window: WBMM equals the conv (docs/WBMM.md).
    case = Case.depthwise(7, size=(4, 4)).convert().rewrite(mode="windowed")
    case.expect_rewritten("windowed").compare(rtol=1e-5, atol=1e-6)


def test_windowed_custom_op_is_the_wbmm_op():
    case = Case.depthwise(7, activation="relu").convert().rewrite(mode="windowed", strategy="custom", verify=False)
    case.expect_ops({"WBMM": 1, "RELU": 1}, absent=("DEPTHWISE_CONV_2D",))
    model = tflite_io.load_model(case.result.model)
    op = next(op for op in model.subgraphs[0].operators if tflite_io.opcode_name(model, op.opcodeIndex) == "WBMM")
    assert custom_ops.unpack_options("WBMM", bytes(op.customOptions)) == custom_ops.WbmmOptions(4, 4, False)


def test_windowed_refuses_even_and_valid():
    Case.depthwise(8).convert().rewrite(mode="windowed", verify=False).expect_left_alone("even")
    Case.depthwise(7, padding="valid").convert().rewrite(mode="windowed", verify=False).expect_left_alone("VALID")


def test_windowed_int8():
    Case.depthwise(7, quantize="int8").convert().rewrite(mode="windowed").expect_left_alone("windowed: no int8 form")
    case = Case.depthwise(7, quantize="int8").convert().rewrite(mode="windowed", allow_float_islands=True)
    case.expect_rewritten("windowed").expect_ops({"BATCH_MATMUL": 1, "QUANTIZE": 1})
    assert verify.output_specs(case.result.model)[0].quantized
