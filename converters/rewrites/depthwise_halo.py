"""Exact rewrite ``halo``: a KxK depthwise conv as a WBMM-structured batched matmul.

Output tiles of ``t x t`` each read their ``(t+K-1)^2`` input patch (the tile plus
its halo) and multiply it, per channel, with a constant Toeplitz-block matrix that
holds the kernel (``_tiled.toeplitz_matrices``). Exact up to float summation order:
each output is still the sum of the same K*K products (the matrix's other entries
are zeros). Only builtin ops on tensors of rank <= 4 (PAD, TRANSPOSE, STRIDED_SLICE,
RESHAPE, CONCATENATION, BATCH_MATMUL, ADD).

The matrix costs C*(t+K-1)^2*t^2 weights, so the tile shrinks for large K and C and
the layer is refused past ``MAX_MATRIX_BYTES``.
"""

from __future__ import annotations

import math

from converters.rewrites._depthwise import (DepthwiseLayer, effective_kernel, emit_in_float,
                                            final_bias_and_activation)
from converters.rewrites._graph import GraphEditor, Tensor
from converters.rewrites._tiled import emit_tiled_matmul, matrix_bytes, toeplitz_matrices

NAME = "halo"
# Why an integer layer gets this rewrite only as a float island (DEQUANTIZE -> float32 ->
# QUANTIZE), which converters/rewrite.py allows only with allow_float_islands.
NO_INTEGER_FORM = ("TFLite's int8 BATCH_MATMUL requantises with one per-tensor scale for the whole Toeplitz matrix, "
                   'where the conv has one scale per channel, so it cannot equal the int8 conv')
MAX_MATRIX_BYTES = 64 * 2**20
TILE_CANDIDATES = (8, 7, 6, 5, 4)


def choose_tile(layer: DepthwiseLayer) -> int | None:
    """The tile size: least padding waste among those whose matrix fits, larger first."""
    kh, kw = effective_kernel(layer)[0].shape[:2]
    _, out_h, out_w, channels = layer.out.shape
    itemsize = 2 if layer.weights_float16 else 4
    best = None
    for t in TILE_CANDIDATES:
        if matrix_bytes(channels, (t, t), (kh - 1, kw - 1), itemsize) > MAX_MATRIX_BYTES:
            continue
        waste = math.ceil(out_h / t) * t * math.ceil(out_w / t) * t - out_h * out_w
        if best is None or waste < best[0]:
            best = (waste, t)
    return None if best is None else best[1]


def check(layer: DepthwiseLayer) -> str | None:
    if choose_tile(layer) is None:
        kh, kw = effective_kernel(layer)[0].shape[:2]
        smallest = matrix_bytes(layer.channels, (TILE_CANDIDATES[-1],) * 2, (kh - 1, kw - 1)) / 2**20
        return (f"halo matrix would need {smallest:.0f} MB even with {TILE_CANDIDATES[-1]}x{TILE_CANDIDATES[-1]} "
                f"tiles (limit {MAX_MATRIX_BYTES // 2**20} MB)")
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    emit_in_float(editor, layer, lambda ed, x, out: _emit(ed, layer, x, out))


def _emit(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kernel, ((top, _), (left, _)) = effective_kernel(layer)
    kh, kw, _ = kernel.shape
    t = choose_tile(layer)
    y = emit_tiled_matmul(editor, x, toeplitz_matrices(kernel, (t, t)), (t, t), (kh - 1, kw - 1), (top, left),
                          out.shape[1:3], f"{layer.name}/wbmm_halo{t}", layer.weights_float16)
    final_bias_and_activation(editor, layer, y, out)
