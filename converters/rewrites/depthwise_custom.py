"""Exact rewrite ``custom``: one ``WBMM_DEPTHWISE`` custom op that the C++ delegate executes.

The op's inputs, layout and ``custom_options`` are defined once in
``converters/custom_ops.py``: x, the kernel in TFLite's (1, kh, kw, C) layout
(float16 models keep float16 kernels), the bias or -1, and the words
(kernel_h, kernel_w, padding, activation). A model with this op runs only where the
wbmm delegate is loaded; the rewrite says so in its report.

int8 layers get the op's int8 form (``custom_ops``' docstring): the layer's own int8
input, int8 per-channel filter (a grouped CONV_2D's transposed to (1, kh, kw, C), same
numbers and scales), int32 bias and int8 output, all with their quantisation unchanged,
so the op computes what TFLite's int8 kernel computes on the original. int16 is refused:
the delegate's kernels follow TFLite's int8 scheme only.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters import custom_ops
from converters.rewrites._depthwise import DepthwiseLayer, emit_in_float, integer_filter, per_channel_symmetric
from converters.rewrites._graph import Builtin, GraphEditor, Tensor

NAME = "custom"
NO_INTEGER_FORM = None   # int8 layers get the op's int8 form

_ACTIVATIONS = {0: custom_ops.ACTIVATION_NONE, 1: custom_ops.ACTIVATION_RELU, 3: custom_ops.ACTIVATION_RELU6}


def check(layer: DepthwiseLayer) -> str | None:
    if layer.activation not in _ACTIVATIONS:
        return f"WBMM_DEPTHWISE has no fused activation {layer.activation}"
    if layer.precision == "int16":
        return "WBMM_DEPTHWISE has no int16 form (the delegate's integer kernels follow TFLite's int8 scheme)"
    if layer.integer and layer.filter_index < 0:
        return "the int8 filter is not a constant tensor"
    if layer.integer and not per_channel_symmetric(layer):
        return ("the int8 filter is not quantised per channel with zero points 0, the only weight "
                "quantisation WBMM_DEPTHWISE's int8 form takes (TFLite's own kernel keeps it)")
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    if layer.precision == "int8":
        _emit_int8(editor, layer)
    else:
        emit_in_float(editor, layer, lambda ed, x, out: _emit(ed, layer, x, out))


def _options(layer: DepthwiseLayer) -> bytes:
    kh, kw = layer.kernel_size
    padding = custom_ops.PADDING_SAME if layer.padding == schema.Padding.SAME else custom_ops.PADDING_VALID
    return custom_ops.DepthwiseOptions(kh, kw, padding, _ACTIVATIONS[layer.activation]).pack()


def _emit_int8(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    kernel = integer_filter(editor, layer, f"{layer.name}/wbmm_depthwise/kernel")
    editor.op(Builtin.CUSTOM, [layer.x, kernel, layer.bias_index if layer.bias_index >= 0 else None], [layer.out],
              custom=custom_ops.WBMM_DEPTHWISE_OP, custom_options=_options(layer))


def _emit(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kh, kw = layer.kernel_size
    channels = layer.channels
    dtype = np.float16 if layer.weights_float16 else np.float32
    kernel = editor.constant(f"{layer.name}/wbmm_depthwise/kernel", layer.kernel.astype(dtype).reshape(1, kh, kw, channels))
    bias = None
    if layer.bias is not None:
        bias = editor.constant(f"{layer.name}/wbmm_depthwise/bias", layer.bias.astype(np.float32))
    editor.op(Builtin.CUSTOM, [x, kernel, bias], [out], custom=custom_ops.WBMM_DEPTHWISE_OP,
              custom_options=_options(layer))
