"""The rewriter keeps integer models integer (issue 16, part 2), on models from the real TFLite
converter: full-int8 I/O (representative dataset) and 16x8 (int16 activations, int8 weights).

For every target the rewritten model must hold no float tensor (each tensor's type is read from
the flatbuffer), the ops must be the expected ones, the outputs must be within the stated
integer tolerance of the original on TFLite's builtin kernels (0 steps for builtin_kernel), and
the file must reload. Float islands only come with allow_float_islands, which then says
"mixed precision" with the size change, and which nnapi refuses.
"""

from __future__ import annotations

import functools
import json
from collections import Counter

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from converters import tflite_io, verify
from converters.rewrite import RewriteOptions, rewrite_model
from converters.strategy import INTEGER_ONLY_TARGETS, pick, LayerShape
from tests._rewrite_case import converted_depthwise
from wbmm_mobile.errors import IncompatibleOptionsError

FLOAT_TYPES = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
CHANNELS = 8


def _float_tensors(model: bytes) -> list[str]:
    tree = tflite_io.load_model(model)
    return [tflite_io.tensor_name(t) for g in tree.subgraphs for t in g.tensors if t.type in FLOAT_TYPES]


# The converter's own float NEG inside LayerNorm (see convnext_like); nothing else may be float.
CONVERTER_FLOATS = {"convnext_like": 2}


def _assert_no_float_added(name: str, model: bytes) -> None:
    floats = _float_tensors(model)
    assert len(floats) == CONVERTER_FLOATS.get(name, 0), floats
    assert all("layer_normalization" in f or f == "tfl.dequantize" for f in floats), floats


def _ops(model: bytes) -> Counter:
    return Counter(tflite_io.op_names(tflite_io.load_model(model)))


def _max_steps(original: bytes, rewritten: bytes, kernels: str = "cpu", seed: int = 5) -> int:
    inputs = verify.random_inputs(original, seed)
    reference = verify.run_tflite(original, inputs, kernels=kernels)[0]
    candidate = verify.run_tflite(rewritten, inputs, kernels=kernels)[0]
    assert np.issubdtype(reference.dtype, np.integer) and candidate.dtype == reference.dtype
    return int(np.abs(reference.astype(np.int64) - candidate.astype(np.int64)).max())


def _representative(shape):
    rng = np.random.default_rng(0)
    return lambda: ([rng.uniform(-1, 1, (1, *shape)).astype(np.float32)] for _ in range(16))


@functools.lru_cache(maxsize=None)
def convnext_like(int16: bool = False) -> bytes:
    """A small ConvNeXt-like int8 (or 16x8) model: a grouped 7x7 Conv2D block with LayerNorm, MLP and
    residual (as keras.applications ConvNeXt writes it), then a 7x7 DepthwiseConv2D with ReLU.

    The TFLite converter (2.21) leaves LayerNorm's NEG in float32 even at TFLITE_BUILTINS_INT8
    (DEQUANTIZE -> NEG -> QUANTIZE: the original is not integer-only there) and refuses it at 16x8,
    so the 16x8 model has no LayerNorm."""
    import keras
    import tensorflow as tf

    from converters.keras_convert import _quiet_native_output

    keras.utils.set_random_seed(4)
    inputs = keras.Input((14, 14, CHANNELS), batch_size=1)
    x = keras.layers.Conv2D(CHANNELS, 7, padding="same", groups=CHANNELS)(inputs)
    if not int16:
        x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.Dense(4 * CHANNELS, activation="relu")(x)
    x = keras.layers.Dense(CHANNELS)(x)
    x = keras.layers.Add()([inputs, x])
    x = keras.layers.DepthwiseConv2D(7, padding="same", activation="relu", bias_initializer="random_normal")(x)
    model = keras.Model(inputs, x)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative((14, 14, CHANNELS))
    if int16:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int16
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with _quiet_native_output():
        return converter.convert()


@functools.lru_cache(maxsize=None)
def int16_depthwise(grouped: bool = False) -> bytes:
    """One 7x7 depthwise conv (or Conv2D(groups=C)) quantised 16x8 by the TFLite converter."""
    import keras
    import tensorflow as tf

    from converters.keras_convert import _quiet_native_output

    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, CHANNELS), batch_size=1)
    layer = keras.layers.Conv2D(CHANNELS, 7, padding="same", groups=CHANNELS, bias_initializer="random_normal") \
        if grouped else keras.layers.DepthwiseConv2D(7, padding="same", bias_initializer="random_normal")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, layer(inputs)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative((12, 12, CHANNELS))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int16
    with _quiet_native_output():
        return converter.convert()


def int8_layer(grouped: bool) -> bytes:
    return converted_depthwise(7, channels=CHANNELS, quantize="int8", grouped=grouped)


def _models():
    return {"depthwise": int8_layer(False), "grouped": int8_layer(True), "convnext_like": convnext_like()}


def test_the_converted_models_are_full_integer():
    for name, model in _models().items():
        _assert_no_float_added(name, model)
        specs = verify.input_specs(model) + verify.output_specs(model)
        assert all(s.dtype == np.int8 and s.quantized for s in specs), name
    assert _ops(int8_layer(True))["CONV_2D"] == 1 and _ops(convnext_like())["CONV_2D"] >= 1


@pytest.mark.parametrize("name", ["depthwise", "grouped", "convnext_like"])
def test_xnnpack_auto_routes_int8_to_the_builtin_kernel_exactly(name):
    original = _models()[name]
    result = rewrite_model(original, RewriteOptions(target="xnnpack"))
    report = result.report
    large = [layer for layer in report.layers if layer.kernel == "7x7"]
    assert large and all(layer.rewritten and layer.strategy == "builtin_kernel" for layer in large), report.layers
    assert all("builtin_kernel" in layer.reason and "int8" in layer.reason for layer in large)
    _assert_no_float_added(name, result.model)
    assert not report.mixed_precision and report.float_tensors_after == report.float_tensors_before
    ops, before = _ops(result.model), _ops(original)
    assert ops["RESHAPE"] == before["RESHAPE"] + len(large)
    assert ops["DEPTHWISE_CONV_2D"] == before["DEPTHWISE_CONV_2D"] + before["CONV_2D"] - ops["CONV_2D"]
    assert ops["DEQUANTIZE"] == before["DEQUANTIZE"] and ops["QUANTIZE"] == before["QUANTIZE"]
    assert _max_steps(original, result.model, kernels="cpu") == 0          # the same builtin kernel
    assert report.verification["passed"] and report.verification["max_steps"] <= 1   # vs XNNPACK's int8 kernel
    assert "compared as integers" in report.verification["tolerance"]
    verify.load_interpreter(tflite_io.model_to_bytes(tflite_io.load_model(result.model)), kernels="xnnpack")


@pytest.mark.parametrize("target", ["cpu", "nnapi"])
@pytest.mark.parametrize("name", ["depthwise", "grouped", "convnext_like"])
def test_cpu_and_nnapi_keep_integer_layers(target, name):
    original = _models()[name]
    result = rewrite_model(original, RewriteOptions(target=target))
    for layer in result.report.layers:
        if layer.kernel == "7x7":
            assert not layer.rewritten and layer.reason.startswith("kept:"), layer
    reason = next(layer.reason for layer in result.report.layers if layer.kernel == "7x7")
    assert ("builtin integer kernel" in reason) if target == "cpu" else ("integer models only" in reason)
    if target == "cpu" or name != "convnext_like":
        assert result.model == original
        _assert_no_float_added(name, result.model)
    else:   # nnapi: the converter's float NEG island became an int8 MUL; now integer-only
        assert not _float_tensors(result.model) and result.report.float_negations_made_integer == 1
        ops, before = _ops(result.model), _ops(original)
        assert ops["NEG"] == ops["DEQUANTIZE"] == 0 and ops["MUL"] == before["MUL"] + 1
        assert ops["QUANTIZE"] == before["QUANTIZE"] - 1 and "int8 MULs by -1" in result.report.notes[0]
        assert _max_steps(original, result.model) == 0 and result.report.verification["max_steps"] == 0


@pytest.mark.parametrize("name", ["depthwise", "grouped", "convnext_like"])
def test_wbmm_target_emits_int8_wbmm_depthwise_with_the_layers_own_tensors(name):
    original = _models()[name]
    result = rewrite_model(original, RewriteOptions(target="wbmm", verify=False))
    large = [layer for layer in result.report.layers if layer.kernel == "7x7"]
    assert all(layer.strategy == "custom" for layer in large)
    _assert_no_float_added(name, result.model)
    tree = tflite_io.load_model(result.model)
    graph = tree.subgraphs[0]
    customs = [op for op in graph.operators if tflite_io.opcode_name(tree, op.opcodeIndex) == "WBMM_DEPTHWISE"]
    assert len(customs) == len(large)
    source = tflite_io.load_model(original)
    for op in customs:
        x, kernel, bias = (graph.tensors[int(i)] for i in op.inputs)
        out = graph.tensors[int(op.outputs[0])]
        assert (x.type, kernel.type, bias.type, out.type) == (9, 9, 2, 9)      # int8, int8, int32, int8
        assert kernel.shape[0] == 1 and kernel.quantization.quantizedDimension == 3
        assert len(kernel.quantization.scale) == CHANNELS and not np.any(kernel.quantization.zeroPoint)
        assert len(x.quantization.scale) == 1 and len(out.quantization.scale) == 1
    # The original layers' per-channel scales are the op's, unchanged.
    original_scales = sorted(tuple(np.round(t.quantization.scale, 12)) for t in source.subgraphs[0].tensors
                             if t.type == 9 and t.quantization is not None and t.quantization.scale is not None
                             and len(t.quantization.scale) == CHANNELS and t.buffer and len(t.shape) == 4)
    custom_scales = sorted(tuple(np.round(graph.tensors[int(op.inputs[1])].quantization.scale, 12)) for op in customs)
    assert set(custom_scales) <= set(original_scales)


def test_wbmm_int8_is_reported_unverified_when_the_delegate_cannot_run_it(monkeypatch, tmp_path):
    monkeypatch.setenv("WBMM_DELEGATE_LIB", str(tmp_path / "libwbmm_delegate.so"))     # no library
    result = rewrite_model(int8_layer(False), RewriteOptions(target="wbmm"))
    assert "NOT verified" in result.report.verification_note and result.report.verification is None


@pytest.mark.parametrize("strategy", ["split", "dilated", "halo"])
def test_float_islands_only_with_the_option_and_then_mixed_precision(strategy):
    original = int8_layer(False)
    refused = rewrite_model(original, RewriteOptions(strategy=strategy))
    layer = refused.report.layers[0]
    assert not layer.rewritten and f"{strategy}: no int8 form" in layer.reason
    assert "--allow-float-islands" in layer.reason and refused.model == original
    allowed = rewrite_model(original, RewriteOptions(strategy=strategy, allow_float_islands=True))
    report = allowed.report
    assert report.layers[0].rewritten and report.layers[0].float_island and report.mixed_precision
    assert "a float island: DEQUANTIZE -> float32 ops -> QUANTIZE" in report.layers[0].reason
    ops = _ops(allowed.model)
    assert ops["DEQUANTIZE"] == 1 and ops["QUANTIZE"] == 1 and _float_tensors(allowed.model)
    assert "mixed precision" in report.precision_note and f"{report.bytes_before:,}" in report.precision_note
    assert f"{report.bytes_after:,}" in report.precision_note and report.precision_note in report.warnings
    assert report.float_tensors_after > report.float_tensors_before == 0
    assert _max_steps(original, allowed.model) <= 1


def test_auto_with_float_islands_still_prefers_the_integer_choice():
    result = rewrite_model(int8_layer(False), RewriteOptions(allow_float_islands=True))
    assert result.report.layers[0].strategy == "builtin_kernel" and not result.report.mixed_precision


@pytest.mark.parametrize("target", sorted(INTEGER_ONLY_TARGETS & {"nnapi"}))
def test_integer_only_targets_refuse_float_islands(target):
    with pytest.raises(IncompatibleOptionsError, match=f"--target {target}: {target} is an integer-only target"):
        rewrite_model(int8_layer(False), RewriteOptions(target=target, allow_float_islands=True))
    asked = rewrite_model(int8_layer(False), RewriteOptions(target=target, strategy="split"))
    assert not asked.report.layers[0].rewritten
    assert "never added for nnapi, an integer-only target" in asked.report.layers[0].reason


def test_npu_targets_inherit_the_integer_only_rule():
    # The NPU targets join strategy.TARGETS later; the rule is already a property of their names.
    assert {"nnapi", "qualcomm-htp", "ethos-u"} <= INTEGER_ONLY_TARGETS
    shape = LayerShape(56, 56, 96, 7)
    assert pick(shape, "nnapi", precision="int8", allow_float_islands=True).order == ("keep",)
    assert pick(shape, "xnnpack", precision="int8").order == ("builtin_kernel",)
    assert pick(LayerShape(56, 56, 96, 5), "xnnpack", precision="int8").order == ("keep",)
    assert pick(shape, "wbmm", precision="int8").order == ("custom", "builtin_kernel")


def test_auto_reads_the_shipped_int8_table_else_the_rule(monkeypatch, tmp_path):
    from converters import strategy

    tabled = pick(LayerShape(28, 28, 192, 13), "xnnpack", precision="int8")
    assert tabled.order == ("builtin_kernel",) and "shipped int8 table" in tabled.reason
    monkeypatch.setattr(strategy, "INT8_TABLE_PATH", tmp_path / "absent.json")
    ruled = pick(LayerShape(28, 28, 192, 13), "xnnpack", precision="int8")
    assert ruled.order == ("builtin_kernel",) and "no int8 table" in ruled.reason
    assert pick(LayerShape(28, 28, 192, 5), "xnnpack", precision="int8").order == ("keep",)


def test_auto_measure_times_the_int8_choice_here():
    from converters.rewrite import rewrite_one_strategy
    from converters.strategy_measure import MeasuredHere

    chosen = pick(LayerShape(20, 20, 16, 7), "xnnpack", measure=True, precision="int8",
                  table=MeasuredHere(rewrite_one_strategy))
    assert chosen.order in (("builtin_kernel",), ("keep",)) and "measured now" in chosen.reason
    assert "XNNPACK int8" in chosen.reason and "builtin_kernel" in chosen.reason


def test_cli_says_mixed_precision_and_refuses_nnapi_islands(tmp_path, capsys):
    from wbmm_mobile.cli import main

    source = tmp_path / "int8.tflite"
    source.write_bytes(int8_layer(False))
    out = tmp_path / "out.tflite"
    code = main(["rewrite", str(source), "-o", str(out), "--strategy", "split", "--allow-float-islands",
                 "--report", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert code == 0 and "mixed precision" in printed and "bytes" in printed
    assert json.loads((tmp_path / "r.json").read_text())["mixed_precision"] is True
    code = main(["rewrite", str(source), "-o", str(tmp_path / "n.tflite"), "--target", "nnapi",
                 "--allow-float-islands"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "integer-only target" in err[0]
    assert not (tmp_path / "n.tflite").exists()


# --------------------------------------------------------------------------- int16 (16x8)

@pytest.mark.parametrize("grouped", [False, True])
def test_int16_models_stay_int16(grouped):
    original = int16_depthwise(grouped)
    assert verify.input_specs(original)[0].dtype == np.int16 and not _float_tensors(original)
    auto = rewrite_model(original, RewriteOptions(target="xnnpack"))
    assert auto.model == original and "XNNPACK runs no int16 conv" in auto.report.layers[0].reason
    routed = rewrite_model(original, RewriteOptions(strategy="builtin_kernel"))
    assert routed.report.layers[0].rewritten and not _float_tensors(routed.model)
    assert _ops(routed.model)["RESHAPE"] == 1 and _max_steps(original, routed.model) == 0
    custom = rewrite_model(original, RewriteOptions(strategy="custom"))
    assert "no int16 form" in custom.report.layers[0].reason and custom.model == original
    split = rewrite_model(original, RewriteOptions(strategy="split"))
    assert "split: no int16 form" in split.report.layers[0].reason


def test_int16_float_island_with_the_option():
    original = int16_depthwise(False)
    result = rewrite_model(original, RewriteOptions(strategy="split", allow_float_islands=True))
    assert result.report.mixed_precision and _ops(result.model)["QUANTIZE"] == 1
    assert _max_steps(original, result.model) <= 1


def test_int16_convnext_like_keeps_integers_on_every_target():
    original = convnext_like(int16=True)
    for target in ("xnnpack", "cpu", "nnapi", "wbmm"):
        result = rewrite_model(original, RewriteOptions(target=target, verify=target != "wbmm"))
        assert not _float_tensors(result.model), target


def _negation_model(out_scale: float, out_zero_point: int, float_output_too: bool = False) -> bytes:
    """int8 x -> DEQUANTIZE -> NEG -> QUANTIZE -> int8 y, the chain the converter leaves in LayerNorm."""
    from converters.rewrites._graph import Builtin, TensorType, new_model, quantization

    editor = new_model("float NEG island")
    x = editor.tensor("x", (1, 256), TensorType.INT8, quantization(0.02, -11))
    real = editor.tensor("x_float", (1, 256))
    negated = editor.tensor("negated", (1, 256))
    y = editor.tensor("y", (1, 256), TensorType.INT8, quantization(out_scale, out_zero_point))
    editor.op(Builtin.DEQUANTIZE, [x], [real], version=2)
    editor.op(Builtin.NEG, [real], [negated])
    editor.quantize(negated, y)
    graph = editor.graph
    graph.operators = editor.ops
    graph.inputs = np.array([x.index], dtype=np.int32)
    graph.outputs = np.array([y.index] + ([negated.index] if float_output_too else []), dtype=np.int32)
    return tflite_io.model_to_bytes(editor.model)


@pytest.mark.parametrize("out_scale,out_zero_point,steps", [(0.02, 10, 0), (0.031, -5, 1)])
def test_integer_negation_replaces_the_float_island(out_scale, out_zero_point, steps):
    original = _negation_model(out_scale, out_zero_point)
    x = [np.arange(-128, 128, dtype=np.int8).reshape(1, 256)]             # every int8 code
    result = rewrite_model(original, RewriteOptions(target="nnapi", inputs=x))
    assert _ops(result.model) == Counter({"MUL": 1}) and not _float_tensors(result.model)
    reference = verify.run_tflite(original, x, kernels="cpu")[0].astype(np.int64)
    candidate = verify.run_tflite(result.model, x, kernels="cpu")[0].astype(np.int64)
    assert np.abs(reference - candidate).max() <= steps                    # equal scales: exact
    assert rewrite_model(original, RewriteOptions(target="xnnpack")).model == original   # only for NPUs


def test_integer_negation_leaves_a_chain_whose_float_tensor_is_read_elsewhere():
    original = _negation_model(0.02, 10, float_output_too=True)
    result = rewrite_model(original, RewriteOptions(target="nnapi"))
    assert result.report.float_negations_made_integer == 0 and _ops(result.model)["NEG"] == 1


def _contract_int8_depthwise(model: bytes, x: np.ndarray) -> np.ndarray:
    """The WBMM_DEPTHWISE int8 contract (converters/custom_ops.py) evaluated in numpy from the op's
    own tensors: int32 sum of (x - x_zp) * w plus bias, times x_scale * w_scale[c] / out_scale,
    rounded, plus out_zp, clamped (and the fused activation's clamp)."""
    from converters.custom_ops import DepthwiseOptions, unpack_options
    from wbmm_mobile import core

    tree = tflite_io.load_model(model)
    graph = tree.subgraphs[0]
    (op,) = [op for op in graph.operators if tflite_io.opcode_name(tree, op.opcodeIndex) == "WBMM_DEPTHWISE"]
    options = unpack_options("WBMM_DEPTHWISE", bytes(bytearray(op.customOptions)))
    assert isinstance(options, DepthwiseOptions)
    x_t, w_t, b_t = (graph.tensors[int(i)] for i in op.inputs)
    out_t = graph.tensors[int(op.outputs[0])]
    w = tflite_io.constant_value(tree, 0, int(op.inputs[1]))[0].astype(np.float64)
    bias = tflite_io.constant_value(tree, 0, int(op.inputs[2])).astype(np.float64)
    centred = x.astype(np.float64) - x_t.quantization.zeroPoint[0]
    acc = core.depthwise_conv2d(centred, w, "same" if options.padding == 0 else "valid", bias)   # exact integers
    scale = x_t.quantization.scale[0] * np.asarray(w_t.quantization.scale, np.float64) / out_t.quantization.scale[0]
    out = np.round(acc * scale) + out_t.quantization.zeroPoint[0]
    low = out_t.quantization.zeroPoint[0] if options.activation in (1, 3) else -128
    return np.clip(out, low, 127).astype(np.int64)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_emitted_int8_op_computes_the_builtin_kernels_result_by_the_contract(grouped, activation):
    """Without the C++ kernels: the emitted op's tensors (a grouped conv's filter transposed), run
    through the contract's arithmetic in numpy, give the builtin int8 kernel's outputs on the
    original, to within one step (float64 multiplier against TFLite's fixed-point one)."""
    original = converted_depthwise(7, size=(13, 11), channels=12, quantize="int8", grouped=grouped,
                                   activation=activation)
    rewritten = rewrite_model(original, RewriteOptions(target="wbmm", verify=False)).model
    x = verify.random_inputs(original, 7)
    reference = verify.run_tflite(original, x, kernels="cpu")[0].astype(np.int64)
    got = _contract_int8_depthwise(rewritten, x[0])
    diff = np.abs(got - reference)
    assert diff.max() <= 1 and np.count_nonzero(diff) / diff.size <= 0.01


def test_custom_refuses_an_int8_filter_that_is_not_per_channel_symmetric():
    tree = tflite_io.load_model(int8_layer(False))
    graph = tree.subgraphs[0]
    (conv,) = graph.operators
    q = graph.tensors[int(conv.inputs[1])].quantization
    q.zeroPoint = np.full(len(q.scale), 3, dtype=np.int64)                 # not symmetric any more
    broken = tflite_io.model_to_bytes(tree)
    result = rewrite_model(broken, RewriteOptions(target="wbmm", verify=False))
    layer = result.report.layers[0]
    assert layer.strategy == "builtin_kernel" and "per channel with zero points 0" in layer.reason
