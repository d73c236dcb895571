"""Exact rewrite ``builtin_kernel``: keep the conv, but run it on TFLite's own depthwise kernel
inside an XNNPACK-delegated graph.

The filter is passed through a RESHAPE to its own shape. XNNPACK only takes a
depthwise conv whose filter is a static tensor, so it leaves this one to the builtin
kernel and delegates everything around it. Why: XNNPACK's depthwise conv collapses
above 25 taps (17 ms for 13x13 at 56x56x96, docs/WBMM.md) while TFLite's builtin kernel
skips the taps that fall on padding, which on small maps beats every rewrite
(measured: 14x14x384 K=13 about 1.7 ms builtin against 6 ms split and 17 ms XNNPACK).
Same op, same numbers; only the kernel that runs it changes.

Integer layers keep their integers: the RESHAPE reads the layer's own int8 per-channel
filter and its output carries the filter's quantisation (same scales, zero points and
quantized_dimension), so the builtin int8 kernel computes exactly what it computes on
the original (0 steps against TFLite's kernel on the original); the bias, input and
output are the original tensors. Measured int8 at 56x56x96, 1 thread, against XNNPACK's own
int8 kernel: 3.9x faster at 7x7 and 4.8x at 13x13 on one of this project's machines, 23x and
27x on another (``benchmarks/int8_rewrite.py``): XNNPACK's int8 depthwise collapses above 25
taps even harder than its float one. int16 (16x8)
layers are accepted too, though XNNPACK runs no int16 conv, so there it changes nothing.

Depends on XNNPACK's static-filter rule (LiteRT 2.3): a runtime that delegated
dynamic-filter depthwise convs would just run the conv as before, which the
measured ``auto`` table would show.
"""

from __future__ import annotations

import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters.rewrites._depthwise import DepthwiseLayer, integer_filter
from converters.rewrites._graph import Builtin, GraphEditor, Options

NAME = "builtin_kernel"
NO_INTEGER_FORM = None   # integer layers keep their own int8 filter and quantisation

# TFLite's op versions of DEPTHWISE_CONV_2D: 3 reads int8 per-channel filters, 5 int16 activations.
_INTEGER_VERSION = {"int8": 3, "int16": 5}


def check(layer: DepthwiseLayer) -> str | None:
    if layer.precision not in ("float32", "float16", "int8", "int16"):
        return f"no {layer.precision} form"
    if layer.integer and layer.filter_index < 0:
        return "the integer filter is not a constant tensor"
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    # A fresh DEPTHWISE_CONV_2D even for a grouped CONV_2D: TFLite's grouped CONV_2D kernel
    # is far slower than its depthwise kernel (ConvNeXtTiny: 2x slower end to end).
    base = f"{layer.name}/wbmm_builtin_kernel"
    kh, kw = layer.kernel_size
    if layer.integer:
        stored = integer_filter(editor, layer, f"{base}/filter_constant")
        source = editor.graph.tensors[stored.index]
        # The RESHAPE's output must carry the filter's per-channel quantisation: the int8
        # kernel reads its scales from the tensor it gets, not from the constant behind it.
        runtime_filter = editor.tensor(f"{base}/filter", stored.shape, source.type,
                                       copy.deepcopy(source.quantization))
        bias_tensor = layer.bias_index if layer.bias_index >= 0 else None
    else:
        kernel = layer.kernel.astype(np.float32).reshape(1, kh, kw, layer.channels)
        stored = editor.weight(f"{base}/filter_constant", kernel, layer.weights_float16)
        runtime_filter = editor.tensor(f"{base}/filter", stored.shape)
        bias = layer.bias if layer.bias is not None else np.zeros(layer.channels)
        bias_tensor = editor.constant(f"{base}/bias", bias.astype(np.float32))
    options = schema.ReshapeOptionsT()
    options.newShape = np.array(stored.shape, dtype=np.int32)
    editor.op(Builtin.RESHAPE, [stored, editor.int32(f"{base}/shape", stored.shape)], [runtime_filter],
              Options.ReshapeOptions, options)
    editor.depthwise(layer.x, runtime_filter, bias_tensor, layer.padding, "", layer.activation, out=layer.out)
    if layer.integer:
        _set_version(editor, _INTEGER_VERSION[layer.precision])


def _set_version(editor: GraphEditor, version: int) -> None:
    """Raise the version of the DEPTHWISE_CONV_2D just emitted (the integer kernels need it)."""
    code = editor.model.operatorCodes[editor.ops[-1].opcodeIndex]
    code.version = max(int(code.version), version)
