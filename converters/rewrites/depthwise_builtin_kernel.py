"""Exact rewrite ``builtin_kernel``: keep the conv, but run it on TFLite's own depthwise kernel
inside an XNNPACK-delegated graph.

The filter is passed through a RESHAPE to its own shape. XNNPACK only takes a
depthwise conv whose filter is a static tensor, so it leaves this one to the builtin
kernel and delegates everything around it. Why: XNNPACK's depthwise conv collapses
above 25 taps (17 ms for 13x13 at 56x56x96, docs/WBMM.md) while TFLite's builtin kernel
skips the taps that fall on padding, which on small maps beats every rewrite
(measured: 14x14x384 K=13 about 1.7 ms builtin against 6 ms split and 17 ms XNNPACK).
Same op, same numbers; only the kernel that runs it changes.

Depends on XNNPACK's static-filter rule (LiteRT 2.3): a runtime that delegated
dynamic-filter depthwise convs would just run the conv as before, which the
measured ``auto`` table would show. Float models only.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters.rewrites._depthwise import DepthwiseLayer
from converters.rewrites._graph import Builtin, GraphEditor, Options

NAME = "builtin_kernel"


def check(layer: DepthwiseLayer) -> str | None:
    if layer.precision not in ("float32", "float16"):
        return f"only float models ({layer.precision} is not)"
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    # A fresh DEPTHWISE_CONV_2D even for a grouped CONV_2D: TFLite's grouped CONV_2D kernel
    # is far slower than its depthwise kernel (ConvNeXtTiny: 2x slower end to end).
    base = f"{layer.name}/wbmm_builtin_kernel"
    kh, kw = layer.kernel_size
    kernel = layer.kernel.astype(np.float32).reshape(1, kh, kw, layer.channels)
    stored = editor.weight(f"{base}/filter_constant", kernel, layer.weights_float16)
    runtime_filter = editor.tensor(f"{base}/filter", stored.shape)
    options = schema.ReshapeOptionsT()
    options.newShape = np.array(stored.shape, dtype=np.int32)
    editor.op(Builtin.RESHAPE, [stored, editor.int32(f"{base}/shape", stored.shape)], [runtime_filter],
              Options.ReshapeOptions, options)
    bias = layer.bias if layer.bias is not None else np.zeros(layer.channels)
    bias_tensor = editor.constant(f"{base}/bias", bias.astype(np.float32))
    editor.depthwise(layer.x, runtime_filter, bias_tensor, layer.padding, "", layer.activation, out=layer.out)
