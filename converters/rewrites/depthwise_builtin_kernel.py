"""Exact rewrite ``builtin_kernel``: keep the conv, but run it on TFLite's own depthwise kernel
inside an XNNPACK-delegated graph.

The filter is passed through a RESHAPE to its own shape. XNNPACK only takes a
depthwise conv whose filter is a static tensor, so it leaves this one to the builtin
kernel and delegates everything around it. Why: XNNPACK's depthwise conv collapses
above 25 taps (17 ms for 13x13 at 56x56x96, WBMM.md) while TFLite's builtin kernel
skips the taps that fall on padding, which on small maps beats every rewrite
(measured: 14x14x384 K=13 about 1.7 ms builtin against 6 ms split and 17 ms XNNPACK).
Same op, same numbers; only the kernel that runs it changes.

Depends on XNNPACK's static-filter rule (LiteRT 2.3): a runtime that delegated
dynamic-filter depthwise convs would just run the conv as before, which the
measured ``auto`` table would show. Float models only.
"""

from __future__ import annotations

import copy

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
    graph = editor.graph
    original = graph.operators[layer.op_index]
    filter_index = int(original.inputs[1])
    shape = tuple(int(s) for s in graph.tensors[filter_index].shape)
    source = editor.graph.tensors[filter_index]
    runtime_filter = editor.tensor(f"{layer.name}/wbmm_builtin_kernel/filter", shape, source.type)
    options = schema.ReshapeOptionsT()
    options.newShape = np.array(shape, dtype=np.int32)
    editor.op(Builtin.RESHAPE, [filter_index, editor.int32(f"{layer.name}/wbmm_builtin_kernel/shape", shape)],
              [runtime_filter], Options.ReshapeOptions, options)
    op = copy.copy(original)
    inputs = [int(i) for i in original.inputs]
    inputs[1] = runtime_filter.index
    op.inputs = np.array(inputs, dtype=np.int32)
    editor.ops.append(op)
