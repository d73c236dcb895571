"""One-layer .tflite models of a depthwise conv, built directly with the schema (no TensorFlow).

``depthwise_model(LayerShape)`` makes a seeded 1xHxWxC float32 model of one KxK layer;
``single_layer_model`` makes one of a given kernel (float32, or float16 behind a
DEQUANTIZE as the converter stores it), bias, padding and fused activation;
``extracted_layer_model`` copies one op of a model, with its own tensors, constants and
quantisation, into a model of its own (batch 1): how an integer layer is taken out whole,
since its scales and zero points are part of what is timed and checked. What they
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
    from converters.rewrites._graph import Builtin, Options, new_model

    editor = new_model("wbmm-mobile one-layer depthwise model")
    model, graph = editor.model, editor.model.subgraphs[0]
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


def extracted_layer_model(model, subgraph: int, op_index: int) -> bytes:
    """A .tflite holding only op ``op_index`` of ``model`` (a schema ModelT): its tensors (type, shape,
    quantisation) and constant buffers copied, the batch made 1 (a dynamic batch becomes static)."""
    import copy

    from ai_edge_litert import schema_py_generated as schema

    from converters import tflite_io
    from converters.rewrites._graph import new_model

    graph = model.subgraphs[subgraph]
    op = graph.operators[op_index]
    out = new_model("wbmm-mobile one-layer model taken from a model").model
    out.operatorCodes = [copy.deepcopy(model.operatorCodes[op.opcodeIndex])]
    sub = out.subgraphs[0]
    index_of: dict[int, int] = {}
    inputs = [int(i) for i in op.inputs]
    for index in [i for i in inputs if i >= 0] + [int(o) for o in op.outputs]:
        if index in index_of:
            continue
        tensor = copy.deepcopy(graph.tensors[index])
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is not None and len(data):
            buffer = schema.BufferT()
            buffer.data = np.array(data, dtype=np.uint8)
            out.buffers.append(buffer)
            tensor.buffer = len(out.buffers) - 1
        else:
            tensor.buffer = 0
            if tensor.shape is not None and len(tensor.shape):
                tensor.shape = np.array([1, *[int(d) for d in tensor.shape[1:]]], dtype=np.int32)
        tensor.shapeSignature = None
        index_of[index] = len(sub.tensors)
        sub.tensors.append(tensor)
    copied = copy.deepcopy(op)
    copied.opcodeIndex = 0
    copied.inputs = np.array([index_of[i] if i >= 0 else -1 for i in inputs], dtype=np.int32)
    copied.outputs = np.array([index_of[int(o)] for o in op.outputs], dtype=np.int32)
    copied.intermediates = None
    sub.operators = [copied]
    sub.inputs = np.array([index_of[inputs[0]]], dtype=np.int32)
    sub.outputs = np.array([index_of[int(o)] for o in op.outputs], dtype=np.int32)
    out.subgraphs = [sub]
    return tflite_io.model_to_bytes(out)
