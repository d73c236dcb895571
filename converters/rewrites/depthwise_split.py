"""Exact rewrite ``split``: a KxK depthwise conv as a sum of depthwise convs of at most 5x5.

The kernel's taps are cut into blocks of at most ``MAX_PIECE`` rows and columns
(7 -> 5+2, 13 -> 5+5+3). Each block is a VALID depthwise conv on the slice of the
(once) zero-padded input that its taps see, and the blocks' outputs are added; the
bias rides on the first block and the activation on the last ADD. Exact up to float
summation order, because every output is still the sum of the same K*K products.

Why: XNNPACK's depthwise kernels are fast up to 25 taps and fall off a cliff above
(4.4 ms for 7x7 against 0.18 ms for 5x5 at 56x56x96, WBMM.md), so several small
convs beat one large one. Only builtin ops (PAD, STRIDED_SLICE, DEPTHWISE_CONV_2D,
ADD), so every runtime and delegate can run it. Taps that only ever see padding are
cropped first (``_depthwise.effective_kernel``).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters.rewrites._depthwise import DepthwiseLayer, effective_kernel, emit_in_float
from converters.rewrites._graph import Activation, GraphEditor, Tensor

NAME = "split"
MAX_PIECE = 5


def piece_sizes(k: int, max_piece: int = MAX_PIECE) -> list[int]:
    """Cut k taps into runs of at most ``max_piece``, full runs first (7 -> [5, 2])."""
    sizes = [max_piece] * (k // max_piece)
    if k % max_piece:
        sizes.append(k % max_piece)
    return sizes


def check(layer: DepthwiseLayer) -> str | None:
    if max(effective_kernel(layer)[0].shape[:2]) <= MAX_PIECE:
        return f"kernel {layer.kernel_size[0]}x{layer.kernel_size[1]} is already at most {MAX_PIECE}x{MAX_PIECE}"
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    emit_in_float(editor, layer, lambda ed, x, out: _emit(ed, layer, x, out))


def _emit(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kernel, ((top, bottom), (left, right)) = effective_kernel(layer)
    kh, kw, channels = kernel.shape
    _, out_h, out_w, _ = out.shape
    base = f"{layer.name}/wbmm_split"
    padded = editor.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], f"{base}/padded")

    blocks = [(r0, a, c0, b) for r0, a in _offsets(piece_sizes(kh)) for c0, b in _offsets(piece_sizes(kw))]
    # The runtime's depthwise kernel wants a bias tensor; blocks after the first share zeros.
    zeros = editor.constant(f"{base}/zero_bias", np.zeros(channels, dtype=np.float32))
    total = None
    for number, (r0, a, c0, b) in enumerate(blocks):
        name = f"{base}/block{number}_{a}x{b}"
        window = editor.slice(padded, [0, r0, c0, 0], [-1, out_h + a - 1, out_w + b - 1, -1], f"{name}/input")
        piece = editor.weight(f"{name}/kernel", kernel[r0:r0 + a, c0:c0 + b].reshape(1, a, b, channels),
                              layer.weights_float16)
        bias = zeros
        if number == 0 and layer.bias is not None:
            bias = editor.weight(f"{name}/bias", layer.bias.astype("float32"), store_float16=False)
        last = number == len(blocks) - 1
        if total is None:
            total = editor.depthwise(window, piece, bias, schema.Padding.VALID, f"{name}/output")
            continue
        partial = editor.depthwise(window, piece, zeros, schema.Padding.VALID, f"{name}/output")
        total = editor.add(total, partial, f"{name}/sum", layer.activation if last else Activation.NONE,
                           out=out if last else None)


def _offsets(sizes: list[int]) -> list[tuple[int, int]]:
    start, result = 0, []
    for size in sizes:
        result.append((start, size))
        start += size
    return result
