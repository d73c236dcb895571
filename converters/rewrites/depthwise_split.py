"""Exact rewrite ``split``: a KxK depthwise conv as a sum of depthwise convs of at most 25 taps.

The kernel's taps are cut into blocks of at most ``MAX_TAPS`` taps: a grid of at most
5x5 blocks (13 -> 5+5+3 per axis), or full-width bands when that takes fewer blocks
(7x7 -> bands of 2, 3 and 2 rows). Each block is a VALID depthwise conv on the slice of
the (once) zero-padded input that its taps see, except a centred block, which is a
SAME conv on the input itself; the blocks' outputs are added, the bias rides on the
first block and the activation on the last ADD. Exact up to float
summation order, because every output is still the sum of the same K*K products.

Why: XNNPACK's depthwise kernels are fast up to 25 taps and fall off a cliff above
(4.4 ms for 7x7 against 0.18 ms for 5x5 at 56x56x96, docs/WBMM.md), so several small
convs beat one large one. Only builtin ops (PAD, STRIDED_SLICE, DEPTHWISE_CONV_2D,
ADD), so every runtime and delegate can run it. Taps that only ever see padding are
cropped first (``_depthwise.effective_kernel``).
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from converters.rewrites._depthwise import (SUM_OF_REQUANTISED_CONVS, DepthwiseLayer, DepthwiseTerm, effective_kernel,
                                           emit_depthwise_sum, emit_in_float)
from converters.rewrites._graph import GraphEditor, Tensor

NAME = "split"
# Why an integer layer gets this rewrite only as a float island (DEQUANTIZE -> float32 ->
# QUANTIZE), which converters/rewrite.py allows only with allow_float_islands.
NO_INTEGER_FORM = SUM_OF_REQUANTISED_CONVS
MAX_PIECE = 5
MAX_TAPS = MAX_PIECE * MAX_PIECE   # XNNPACK's fast depthwise kernels cover up to 25 taps


def piece_sizes(k: int, max_piece: int = MAX_PIECE) -> list[int]:
    """Cut k taps into runs of at most ``max_piece``, full runs first (7 -> [5, 2])."""
    sizes = [max_piece] * (k // max_piece)
    if k % max_piece:
        sizes.append(k % max_piece)
    return sizes


def _band_heights(kh: int, kw: int) -> list[int] | None:
    """Full-width bands of at most MAX_TAPS taps with an odd band in the middle when possible
    (7x7 -> 2, 3, 2: the 3x7 middle band is centred, so it runs on the unpadded input)."""
    if kw > MAX_TAPS:
        return None
    tallest = MAX_TAPS // kw
    count = -(-kh // tallest)
    if count % 2 == 1:
        for middle in range(tallest if tallest % 2 else tallest - 1, 0, -2):
            side = (kh - middle) // 2
            per_side = count // 2
            if (kh - middle) % 2 == 0 and (side == 0 or (per_side and -(-side // per_side) <= tallest)):
                top = _balanced(side, per_side)
                return top + [middle] + top[::-1]
    return _balanced(kh, count)


def _balanced(total: int, parts: int) -> list[int]:
    if total == 0 or parts == 0:
        return []
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def block_layout(kh: int, kw: int) -> list[tuple[int, int, int, int]]:
    """(row, rows, col, cols) of each block: the fewer of a 5x5 grid and full-width bands."""
    grid = [(r0, a, c0, b) for r0, a in _offsets(piece_sizes(kh)) for c0, b in _offsets(piece_sizes(kw))]
    heights = _band_heights(kh, kw)
    if heights is not None and len(heights) < len(grid):
        return [(r0, a, 0, kw) for r0, a in _offsets(heights)]
    return grid


def check(layer: DepthwiseLayer) -> str | None:
    kh, kw = effective_kernel(layer)[0].shape[:2]
    if kh * kw <= MAX_TAPS:
        return f"kernel {layer.kernel_size[0]}x{layer.kernel_size[1]} already has at most {MAX_TAPS} taps"
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    emit_in_float(editor, layer, lambda ed, x, out: _emit(ed, layer, x, out))


def _emit(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kernel, ((top, bottom), (left, right)) = effective_kernel(layer)
    kh, kw, _ = kernel.shape
    _, height, width, _ = x.shape
    _, out_h, out_w, _ = out.shape
    base = f"{layer.name}/wbmm_split"

    def centred(block) -> bool:
        # A block whose own SAME padding lines up with the layer's reads x directly: no PAD, no slice.
        r0, a, c0, b = block
        return (a % 2 == 1 and b % 2 == 1 and (out_h, out_w) == (height, width)
                and r0 == top - (a - 1) // 2 and c0 == left - (b - 1) // 2)

    blocks = sorted(block_layout(kh, kw), key=lambda block: not centred(block))
    padded = []   # the zero-padded input, made once, by the first block that slices it

    def window(name: str, r0: int, a: int, c0: int, b: int):
        def emit() -> Tensor:
            if not padded:
                padded.append(editor.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], f"{base}/padded"))
            return editor.slice(padded[0], [0, r0, c0, 0], [-1, out_h + a - 1, out_w + b - 1, -1], f"{name}/input")
        return emit

    terms = []
    for number, (r0, a, c0, b) in enumerate(blocks):
        name = f"{base}/block{number}_{a}x{b}"
        taps = kernel[r0:r0 + a, c0:c0 + b]
        if centred((r0, a, c0, b)):
            terms.append(DepthwiseTerm(name, taps, x, schema.Padding.SAME))
        else:
            terms.append(DepthwiseTerm(name, taps, window(name, r0, a, c0, b), schema.Padding.VALID))
    emit_depthwise_sum(editor, layer, terms, out, base)

def _offsets(sizes: list[int]) -> list[tuple[int, int]]:
    start, result = 0, []
    for size in sizes:
        result.append((start, size))
        start += size
    return result
