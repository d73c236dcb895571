"""Windowed mode: a KxK depthwise conv (odd K) becomes WBMM with window w = (K+1)/2 whose table
is the kernel (``wbmm_mobile.core.kernel_to_table``), without the identity shortcut.

This changes the function: inside each w x w window the conv sees zeros beyond the
window border instead of its neighbours (docs/WBMM.md: WBMM is not a full-map conv). It
is for seeing what WBMM would buy an architecture before training one; the rewrite
warns and the report states the deviation measured on seeded inputs.

Emitted either as builtin ops (the same tiled matmul as ``halo`` with halo 0 and
``M_c = R_c[I]``, dense matrices, rank <= 4) or, with ``--strategy custom``, as the
``WBMM`` custom op of ``converters/custom_ops.py``.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters import custom_ops
from converters.rewrites._depthwise import DepthwiseLayer, emit_in_float, final_bias_and_activation, float32_kernel
from converters.rewrites._graph import Builtin, GraphEditor, Tensor
from converters.rewrites._tiled import emit_tiled_matmul
from wbmm_mobile import core

NAME = "windowed"
# Why an integer layer gets this rewrite only as a float island (DEQUANTIZE -> float32 ->
# QUANTIZE), which converters/rewrite.py allows only with allow_float_islands.
NO_INTEGER_FORM = ('the builtin form is a BATCH_MATMUL with one per-tensor weight scale; the int8 WBMM custom op comes '
                   'from `convert --precision int8 --lowering custom`')


def window_of(layer: DepthwiseLayer) -> tuple[int, int]:
    kh, kw = layer.kernel_size
    return (kh + 1) // 2, (kw + 1) // 2


def check(layer: DepthwiseLayer) -> str | None:
    kh, kw = layer.kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        return f"kernel {kh}x{kw} is even: a WBMM table is (2w-1)x(2w-1)"
    if layer.padding != schema.Padding.SAME:
        return "VALID padding shrinks the map; WBMM keeps it (only SAME convs become windows)"
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer, use_custom_op: bool = False) -> None:
    emit = _emit_custom if use_custom_op else _emit_builtin
    emit_in_float(editor, layer, lambda ed, x, out: emit(ed, layer, x, out))


def _emit_builtin(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kernel = float32_kernel(layer)
    table, window = core.kernel_to_table(kernel)
    matrices = core.dense_matrices(table, window).astype(np.float32)         # (C, d, d), Y = X @ M
    y = emit_tiled_matmul(editor, x, matrices, window, (0, 0), (0, 0), out.shape[1:3],
                          f"{layer.name}/wbmm_windowed{window[0]}x{window[1]}", layer.weights_float16)
    final_bias_and_activation(editor, layer, y, out)


def _emit_custom(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kh, kw = layer.kernel_size
    wh, ww = window_of(layer)
    dtype = np.float16 if layer.weights_float16 else np.float32
    table = editor.constant(f"{layer.name}/wbmm/table", layer.kernel.astype(dtype).reshape(1, kh, kw, layer.channels))
    bias = None
    if layer.bias is not None:
        bias = editor.constant(f"{layer.name}/wbmm/bias", layer.bias.astype(np.float32))
    options = custom_ops.WbmmOptions(wh, ww, shortcut=False)
    if layer.activation == 0:
        editor.op(Builtin.CUSTOM, [x, table, bias], [out], custom=custom_ops.WBMM_OP, custom_options=options.pack())
        return
    y = editor.tensor(f"{layer.name}/wbmm/output", out.shape)
    editor.op(Builtin.CUSTOM, [x, table, bias], [y], custom=custom_ops.WBMM_OP, custom_options=options.pack())
    editor.activation(y, layer.activation, "", out=out)
