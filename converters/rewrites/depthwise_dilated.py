"""Exact rewrite ``dilated``: a 'same' KxK depthwise conv as a sum of centred dilated depthwise
convs of at most 25 taps, each reading the input itself.

Sort the kernel's tap offsets from the centre (-K//2 .. K//2) by parity: the even offsets
(-2, 0, 2 for K=7) are a centred kernel of dilation 2, and so are the odd ones (-3, -1, 1,
3). Splitting rows, then columns, that way cuts 7x7 into 3x7 (dilation 2x1), 4x3 and 4x4
(dilation 2x2): 21 + 12 + 16 taps, each a SAME conv whose own padding equals the layer's,
so none needs the PAD and STRIDED_SLICE copies of ``split`` (7x7 there: a padded copy, two
slices, three convs, two ADDs; here three convs, two ADDs). Exact up to float summation
order: every output still sums the same K*K products.

Why: XNNPACK runs depthwise convs of up to 25 taps fast, dilated or not, and at 56x56x96
every copy of the map costs about as much as one of the small convs.

Only where such a cut exists: odd 'same' kernels at stride 1 whose every tap reaches the
map (7x7 and 9x9; from 11x11 a parity class holds more than 25 taps and only dilations
other than 1 and 2 could cut it, whose classes are not centred). Everything else is left
to ``split``.
"""

from __future__ import annotations

import itertools

from ai_edge_litert import schema_py_generated as schema

from converters.rewrites._depthwise import (SUM_OF_REQUANTISED_CONVS, DepthwiseLayer, DepthwiseTerm, effective_kernel,
                                           emit_depthwise_sum, emit_in_float)
from converters.rewrites._graph import GraphEditor, Tensor

NAME = "dilated"
# Why an integer layer gets this rewrite only as a float island (DEQUANTIZE -> float32 ->
# QUANTIZE), which converters/rewrite.py allows only with allow_float_islands.
NO_INTEGER_FORM = SUM_OF_REQUANTISED_CONVS
MAX_TAPS = 25   # XNNPACK's fast depthwise kernels cover up to 25 taps

# One axis cut: (first index, dilation) of each class. The whole axis, or its two parities.
Cut = tuple[tuple[int, int], ...]


def _axis_cuts(k: int) -> list[Cut]:
    centre = k // 2
    cuts: list[Cut] = [((0, 1),)]
    if k >= 3:
        # Offsets with the centre's parity start at index centre % 2, the others at 1 - centre % 2.
        cuts.append(((centre % 2, 2), (1 - centre % 2, 2)))
    return cuts


def _count(k: int, first: int) -> int:
    return len(range(first, k, 2))


def block_layout(kh: int, kw: int) -> list[tuple[int, int, int, int]] | None:
    """(first row, row dilation, first column, column dilation) of each block: the fewest
    centred blocks of at most MAX_TAPS taps, cutting rows first and then each row class's
    columns; None if there is no such cut."""
    if kh % 2 == 0 or kw % 2 == 0:
        return None
    best = None
    for row_cut in _axis_cuts(kh):
        per_class = []
        for first_row, row_dilation in row_cut:
            rows = kh if row_dilation == 1 else _count(kh, first_row)
            choices = []
            for col_cut in _axis_cuts(kw):
                cols = [kw if d == 1 else _count(kw, c0) for c0, d in col_cut]
                if all(rows * c <= MAX_TAPS for c in cols):
                    choices.append([(first_row, row_dilation, c0, d) for c0, d in col_cut])
            if not choices:
                break
            per_class.append(min(choices, key=len))
        else:
            blocks = list(itertools.chain.from_iterable(per_class))
            if best is None or len(blocks) < len(best):
                best = blocks
    return best


def check(layer: DepthwiseLayer) -> str | None:
    kh, kw = layer.kernel_size
    if layer.padding != schema.Padding.SAME or tuple(layer.out.shape[1:3]) != tuple(layer.x.shape[1:3]):
        return "only 'same' convs (each block's own SAME padding must equal the layer's)"
    if effective_kernel(layer)[0].shape[:2] != (kh, kw):
        return "some taps never reach the map (split crops them; dilated blocks cannot)"
    if kh * kw <= MAX_TAPS:
        return f"kernel {kh}x{kw} already has at most {MAX_TAPS} taps"
    if block_layout(kh, kw) is None:
        return f"no cut of {kh}x{kw} into centred dilated blocks of at most {MAX_TAPS} taps"
    return None


def rewrite(editor: GraphEditor, layer: DepthwiseLayer) -> None:
    emit_in_float(editor, layer, lambda ed, x, out: _emit(ed, layer, x, out))


def _emit(editor: GraphEditor, layer: DepthwiseLayer, x: Tensor, out: Tensor) -> None:
    kernel = effective_kernel(layer)[0]
    base = f"{layer.name}/wbmm_dilated"
    terms = []
    for number, (r0, dr, c0, dc) in enumerate(block_layout(*kernel.shape[:2])):
        taps = kernel[r0::dr, c0::dc]
        name = f"{base}/block{number}_{taps.shape[0]}x{taps.shape[1]}_d{dr}x{dc}"
        terms.append(DepthwiseTerm(name, taps, x, schema.Padding.SAME, (dr, dc)))
    emit_depthwise_sum(editor, layer, terms, out, base)
