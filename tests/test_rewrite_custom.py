"""The ``custom`` rewrite emits WBMM_DEPTHWISE exactly as ``converters/custom_ops.py`` defines it."""

import numpy as np
import pytest

from converters import custom_ops, tflite_io
from tests._rewrite_case import Case


def _custom_op(case):
    model = tflite_io.load_model(case.result.model)
    graph = model.subgraphs[0]
    ops = [op for op in graph.operators if tflite_io.opcode_name(model, op.opcodeIndex) == "WBMM_DEPTHWISE"]
    assert len(ops) == 1
    return model, graph, ops[0]


@pytest.mark.parametrize("padding, activation, code", [("same", None, 0), ("valid", "relu", 1), ("same", "relu6", 3)])
def test_custom_op_inputs_and_options(padding, activation, code):
    case = Case.depthwise(7, padding=padding, activation=activation).convert().rewrite(strategy="custom", verify=False)
    case.expect_rewritten("custom").expect_ops({"WBMM_DEPTHWISE": 1}, absent=("DEPTHWISE_CONV_2D",))
    model, graph, op = _custom_op(case)
    options = custom_ops.unpack_options("WBMM_DEPTHWISE", bytes(op.customOptions))
    expected_padding = custom_ops.PADDING_SAME if padding == "same" else custom_ops.PADDING_VALID
    assert options == custom_ops.DepthwiseOptions(7, 7, expected_padding, code)
    x, kernel, bias = (int(i) for i in op.inputs)
    original = tflite_io.load_model(case.original)
    original_kernel = tflite_io.constant_value(original, 0, int(original.subgraphs[0].operators[0].inputs[1]))
    np.testing.assert_array_equal(tflite_io.constant_value(model, 0, kernel), original_kernel)
    assert tflite_io.constant_value(model, 0, bias).shape == (4,)
    assert x == int(graph.inputs[0]) and int(op.outputs[0]) == int(graph.outputs[0])
    case.reloads(interpreter=False)


def test_custom_float16_kernel_stays_float16():
    case = Case.depthwise(7, quantize="float16").convert().rewrite(strategy="custom", verify=False)
    model, graph, op = _custom_op(case)
    assert graph.tensors[int(op.inputs[1])].type == tflite_io.schema.TensorType.FLOAT16


def test_custom_without_delegate_is_reported_unverified(monkeypatch, tmp_path):
    # As on a machine where `make delegate` has not run: the loader finds no library.
    monkeypatch.setenv("WBMM_DELEGATE_LIB", str(tmp_path / "libwbmm_delegate.so"))
    case = Case.depthwise(7).convert().rewrite(strategy="custom")
    assert case.report.verification is None
    assert "NOT verified" in case.report.verification_note
    assert any("NOT verified" in w for w in case.report.warnings)


def _delegate_or_skip():
    import delegates
    from wbmm_mobile.errors import DelegateError
    try:
        delegates.load()
    except DelegateError as exc:            # `make test` builds it; a bare pytest run may not have
        pytest.skip(f"wbmm delegate not available: {exc}")


@pytest.mark.parametrize("quantize", [None, "float16"])   # int8: tests/test_rewrite_int8_custom.py
def test_custom_op_runs_on_the_delegate_and_matches(quantize):
    _delegate_or_skip()
    case = Case.depthwise(7, quantize=quantize, activation="relu").convert().rewrite(strategy="custom")
    note = case.report.verification_note
    assert case.report.verification["passed"] and "match the numpy reference" in note, note
    assert case.report.verification["max_rel"] <= 1e-4
