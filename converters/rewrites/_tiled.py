"""The WBMM graph pieces shared by the ``halo`` and ``windowed`` rewrites, with rank <= 4 tensors.

The output map is cut into ``th x tw`` tiles; tile (a, b) reads the ``ph x pw`` patch
of the padded input whose top-left corner is (a*th, b*tw), with ``ph = th + halo_h``.
Per channel ``c`` every tile is one row of a matrix product

    Y_c[tile, j] = sum_p X_c[tile, p] * M_c[p, j]          (docs/WBMM.md: Y_c = X_c @ M_c)

with patch positions ``p`` and output positions ``j`` in raster order. ``windowed``
uses halo 0 and ``M_c = R_c[I]`` (the paper's operator); ``halo`` uses halo K-1 and
a Toeplitz-block ``M_c`` holding the KxK kernel, which makes it an exact conv.

Overlapping patches are gathered without gathers: the padded map is cut into
row blocks of ``th`` rows shifted by 0, th, 2*th, ... (STRIDED_SLICE + RESHAPE, no
overlap inside one slice), the first ``ph`` rows of the stacked blocks form each
patch (CONCATENATION), and the same again for columns. Channels go to the batch
axis of BATCH_MATMUL by TRANSPOSEs of rank 4, since NNAPI and some GPU delegates
accept nothing higher (docs/WBMM.md).
"""

from __future__ import annotations

import math

import numpy as np

from converters.rewrites._graph import GraphEditor, Tensor


def toeplitz_matrices(kernel: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """(C, ph*pw, th*tw) matrices with M_c[(r+i)*pw + (s+j), r*tw + s] = kernel[i, j, c]."""
    kh, kw, channels = kernel.shape
    th, tw = tile
    ph, pw = th + kh - 1, tw + kw - 1
    matrices = np.zeros((channels, ph * pw, th * tw), dtype=kernel.dtype)
    r, s, i, j = np.meshgrid(np.arange(th), np.arange(tw), np.arange(kh), np.arange(kw), indexing="ij")
    rows = ((r + i) * pw + (s + j)).ravel()
    cols = (r * tw + s).ravel()
    matrices[:, rows, cols] = kernel[i.ravel(), j.ravel(), :].T
    return matrices


def matrix_bytes(channels: int, tile: tuple[int, int], halo: tuple[int, int], itemsize: int = 4) -> int:
    th, tw = tile
    return channels * (th + halo[0]) * (tw + halo[1]) * th * tw * itemsize


def emit_tiled_matmul(editor: GraphEditor, x: Tensor, matrices: np.ndarray, tile: tuple[int, int],
                      halo: tuple[int, int], pad_before: tuple[int, int], out_hw: tuple[int, int],
                      name: str, store_float16: bool) -> Tensor:
    """Emit ops computing the tiled product on NHWC ``x``; returns the (B, OH, OW, C) result."""
    batch, height, width, channels = x.shape
    th, tw = tile
    ph, pw = th + halo[0], tw + halo[1]
    out_h, out_w = out_hw
    nbh, nbw = math.ceil(out_h / th), math.ceil(out_w / tw)
    row_blocks, col_blocks = math.ceil(ph / th), math.ceil(pw / tw)
    rows_needed = (row_blocks - 1) * th + nbh * th
    cols_needed = (col_blocks - 1) * tw + nbw * tw
    top, left = pad_before
    padded = editor.pad(x, [(0, 0), (top, rows_needed - top - height), (left, cols_needed - left - width), (0, 0)],
                        f"{name}/padded")
    channels_first = editor.transpose(padded, [0, 3, 1, 2], f"{name}/channels_first")   # (B, C, Hp, Wp)

    # Rows: (B, C*nbh, ph, Wp).
    parts = []
    for d in range(row_blocks):
        part = editor.slice(channels_first, [0, 0, d * th, 0], [-1, -1, nbh * th, -1], f"{name}/rows{d}")
        part = editor.reshape(part, (batch, channels * nbh, th, cols_needed), f"{name}/rows{d}/blocks")
        keep = min(th, ph - d * th)
        parts.append(editor.slice(part, [0, 0, 0, 0], [-1, -1, keep, -1], f"{name}/rows{d}/kept"))
    row_patches = editor.concat(parts, 2, f"{name}/row_patches")

    # Columns: (B, C*nbh*ph, nbw, pw).
    parts = []
    for e in range(col_blocks):
        part = editor.slice(row_patches, [0, 0, 0, e * tw], [-1, -1, -1, nbw * tw], f"{name}/cols{e}")
        part = editor.reshape(part, (batch, channels * nbh * ph, nbw, tw), f"{name}/cols{e}/blocks")
        keep = min(tw, pw - e * tw)
        parts.append(editor.slice(part, [0, 0, 0, 0], [-1, -1, -1, keep], f"{name}/cols{e}/kept"))
    patches = editor.concat(parts, 3, f"{name}/patches")

    # (B*C*nbh, ph, nbw, pw) -> (B*C*nbh, nbw, ph, pw) -> (B, C, tiles, ph*pw)
    patches = editor.reshape(patches, (batch * channels * nbh, ph, nbw, pw), f"{name}/patches4")
    patches = editor.transpose(patches, [0, 2, 1, 3], f"{name}/patches_by_tile")
    lhs = editor.reshape(patches, (batch, channels, nbh * nbw, ph * pw), f"{name}/lhs")
    rhs = editor.weight(f"{name}/matrices", matrices.reshape(1, channels, ph * pw, th * tw), store_float16)
    product = editor.batch_matmul(lhs, rhs, f"{name}/product")                   # (B, C, tiles, th*tw)

    # Back to NHWC: (B*C*nbh, nbw, th, tw) -> (B*C*nbh, th, nbw, tw) -> (B, C, H', W') -> (B, H', W', C)
    tiles = editor.reshape(product, (batch * channels * nbh, nbw, th, tw), f"{name}/tiles")
    tiles = editor.transpose(tiles, [0, 2, 1, 3], f"{name}/tile_rows")
    maps = editor.reshape(tiles, (batch, channels, nbh * th, nbw * tw), f"{name}/maps")
    nhwc = editor.transpose(maps, [0, 2, 3, 1], f"{name}/nhwc")
    return editor.slice(nhwc, [0, 0, 0, 0], [-1, out_h, out_w, -1], f"{name}/cropped")
