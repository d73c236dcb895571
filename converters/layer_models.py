"""One-layer .tflite models of a depthwise conv, built directly with the schema (no TensorFlow).

``depthwise_model(LayerShape)`` makes a seeded 1xHxWxC float32 model of one KxK layer;
``single_layer_model`` makes one of a given kernel (float32, or float16 behind a
DEQUANTIZE as the converter stores it), bias, padding and fused activation. What they
are for: timing the rewrites of one layer (``converters.strategy_measure``, the device
tuning in ``android_harness.tune``), and checking one WBMM_DEPTHWISE layer alone
(``converters.rewrite``).

Not for: choosing a strategy (``converters.strategy``) or converting Keras models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from converters.strategy import LayerShape


def depthwise_model(shape: LayerShape, seed: int = 0, bias: bool = True) -> bytes:
    """A one-layer .tflite (1xHxWxC float32 -> DEPTHWISE_CONV_2D KxK, seeded weights) built
    directly with the schema, for timing rewrites of one layer without the TensorFlow converter."""
    rng = np.random.default_rng(seed)
    k = shape.kernel
    kernel = (rng.standard_normal((k, k, shape.channels)) / k).astype(np.float32)
    b = rng.standard_normal(shape.channels).astype(np.float32) if bias else None
    return single_layer_model((1, shape.height, shape.width, shape.channels), kernel, b, shape.padding)


def single_layer_model(x_shape: tuple[int, ...], kernel: np.ndarray, bias: np.ndarray | None = None,
                       padding: str = "SAME", activation: int = 0) -> bytes:
    """A .tflite holding one DEPTHWISE_CONV_2D with this (kh, kw, C) kernel; a float16 kernel is
    stored as float16 behind a DEQUANTIZE, the converter's float16 layout."""
    from ai_edge_litert import schema_py_generated as schema

    from converters import tflite_io
    from converters.rewrites._graph import Builtin, GraphEditor, Options

    model = schema.ModelT()
    model.version = 3
    model.description = b"wbmm-mobile one-layer depthwise model"
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [], []
    model.subgraphs = [graph]
    editor = GraphEditor(model, 0)
    kh, kw, channels = kernel.shape
    x = editor.tensor("input", tuple(x_shape))
    w = editor.weight("kernel", kernel.reshape(1, kh, kw, channels), store_float16=kernel.dtype == np.float16)
    b = editor.constant("bias", np.asarray(bias, dtype=np.float32)) if bias is not None else \
        editor.constant("bias", np.zeros(channels, dtype=np.float32))
    valid = padding.upper() == "VALID"
    out_hw = (x_shape[1] - kh + 1, x_shape[2] - kw + 1) if valid else tuple(x_shape[1:3])
    out = editor.tensor("output", (x_shape[0], *out_hw, channels))
    options = schema.DepthwiseConv2DOptionsT()
    options.padding = schema.Padding.VALID if valid else schema.Padding.SAME
    options.strideH = options.strideW = options.depthMultiplier = 1
    options.dilationHFactor = options.dilationWFactor = 1
    options.fusedActivationFunction = activation
    editor.op(Builtin.DEPTHWISE_CONV_2D, [x, w, b], [out], Options.DepthwiseConv2DOptions, options)
    graph.operators = editor.ops
    graph.inputs = np.array([x.index], dtype=np.int32)
    graph.outputs = np.array([out.index], dtype=np.int32)
    signature = schema.SignatureDefT()
    signature.signatureKey = b"serving_default"
    signature.subgraphIndex = 0
    for label, tensor, target in (("input", x, "inputs"), ("output", out, "outputs")):
        entry = schema.TensorMapT()
        entry.name = label.encode()
        entry.tensorIndex = tensor.index
        setattr(signature, target, [entry])
    model.signatureDefs = [signature]
    return tflite_io.model_to_bytes(model)
