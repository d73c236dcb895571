"""Tiny .tflite models for the delegate tests, written with the flatbuffer object API.

The converter helpers will emit the custom ops WBMM / WBMM_DEPTHWISE themselves;
these builders exist so the delegate can be tested on its own, with the format
taken from ``converters/custom_ops.py`` (the single definition). Not a library:
test support only.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters.custom_ops import WBMM_DEPTHWISE_OP, WBMM_OP, DepthwiseOptions, WbmmOptions


def _tensor(name: str, shape, dtype: int, buffer: int = 0) -> schema.TensorT:
    t = schema.TensorT()
    t.name = name
    t.shape = list(shape)
    t.type = dtype
    t.buffer = buffer
    return t


def _buffer(data: bytes | None) -> schema.BufferT:
    b = schema.BufferT()
    b.data = None if data is None else np.frombuffer(data, dtype=np.uint8)
    return b


def custom_op_model(op_name: str, x_shape, kernel: np.ndarray, options: bytes, bias: np.ndarray | None = None,
                    kernel_dtype=np.float32, dequantize: bool = False) -> bytes:
    """x -> op(x, kernel (1, kh, kw, C)[, bias]) -> y, one subgraph.

    ``kernel_dtype=np.float16`` stores the kernel as float16; with ``dequantize``
    a DEQUANTIZE op widens it first (what the converter emits for fp16 weights).
    """
    batch, height, width, channels = x_shape
    kernel = np.asarray(kernel).reshape(1, *np.asarray(kernel).shape[-3:])
    model = schema.ModelT()
    model.version = 3
    model.description = "wbmm delegate test model"
    model.buffers = [_buffer(None), _buffer(kernel.astype(kernel_dtype).tobytes())]
    tensors = [_tensor("x", x_shape, schema.TensorType.FLOAT32)]
    fp16 = np.dtype(kernel_dtype) == np.float16
    tensors.append(_tensor("kernel_stored", kernel.shape, schema.TensorType.FLOAT16 if fp16 else schema.TensorType.FLOAT32, 1))
    codes, operators = [], []
    kernel_index = 1
    if dequantize:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
        codes.append(code)
        tensors.append(_tensor("kernel", kernel.shape, schema.TensorType.FLOAT32))
        op = schema.OperatorT()
        op.opcodeIndex = len(codes) - 1
        op.inputs = [1]
        op.outputs = [2]
        operators.append(op)
        kernel_index = 2
    inputs = [0, kernel_index]
    if bias is not None:
        model.buffers.append(_buffer(np.asarray(bias, np.float32).tobytes()))
        tensors.append(_tensor("bias", (channels,), schema.TensorType.FLOAT32, len(model.buffers) - 1))
        inputs.append(len(tensors) - 1)
    if op_name == WBMM_OP:
        out_shape = x_shape
    else:
        unpacked = np.frombuffer(options, "<i4")
        kh, kw, padding = int(unpacked[2]), int(unpacked[3]), int(unpacked[4])
        out_shape = (batch, height, width, channels) if padding == 0 else (batch, height - kh + 1, width - kw + 1, channels)
    tensors.append(_tensor("y", out_shape, schema.TensorType.FLOAT32))
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = op_name
    codes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(codes) - 1
    op.inputs = inputs
    op.outputs = [len(tensors) - 1]
    op.customOptions = list(options)
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    operators.append(op)
    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = [0]
    subgraph.outputs = [len(tensors) - 1]
    subgraph.operators = operators
    subgraph.name = "main"
    model.subgraphs = [subgraph]
    model.operatorCodes = codes
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def wbmm_model(x_shape, kernel: np.ndarray, window, shortcut: bool = True, bias=None, **kwargs) -> bytes:
    wh, ww = (window, window) if isinstance(window, int) else window
    return custom_op_model(WBMM_OP, x_shape, kernel, WbmmOptions(wh, ww, shortcut).pack(), bias, **kwargs)


def depthwise_model(x_shape, kernel: np.ndarray, padding: int = 0, activation: int = 0, bias=None, **kwargs) -> bytes:
    kh, kw = np.asarray(kernel).shape[-3:-1]
    return custom_op_model(WBMM_DEPTHWISE_OP, x_shape, kernel, DepthwiseOptions(kh, kw, padding, activation).pack(),
                           bias, **kwargs)
