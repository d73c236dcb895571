"""WBMM in numpy: the reference every lowering, kernel and rewrite is checked against.

Notation follows ``docs/WBMM.md``: input NHWC ``x`` of shape (B, H, W, C), window
``w = (wh, ww)``, ``d = wh*ww`` pixels per window in raster order ``p = r*ww + c``,
a table ``R`` of shape (C, T) with ``T = (2wh-1)*(2ww-1)``, the index matrix
``I[i, j] = (r_i - r_j + wh - 1)*(2ww - 1) + (c_i - c_j + ww - 1)`` and per channel
``M_c = R_c[I]``; per window ``Y_c = X_c @ M_c (+ X_c) (+ b_c)``.

The table read as a (2wh-1, 2ww-1) kernel is a depthwise cross-correlation kernel:
WBMM is that cross-correlation run inside each window with zero padding at the
window borders. ``table_to_kernel``/``kernel_to_table`` switch between the two
layouts; the kernel layout (kh, kw, C) is TFLite's depthwise layout without the
leading 1, and is what the custom ops and the C++ delegate store.

Not for speed: these are float64-friendly reference implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from wbmm_mobile.errors import InvalidWindowError

WindowLike = Union[int, Sequence[int]]


def as_window(window: WindowLike) -> tuple[int, int]:
    """Normalise ``7`` or ``(7, 7)`` to ``(wh, ww)``; refuse non-positive sizes."""
    if isinstance(window, (int, np.integer)):
        wh = ww = int(window)
    else:
        values = tuple(int(v) for v in window)
        if len(values) != 2:
            raise InvalidWindowError(f"window must be an int or a pair (wh, ww), got {window!r}")
        wh, ww = values
    if wh < 1 or ww < 1:
        raise InvalidWindowError(f"window sizes must be >= 1, got ({wh}, {ww})")
    return wh, ww


def table_shape(window: WindowLike) -> tuple[int, int]:
    """The (rows, cols) of the table read as a kernel: (2wh-1, 2ww-1)."""
    wh, ww = as_window(window)
    return 2 * wh - 1, 2 * ww - 1


def table_size(window: WindowLike) -> int:
    kh, kw = table_shape(window)
    return kh * kw


def center_offset(window: WindowLike) -> int:
    """Flat table index of the zero offset (r_i == r_j, c_i == c_j)."""
    wh, ww = as_window(window)
    return (wh - 1) * (2 * ww - 1) + (ww - 1)


def relative_position_index(window: WindowLike) -> np.ndarray:
    """``I`` (d x d, int64): table entry linking input position i to output position j."""
    wh, ww = as_window(window)
    rows, cols = np.divmod(np.arange(wh * ww), ww)
    dr = rows[:, None] - rows[None, :] + (wh - 1)
    dc = cols[:, None] - cols[None, :] + (ww - 1)
    return (dr * (2 * ww - 1) + dc).astype(np.int64)


def table_to_kernel(table: np.ndarray, window: WindowLike) -> np.ndarray:
    """(C, T) table -> (2wh-1, 2ww-1, C) depthwise kernel (same numbers, new layout)."""
    kh, kw = table_shape(window)
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != kh * kw:
        raise InvalidWindowError(
            f"table of shape {table.shape} does not fit window {as_window(window)}: expected (C, {kh * kw})")
    return np.ascontiguousarray(table.reshape(table.shape[0], kh, kw).transpose(1, 2, 0))


def kernel_to_table(kernel: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(kh, kw, C) kernel with odd kh, kw -> ((C, kh*kw) table, window ((kh+1)/2, (kw+1)/2))."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 3 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise InvalidWindowError(f"a WBMM table needs an odd (kh, kw, C) kernel, got shape {kernel.shape}")
    kh, kw, channels = kernel.shape
    table = kernel.transpose(2, 0, 1).reshape(channels, kh * kw)
    return np.ascontiguousarray(table), ((kh + 1) // 2, (kw + 1) // 2)


def dense_matrices(table: np.ndarray, window: WindowLike, shortcut: bool = False) -> np.ndarray:
    """``M`` of shape (C, d, d) with ``M_c = R_c[I]``; ``shortcut`` adds the identity."""
    index = relative_position_index(window)
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != table_size(window):
        raise InvalidWindowError(f"table of shape {table.shape} does not fit window {as_window(window)}")
    matrices = table[:, index]
    if shortcut:
        matrices = matrices + np.eye(index.shape[0], dtype=matrices.dtype)[None]
    return matrices


def padded_size(height: int, width: int, window: WindowLike) -> tuple[int, int]:
    """Smallest multiple of the window covering (H, W): the padding policy's target."""
    wh, ww = as_window(window)
    return -(-height // wh) * wh, -(-width // ww) * ww


def pad_to_window(x: np.ndarray, window: WindowLike) -> np.ndarray:
    """Zero-pad NHWC ``x`` bottom/right to a multiple of the window (the reference policy)."""
    hp, wp = padded_size(x.shape[1], x.shape[2], window)
    if (hp, wp) == x.shape[1:3]:
        return x
    return np.pad(x, ((0, 0), (0, hp - x.shape[1]), (0, wp - x.shape[2]), (0, 0)))


def partition(x: np.ndarray, window: WindowLike) -> np.ndarray:
    """NHWC with H, W multiples of the window -> (N, d, C), N = B*(H/wh)*(W/ww)."""
    wh, ww = as_window(window)
    b, h, w, c = x.shape
    if h % wh or w % ww:
        raise InvalidWindowError(f"({h}, {w}) is not a multiple of window ({wh}, {ww}); pad first")
    blocks = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return blocks.reshape(-1, wh * ww, c)


def unpartition(windows: np.ndarray, window: WindowLike, batch: int, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`partition` for a padded (height, width)."""
    wh, ww = as_window(window)
    c = windows.shape[-1]
    blocks = windows.reshape(batch, height // wh, width // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return blocks.reshape(batch, height, width, c)


def wbmm_forward(x: np.ndarray, table: np.ndarray, window: WindowLike, shortcut: bool = True,
                 bias: np.ndarray | None = None) -> np.ndarray:
    """The WBMM operator on NHWC ``x`` of any H, W (pad bottom/right, run, crop)."""
    x = np.asarray(x)
    b, h, w, _ = x.shape
    padded = pad_to_window(x, window)
    hp, wp = padded.shape[1:3]
    windows = partition(padded, window)                       # (N, d, C)
    matrices = dense_matrices(table, window, shortcut=shortcut)  # (C, d, d)
    # Y[n, j, c] = sum_i X[n, i, c] * M[c, i, j]
    out = np.einsum("nic,cij->njc", windows, matrices, optimize=True)
    if bias is not None:
        out = out + np.asarray(bias)
    return unpartition(out, window, b, hp, wp)[:, :h, :w, :]


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray, padding: str = "same",
                     bias: np.ndarray | None = None, strides: tuple[int, int] = (1, 1),
                     dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Depthwise cross-correlation, NHWC ``x`` and (kh, kw, C) kernel, TF's SAME/VALID rules."""
    x = np.asarray(x)
    kernel = np.asarray(kernel)
    kh, kw, _ = kernel.shape
    sh, sw = strides
    dh, dw = dilation
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    _, h, w, _ = x.shape
    if padding.lower() == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        pad_h = max((oh - 1) * sh + ekh - h, 0)
        pad_w = max((ow - 1) * sw + ekw - w, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    elif padding.lower() == "valid":
        oh, ow = (h - ekh) // sh + 1, (w - ekw) // sw + 1
    else:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]), dtype=np.result_type(x, kernel))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
            out += patch * kernel[i, j]
    if bias is not None:
        out = out + np.asarray(bias)
    return out


def windowed_depthwise(x: np.ndarray, kernel: np.ndarray, window: WindowLike) -> np.ndarray:
    """A 'same' depthwise cross-correlation run inside each window, zero padding at every
    window border (and bottom/right padding of the map to a multiple of the window)."""
    wh, ww = as_window(window)
    b, h, w, c = x.shape
    padded = pad_to_window(np.asarray(x), (wh, ww))
    hp, wp = padded.shape[1:3]
    blocks = padded.reshape(b, hp // wh, wh, wp // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(-1, wh, ww, c)
    out = depthwise_conv2d(blocks, kernel, "same")
    out = out.reshape(b, hp // wh, wp // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return out[:, :h, :w, :]


@dataclass(frozen=True)
class BatchNormParams:
    """An eval-mode BatchNorm: y = gamma * (x - mean) / sqrt(var + eps) + beta."""
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray(self.gamma) / np.sqrt(np.asarray(self.var) + self.eps)
        return scale, np.asarray(self.beta) - np.asarray(self.mean) * scale


def fold_batchnorm(table: np.ndarray, window: WindowLike, bn: BatchNormParams, shortcut: bool = True,
                   bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``BN(WBMM(x) (+ x) + bias)`` -> deployed ``(R', b)`` with ``y = X @ R'[I] + b`` and no shortcut.

    ``R' = s * (R + e_center)`` where e_center adds the identity at the zero offset.
    """
    scale, shift = bn.scale_shift()
    table = np.array(table, dtype=np.result_type(table, scale), copy=True)
    if shortcut:
        table[:, center_offset(window)] += 1
    folded_bias = shift if bias is None else shift + scale * np.asarray(bias)
    return table * scale[:, None], folded_bias


def fold_branch(table: np.ndarray, window: WindowLike, kernel: np.ndarray) -> np.ndarray:
    """Add a parallel odd (k, k, C) 'same' depthwise branch into the table by centring its
    kernel in the (2wh-1, 2ww-1) grid. Exact when the branch also sees zero padding at the
    window borders, which holds when the map is a single window (WBMM-P stage 4 at 224x224:
    a 7x7 map and a 7x7 window). The branch must fit: k <= 2w-1."""
    kh, kw = table_shape(window)
    kernel = np.asarray(kernel)
    bh, bw = kernel.shape[:2]
    if bh % 2 == 0 or bw % 2 == 0 or bh > kh or bw > kw:
        raise InvalidWindowError(f"branch kernel {kernel.shape[:2]} cannot be centred in a {kh}x{kw} table")
    grid = table_to_kernel(table, window).copy()
    top, left = (kh - bh) // 2, (kw - bw) // 2
    grid[top:top + bh, left:left + bw, :] += kernel
    return kernel_to_table(grid)[0]
