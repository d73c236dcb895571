"""The ``static_shapes`` graph pass on models from the real TFLite converter: Keras Dense layers on
4-D tensors with a free batch compute their RESHAPE targets at run time; the pass makes them
constants (-1 for the batch), keeps the function at every batch size, and lets XNNPACK take the
whole graph."""

import functools
from collections import Counter

import numpy as np
import pytest

from converters import tflite_io
from converters.rewrite import RewriteOptions, rewrite_model

SHAPE_OPS = ("SHAPE", "GATHER", "REDUCE_PROD", "PACK")


@functools.lru_cache(maxsize=None)
def _block_model(free_spatial: bool = False) -> bytes:
    """A ConvNeXt-like block: 7x7 grouped conv, LayerNorm, Dense x4, GELU, Dense, residual; batch free."""
    import keras
    from converters.keras_convert import to_tflite

    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 8) if free_spatial else (10, 10, 8))
    x = keras.layers.Conv2D(8, 7, padding="same", groups=8, bias_initializer="random_normal")(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.Dense(32, activation="gelu")(x)
    x = keras.layers.Dense(8)(x)
    model = keras.Model(inputs, keras.layers.Add()([inputs, x]))
    return to_tflite(model)


def _ops(data: bytes) -> Counter:
    return Counter(tflite_io.op_names(tflite_io.load_model(data), 0))


def _partitions(data: bytes) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def _run(data: bytes, x: np.ndarray, kernels: str = "xnnpack") -> np.ndarray:
    from converters.verify import load_interpreter

    interpreter = load_interpreter(data, kernels=kernels)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_computed_targets_become_constants_and_the_batch_stays_free():
    stock = _block_model()
    assert all(_ops(stock)[name] for name in SHAPE_OPS)      # the converter's run-time shape arithmetic
    result = rewrite_model(stock, RewriteOptions(min_kernel=99))   # the graph pass alone, no conv rewritten
    report = result.report.static_shapes
    assert report.folded == _ops(stock)["RESHAPE"] and report.left == [] and report.reason == ""
    assert report.ops_removed >= 8
    assert not any(_ops(result.model)[name] for name in SHAPE_OPS)
    model = tflite_io.load_model(result.model)
    graph = model.subgraphs[0]
    for name, op in zip(tflite_io.op_names(model, 0), graph.operators):
        if name == "RESHAPE":
            target = tflite_io.constant_value(model, 0, int(op.inputs[1]))
            assert target is not None and list(target).count(-1) == 1
    assert result.report.verification["passed"]
    rng = np.random.default_rng(0)
    for batch in (1, 3):      # the same function at a batch the pass never ran
        x = rng.standard_normal((batch, 10, 10, 8)).astype(np.float32)
        np.testing.assert_allclose(_run(result.model, x), _run(stock, x), rtol=1e-5, atol=1e-5)


def test_xnnpack_takes_the_folded_graph_in_one_partition():
    stock = _block_model()
    folded = rewrite_model(stock, RewriteOptions(min_kernel=99)).model
    assert _partitions(stock) > 1
    assert _partitions(folded) == 1


def test_folding_then_rewriting_the_conv():
    stock = _block_model()
    result = rewrite_model(stock, RewriteOptions(strategy="dilated"))
    assert result.report.rewritten_count == 1 and result.report.static_shapes.folded > 0
    ops = _ops(result.model)
    assert ops["DEPTHWISE_CONV_2D"] == 3 and not ops["CONV_2D"] and not ops["SHAPE"]
    assert result.report.verification["max_rel"] <= 1e-4


def test_keep_dynamic_shapes_leaves_them():
    stock = _block_model()
    result = rewrite_model(stock, RewriteOptions(min_kernel=99, static_shapes=False))
    assert result.report.static_shapes is None and result.model == stock


def test_free_height_and_width_are_refused_with_the_reason():
    stock = _block_model(free_spatial=True)
    result = rewrite_model(stock, RewriteOptions(min_kernel=99))
    assert result.report.static_shapes.folded == 0
    assert "free dimension besides the batch" in result.report.static_shapes.reason
    assert result.model == stock


def test_cli_prints_what_it_folded(tmp_path):
    from wbmm_mobile.cli import main

    source = tmp_path / "block.tflite"
    source.write_bytes(_block_model())
    out = tmp_path / "out.tflite"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["rewrite", str(source), "-o", str(out), "--strategy", "dilated"])
    assert code == 0 and out.exists()
    assert "RESHAPE targets made constant" in buffer.getvalue()
    assert not _ops(out.read_bytes())["SHAPE"]
