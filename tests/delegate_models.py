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


def _quantization(scales, zero_points, axis: int = 0) -> schema.QuantizationParametersT:
    q = schema.QuantizationParametersT()
    q.scale = [float(s) for s in np.atleast_1d(scales)]
    q.zeroPoint = [int(z) for z in np.atleast_1d(zero_points)]
    q.quantizedDimension = axis
    return q


def int8_conv_model(op: str, x_shape, kernel: np.ndarray, kernel_scales, x_quant, y_quant, bias=None, *,
                    options: bytes | None = None, padding: str = "same", activation: int = 0, dilation=(1, 1),
                    bias_scales=None, kernel_zero_points=None, x_type: int = schema.TensorType.INT8,
                    kernel_axis: int = 3) -> bytes:
    """x -> op(x, kernel (1, kh, kw, C) int8[, bias int32]) -> y, quantized by hand (TFLite's int8 spec
    unless the keyword arguments break it on purpose).

    ``op`` is ``"DEPTHWISE_CONV_2D"`` (builtin; padding, activation, dilation used) or a custom op name
    with its packed ``options``. ``x_quant`` / ``y_quant`` are (scale, zero point); ``kernel_scales``
    one per channel (or one); the bias scale defaults to x_scale * kernel_scale[c], as the spec says.
    """
    batch, height, width, channels = x_shape
    kernel = np.asarray(kernel, np.int8).reshape(1, *np.asarray(kernel).shape[-3:])
    kh, kw = kernel.shape[1:3]
    kernel_scales = np.atleast_1d(np.asarray(kernel_scales, np.float32))
    model = schema.ModelT()
    model.version = 3
    model.description = "wbmm delegate int8 test model"
    model.buffers = [_buffer(None), _buffer(kernel.tobytes())]
    x = _tensor("x", x_shape, x_type)
    x.quantization = _quantization(*x_quant)
    k = _tensor("kernel", kernel.shape, schema.TensorType.INT8, 1)
    k.quantization = _quantization(kernel_scales, np.zeros(len(kernel_scales), np.int64)
                                   if kernel_zero_points is None else kernel_zero_points, kernel_axis)
    tensors = [x, k]
    inputs = [0, 1]
    if bias is not None:
        model.buffers.append(_buffer(np.asarray(bias, np.int32).tobytes()))
        b = _tensor("bias", (channels,), schema.TensorType.INT32, len(model.buffers) - 1)
        scales = np.float32(x_quant[0]) * kernel_scales if bias_scales is None else bias_scales
        b.quantization = _quantization(scales, np.zeros(len(np.atleast_1d(scales)), np.int64))
        tensors.append(b)
        inputs.append(len(tensors) - 1)
    code = schema.OperatorCodeT()
    operator = schema.OperatorT()
    if op == "DEPTHWISE_CONV_2D":
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEPTHWISE_CONV_2D
        o = schema.DepthwiseConv2DOptionsT()
        o.padding = schema.Padding.SAME if padding == "same" else schema.Padding.VALID
        o.strideW = o.strideH = 1
        o.depthMultiplier = 1
        o.fusedActivationFunction = activation
        o.dilationHFactor, o.dilationWFactor = dilation
        operator.builtinOptionsType = schema.BuiltinOptions.DepthwiseConv2DOptions
        operator.builtinOptions = o
        eff_h, eff_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
        out_shape = x_shape if padding == "same" else (batch, height - eff_h + 1, width - eff_w + 1, channels)
    else:
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = op
        operator.customOptions = list(options)
        operator.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        words = np.frombuffer(options, "<i4")
        same = op == WBMM_OP or int(words[4]) == 0
        out_shape = x_shape if same else (batch, height - kh + 1, width - kw + 1, channels)
    y = _tensor("y", out_shape, x_type)
    y.quantization = _quantization(*y_quant)
    tensors.append(y)
    operator.opcodeIndex = 0
    operator.inputs = inputs
    operator.outputs = [len(tensors) - 1]
    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = [0]
    subgraph.outputs = [len(tensors) - 1]
    subgraph.operators = [operator]
    subgraph.name = "main"
    model.subgraphs = [subgraph]
    model.operatorCodes = [code]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def to_int8_tflite(model, input_shape, images: int = 8, seed: int = 0) -> bytes:
    """A Keras model through the real TFLiteConverter, full integer (int8 input and output),
    calibrated on ``images`` seeded standard-normal images of ``input_shape`` (no batch axis)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(images):
            yield [rng.standard_normal((1, *input_shape)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()
