"""converters.keras_convert + converters.lowerings: op types, rank <= 4, numbers against the numpy
reference with explicit tolerances, reload, precisions, refusals and deliberately wrong models."""

from __future__ import annotations

import numpy as np
import pytest

from converters import tflite_io
from converters.custom_ops import WBMM_OP, unpack_options
from converters.keras_convert import convert_keras, to_tflite, verify_against_keras, wbmm_params
from converters.lowerings import LOWERING_NAMES, get_lowering
from converters.verify import load_interpreter, random_inputs, run_tflite
from wbmm_mobile import core
from wbmm_mobile.errors import ConversionError, UnsupportedLayerError, VerificationError

RTOL_FP32 = 1e-4      # the project's float32 policy, relative to max|reference|


def _single_wbmm(shape=(10, 12, 6), window=(4, 4), use_bias=True, use_shortcut=True, seed=0):
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input(shape, batch_size=1)
    layer = WBMM(window, use_bias=use_bias, use_shortcut=use_shortcut, name="wbmm_a")
    model = keras.Model(inp, layer(inp))
    rng = np.random.default_rng(seed)
    layer.table.assign(rng.uniform(-0.3, 0.3, layer.table.shape).astype(np.float32))
    if use_bias:
        layer.bias.assign(rng.uniform(-0.5, 0.5, layer.bias.shape).astype(np.float32))
    return model, layer


@pytest.fixture(scope="module")
def two_layer_model():
    """WBMM(4, bias) -> BN (folded) -> 1x1 conv -> WBMM((3, 5)) on a 10x12 map (both need padding)."""
    import keras

    from wbmm_mobile.layers import WBMM

    keras.utils.set_random_seed(1)
    inp = keras.Input((10, 12, 8), batch_size=1)
    x = WBMM(4, use_bias=True, name="w1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = WBMM((3, 5), name="w2")(x)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(1)
    for layer in model.layers[1:]:
        for weight in layer.weights:
            low, high = (0.5, 2.0) if "variance" in weight.path or "gamma" in weight.path else (-0.3, 0.3)
            weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def wbmm_bn_model():
    """WBMM(4, bias) -> BN on a 10x12x8 map: one quantised stage for the int8 policy (two output
    steps bound the error of one layer; a stack of int8 layers accumulates more)."""
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((10, 12, 8), batch_size=1)
    x = WBMM(4, use_bias=True, name="w1")(inp)
    model = keras.Model(inp, keras.layers.BatchNormalization(name="bn1")(x))
    rng = np.random.default_rng(2)
    for layer in model.layers[1:]:
        for weight in layer.weights:
            low, high = (0.5, 2.0) if "variance" in weight.path or "gamma" in weight.path else (-0.3, 0.3)
            weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    return model


def _tree(data: bytes):
    return tflite_io.load_model(data)


def _all_ranks(data: bytes) -> list[int]:
    tree = _tree(data)
    return [len(t.shape) for sg in tree.subgraphs for t in sg.tensors if t.shape is not None]


def test_registry_is_ordered_and_complete():
    assert LOWERING_NAMES == ("bmm", "gather", "custom")
    assert get_lowering("gather").name == "gather"
    with pytest.raises(ValueError, match="unknown lowering"):
        get_lowering("magic")


@pytest.mark.parametrize("lowering", ["bmm", "gather"])
def test_builtin_lowerings_match_numpy_reference(lowering, tmp_path):
    model, layer = _single_wbmm()
    result = convert_keras(model, lowering=lowering)
    ops = tflite_io.op_names(_tree(result.tflite))
    assert ops.count("BATCH_MATMUL") == 1
    assert ops.count("GATHER") == (1 if lowering == "gather" else 0)
    assert "CUSTOM" not in ops and WBMM_OP not in ops
    assert max(_all_ranks(result.tflite)) <= 4 and result.report.max_tensor_rank <= 4
    # Numbers against core.wbmm_forward (float64), explicit tolerance, on a reloaded file.
    path = tmp_path / f"{lowering}.tflite"
    path.write_bytes(result.tflite)
    x = random_inputs(path, seed=5)[0]
    expected = core.wbmm_forward(x.astype(np.float64), layer.table.numpy().astype(np.float64), layer.window,
                                 shortcut=True, bias=layer.bias.numpy())
    for kernels in ("xnnpack", "cpu"):
        got = run_tflite(path, [x], kernels=kernels)[0]
        assert got.shape == (1, 10, 12, 6)
        np.testing.assert_allclose(got, expected, rtol=0, atol=RTOL_FP32 * np.abs(expected).max())
    assert result.report.verification.passed and result.report.verification.max_rel <= RTOL_FP32


def test_gather_file_keeps_the_compact_table():
    model, layer = _single_wbmm(shape=(14, 14, 16), window=7, use_bias=False)
    dense = convert_keras(model, lowering="bmm").report
    gathered = convert_keras(model, lowering="gather").report
    table_bytes = 16 * 13 * 13 * 4
    dense_bytes = 16 * 49 * 49 * 4
    assert gathered.compact_table_bytes == table_bytes and dense.layers[0].dense_bytes == dense_bytes
    assert dense.tflite_bytes > dense_bytes                       # M is in the bmm file
    # gather: the table, two length-d index vectors and the graph; no dense M left behind.
    rest = dense.tflite_bytes - dense_bytes
    assert gathered.tflite_bytes <= 1.2 * (table_bytes + rest)
    assert gathered.tflite_bytes < dense.tflite_bytes / 5
    assert gathered.op_counts["SUB"] == 1 and gathered.op_counts["GATHER"] == 1


def test_custom_lowering_writes_one_wbmm_op_in_the_shared_format():
    model, layer = _single_wbmm(window=(4, 3))
    result = convert_keras(model, lowering="custom")
    tree = _tree(result.tflite)
    ops = tflite_io.op_names(tree)
    assert ops == [WBMM_OP]
    assert result.report.needs_delegate
    op = tree.subgraphs[0].operators[0]
    options = unpack_options(WBMM_OP, bytes(bytearray(op.customOptions)))
    assert (options.window_h, options.window_w, options.shortcut) == (4, 3, False)
    kernel = tflite_io.constant_value(tree, 0, int(op.inputs[1]))
    assert kernel.shape == (1, 7, 5, 6) and kernel.dtype == np.float32
    expected_table = layer.table.numpy().copy()
    expected_table[:, core.center_offset((4, 3))] += 1.0           # shortcut folded into the centre
    np.testing.assert_array_equal(core.kernel_to_table(kernel[0])[0], expected_table)
    np.testing.assert_array_equal(tflite_io.constant_value(tree, 0, int(op.inputs[2])), layer.bias.numpy())
    assert max(_all_ranks(result.tflite)) <= 4
    # Verified either with the delegate or per layer in numpy; both are real checks.
    assert result.report.verification is not None or result.report.layers[0].numpy_check["passed"]


def test_two_layer_model_folds_batchnorm_and_verifies(two_layer_model):
    params, _, folded_bn = wbmm_params(two_layer_model)
    assert [p.folded for p in params] == [["shortcut", "batchnorm 'bn1'"], ["shortcut"]]
    assert len(folded_bn) == 1
    for lowering in ("bmm", "gather"):
        result = convert_keras(two_layer_model, lowering=lowering)
        ops = tflite_io.op_names(_tree(result.tflite))
        assert ops.count("BATCH_MATMUL") == 2 and ops.count("PAD") == 2
        assert "MUL" not in ops                                         # the BN went into the table
        assert result.report.verification.max_rel <= RTOL_FP32
        assert max(_all_ranks(result.tflite)) <= 4
        load_interpreter(result.tflite, kernels="cpu")             # reloads with the stock runtime


@pytest.mark.parametrize("lowering", ["bmm", "gather"])
def test_float16_and_int8_follow_the_policy(two_layer_model, wbmm_bn_model, lowering):
    half = convert_keras(two_layer_model, lowering=lowering, precision="float16").report
    assert half.verification.passed and half.verification.max_rel <= 1e-2
    assert "float16" in half.verification.tolerance
    with pytest.warns(UserWarning, match="no representative data"):
        full = convert_keras(wbmm_bn_model, lowering=lowering, precision="int8").report
    interpreter_specs = full.verification.outputs[0]
    assert interpreter_specs.tolerance.absolute is not None            # two output steps, absolute
    assert full.verification.max_abs <= interpreter_specs.tolerance.absolute
    assert full.warnings and "representative" in full.warnings[0]


def test_int8_with_representative_data(wbmm_bn_model):
    data = np.random.default_rng(3).uniform(-1, 1, (8, 10, 12, 8)).astype(np.float32)
    result = convert_keras(wbmm_bn_model, lowering="bmm", precision="int8", representative_data=data)
    assert not result.report.warnings
    spec = load_interpreter(result.tflite).get_input_details()[0]
    assert spec["dtype"] == np.int8
    tree = _tree(result.tflite)
    matmul_rhs = [tree.subgraphs[0].tensors[op.inputs[1]] for op in tree.subgraphs[0].operators
                  if tflite_io.opcode_name(tree, op.opcodeIndex) == "BATCH_MATMUL"]
    assert all(t.type == 9 for t in matmul_rhs)                       # TensorType.INT8 weights


def test_custom_int8_emits_the_int8_wbmm_op_then_tflites_own_shortcut_ops(wbmm_bn_model):
    """int8 + custom: the WBMM op on the table alone (the BN scale folded in, the identity kept
    out), quantised per channel symmetric as TFLite quantises the equivalent depthwise conv,
    int32 bias at input scale x filter scale, its output at its own calibrated scale; then the
    shortcut x * s as TFLite quantises it (int8 MUL by the BN scale, int8 ADD), no float tensor
    anywhere; within two output steps of Keras (through the delegate when it runs int8 custom
    ops, else per op in numpy; tests/test_rewrite_int8_custom.py runs it on the delegate)."""
    from converters.custom_ops import WBMM_OP, unpack_options

    data = np.random.default_rng(3).uniform(-1, 1, (8, 10, 12, 8)).astype(np.float32)
    result = convert_keras(wbmm_bn_model, lowering="custom", precision="int8", representative_data=data)
    assert result.report.layers[0].folded == ["batchnorm 'bn1'"]
    tree = _tree(result.tflite)
    graph = tree.subgraphs[0]
    assert {t.type for t in graph.tensors} <= {9, 2}                     # INT8, INT32 only
    # The calibration placeholder (windows on the batch axis, a conv, windows back, crop) is gone:
    # one op from the map to the map, 10x12 in windows of 4x4, then the shortcut's builtin ops.
    assert tflite_io.op_names(tree) == [WBMM_OP, "MUL", "ADD"]
    op, mul, add = graph.operators
    assert unpack_options(WBMM_OP, bytes(bytearray(op.customOptions))).shortcut is False
    x, table, bias, out = (graph.tensors[int(i)] for i in list(op.inputs) + list(op.outputs))
    assert (x.type, table.type, bias.type, out.type) == (9, 9, 2, 9)
    assert list(table.shape) == [1, 7, 7, 8] and table.quantization.quantizedDimension == 3
    assert list(x.shape) == list(out.shape) == [1, 10, 12, 8]
    assert len(table.quantization.scale) == 8 and not np.any(table.quantization.zeroPoint)
    # The shortcut path reads the op's input; the ADD joins it to the op's output at its own scale.
    assert int(op.inputs[0]) in [int(i) for i in mul.inputs] and int(op.outputs[0]) in [int(i) for i in add.inputs]
    assert int(mul.outputs[0]) in [int(i) for i in add.inputs] and int(add.outputs[0]) == int(graph.outputs[0])
    assert out.quantization.scale[0] != graph.tensors[int(add.outputs[0])].quantization.scale[0]
    (s_index,) = [int(i) for i in mul.inputs if int(i) != int(op.inputs[0])]
    s_tensor = graph.tensors[s_index]
    bn_scale = wbmm_params(wbmm_bn_model, fold_shortcut=False)[0][0].shortcut_scale
    (s_scale,), (s_zero,) = s_tensor.quantization.scale, s_tensor.quantization.zeroPoint     # int8, per tensor
    stored_s = (tflite_io.constant_value(tree, 0, s_index).astype(np.float64).reshape(-1) - s_zero) * s_scale
    np.testing.assert_allclose(stored_s, bn_scale, atol=s_scale / 2 * 1.001)
    values = tflite_io.constant_value(tree, 0, int(op.inputs[1])).astype(np.float64)
    # The stored int8 table is the deploy table (BN scale folded, no identity) within half a step per channel.
    deploy = wbmm_params(wbmm_bn_model, fold_shortcut=False)[0][0].kernel()     # (7, 7, 8) float
    assert not np.allclose(deploy, wbmm_params(wbmm_bn_model)[0][0].kernel())  # the identity is out
    half_step = np.asarray(table.quantization.scale) / 2
    assert np.all(np.abs(values[0] * np.asarray(table.quantization.scale) - deploy) <= half_step * 1.001)
    assert np.abs(values).reshape(-1, 8).max(axis=0).tolist() == [127.0] * 8   # max|table_c| / 127 per channel
    np.testing.assert_allclose(bias.quantization.scale, x.quantization.scale[0] * np.asarray(table.quantization.scale),
                               rtol=1e-6)
    if result.report.verification is not None:
        assert result.report.verification.passed and "2 steps" in result.report.verification.tolerance
    else:
        check = result.report.layers[0].numpy_check
        assert check["passed"] and "2 steps" in check["tolerance"]


def test_plain_conversion_refuses_what_it_cannot_do(two_layer_model):
    import keras

    with pytest.raises(ValueError, match="precision 'int4'"):
        to_tflite(two_layer_model, "int4")
    with pytest.raises(ValueError, match="int8 conversion needs representative data"):
        to_tflite(two_layer_model, "int8")
    # An op TFLite has no builtin for (SVD): the converter's own reason, as ConversionError.
    import tensorflow as tf

    inp = keras.Input((4, 4), batch_size=1)
    unsupported = keras.Model(inp, keras.layers.Lambda(lambda x: tf.linalg.svd(x, compute_uv=False))(inp))
    with pytest.raises(ConversionError, match="the TFLite converter failed at float32: .*Svd"):
        to_tflite(unsupported)


def test_dynamic_spatial_size_is_refused():
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((None, None, 4), batch_size=1)
    model = keras.Model(inp, WBMM(3, name="dyn")(inp))
    with pytest.raises(UnsupportedLayerError, match="layer 'dyn'.*spatial size unknown"):
        convert_keras(model)


def test_a_corrupted_matrix_fails_verification():
    from converters.lowerings.base import has_marker

    model, _ = _single_wbmm()
    good = convert_keras(model, lowering="bmm").tflite
    tree = _tree(good)
    subgraph = tree.subgraphs[0]
    matmul = next(op for op in subgraph.operators if tflite_io.opcode_name(tree, op.opcodeIndex) == "BATCH_MATMUL")
    rhs = subgraph.tensors[matmul.inputs[1]]
    assert has_marker(subgraph.tensors[matmul.outputs[0]], "wbmm_lowered_0")
    values = tflite_io.constant_value(tree, 0, int(matmul.inputs[1])).copy()
    values[0, 0, 0] += 0.5                                             # one wrong weight in channel 0
    tree.buffers[rhs.buffer].data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
    broken = tflite_io.model_to_bytes(tree)
    with pytest.raises(VerificationError, match="disagrees with the reference.*tolerance float32"):
        verify_against_keras(model, broken, "float32")
    assert verify_against_keras(model, good, "float32").passed


def test_nested_wbmm_inside_a_block_layer_is_lowered():
    import keras

    from wbmm_mobile.layers import WBMM

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.op = WBMM(3, name="inner_wbmm")

        def call(self, x):
            return self.op(x) * 0.5

    inp = keras.Input((6, 6, 4), batch_size=1)
    block = Block(name="block")
    model = keras.Model(inp, block(inp))
    block.op.table.assign(np.random.default_rng(0).uniform(-0.3, 0.3, block.op.table.shape).astype(np.float32))
    result = convert_keras(model, lowering="gather")
    ops = tflite_io.op_names(_tree(result.tflite))
    assert "GATHER" in ops and "BATCH_MATMUL" in ops
    assert result.report.verification.max_rel <= RTOL_FP32
    assert "call" not in vars(block.op)                                 # the swap was undone


def test_gather_index_form_follows_the_size_budget():
    """Narrow layer: the (d, d) index would cost more than 15% of the table, so it is computed per
    call (SUB); wide layer: it is stored, as int16 here, and the numbers are the same."""
    from converters.lowerings.gather import INDEX_BUDGET

    model, layer = _single_wbmm(shape=(7, 7, 64), window=7, use_bias=False)
    result = convert_keras(model, lowering="gather")
    tree = _tree(result.tflite)
    assert "SUB" not in tflite_io.op_names(tree)
    gather = next(op for op in tree.subgraphs[0].operators if tflite_io.opcode_name(tree, op.opcodeIndex) == "GATHER")
    index = tflite_io.constant_value(tree, 0, int(gather.inputs[1]))
    assert index.dtype == np.int16 and index.nbytes <= INDEX_BUDGET * 64 * 169 * 4
    np.testing.assert_array_equal(index, core.relative_position_index(7))
    assert any("constant int16 index" in note for note in result.report.notes)
    x = random_inputs(result.tflite, seed=9)[0]
    expected = core.wbmm_forward(x.astype(np.float64), layer.table.numpy().astype(np.float64), 7, shortcut=True)
    got = run_tflite(result.tflite, [x])[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=RTOL_FP32 * np.abs(expected).max())


def test_custom_without_delegate_checks_each_op_in_numpy(two_layer_model, monkeypatch):
    import converters.keras_convert as kc

    monkeypatch.setattr(kc, "wbmm_delegate_factory", lambda given=None: (None, "no delegate in this test"))
    report = convert_keras(two_layer_model, lowering="custom").report
    assert report.needs_delegate and report.verification is None
    assert "needs the wbmm delegate" in report.verification_note and "no delegate in this test" in report.verification_note
    checks = [layer.numpy_check for layer in report.layers]
    assert [c["layer"] for c in checks] == ["w1", "w2"]
    assert all(c["passed"] and c["max_rel"] <= RTOL_FP32 for c in checks)
    with pytest.raises(Exception, match="(?i)custom"):
        load_interpreter(convert_keras(two_layer_model, lowering="custom", verify=False).tflite)


def test_custom_runs_on_the_wbmm_delegate(two_layer_model):
    import delegates

    try:
        delegate = delegates.load()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"wbmm delegate not built here ({exc}); `make test` builds it first")
    result = convert_keras(two_layer_model, lowering="custom", delegate=delegate)
    assert "delegate" in result.report.verification_note
    assert result.report.verification.passed and result.report.verification.max_rel <= RTOL_FP32
    half = convert_keras(two_layer_model, lowering="custom", precision="float16", delegate=delegate).report
    assert half.verification.max_rel <= 1e-2


def _branchy(size: int):
    """WBMM(7)(x) + BN(dw3(x)) + dw5(x) -> BN, as in WBMM-P's stage 4, on a size x size x 8 map."""
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((size, size, 8), batch_size=1)
    w = WBMM(7, name="w")(inp)
    b3 = keras.layers.BatchNormalization(name="b3_bn")(
        keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="b3")(inp))
    b5 = keras.layers.DepthwiseConv2D(5, padding="same", use_bias=True, name="b5")(inp)
    y = keras.layers.BatchNormalization(name="op_bn")(keras.layers.Add(name="branches")([w, b3, b5]))
    model = keras.Model(inp, y)
    rng = np.random.default_rng(5)
    for weight in model.weights:
        low, high = (0.5, 2.0) if "variance" in weight.path or "gamma" in weight.path else (-0.3, 0.3)
        weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    return model


def test_parallel_branches_fold_into_the_table_on_a_single_window():
    model = _branchy(7)
    nodes_before = [len(layer._inbound_nodes) for layer in model.layers]
    result = convert_keras(model, lowering="bmm")
    assert result.report.layers[0].folded == ["shortcut", "branch 'b3' + 'b3_bn'", "branch 'b5'",
                                              "batchnorm 'op_bn'"]
    ops = tflite_io.op_names(_tree(result.tflite))
    assert "DEPTHWISE_CONV_2D" not in ops and ops.count("BATCH_MATMUL") == 1 and "MUL" not in ops
    assert result.report.verification.max_rel <= RTOL_FP32
    # Converting did not touch the user's model: a second conversion sees the same graph.
    assert [len(layer._inbound_nodes) for layer in model.layers] == nodes_before
    again = convert_keras(model, lowering="gather").report
    assert again.layers[0].folded == result.report.layers[0].folded and again.verification.max_rel <= RTOL_FP32


def test_branches_are_not_folded_across_window_borders():
    model = _branchy(14)                     # four windows: the branches see across window borders
    result = convert_keras(model, lowering="bmm")
    assert result.report.layers[0].folded == ["shortcut"]
    ops = tflite_io.op_names(_tree(result.tflite))
    assert ops.count("DEPTHWISE_CONV_2D") == 2
    assert result.report.verification.max_rel <= RTOL_FP32


def test_custom_splits_a_fused_activation_off_the_wbmm_op():
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((8, 8, 4), batch_size=1)
    layer = WBMM(4, use_bias=True, name="w")
    model = keras.Model(inp, keras.layers.ReLU(name="relu")(layer(inp)))
    rng = np.random.default_rng(6)
    for weight in model.weights:
        weight.assign(rng.uniform(-0.3, 0.3, weight.shape).astype(np.float32))
    result = convert_keras(model, lowering="custom")
    ops = tflite_io.op_names(_tree(result.tflite))
    assert ops == [WBMM_OP, "RELU"]             # the converter fused RELU into the placeholder
    assert result.report.verification is not None or result.report.layers[0].numpy_check is not None
    if result.report.verification is not None:   # run on the delegate: the RELU is really applied
        assert result.report.verification.max_rel <= RTOL_FP32
