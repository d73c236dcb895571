"""Property tests (hypothesis, float64) of the numpy WBMM core: they re-establish the
theorems of ``docs/WBMM.md`` numerically.

The references written here are deliberately naive pixel loops that follow the
definitions (a window is a block anchored at (0, 0); a tap outside the window
reads zero), so they share no code path with ``wbmm_mobile.core``'s
partition/einsum implementation. Float64 throughout: the tolerance 1e-10 is a
few hundred ulps of the sums involved, loose enough for summation order and far
below any real disagreement (the inputs are O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wbmm_mobile import core
from wbmm_mobile.errors import InvalidWindowError

ATOL = 1e-10
RTOL = 1e-10

windows = st.tuples(st.integers(1, 5), st.integers(1, 5))
seeds = st.integers(0, 2**32 - 1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def naive_windowed_correlation(x: np.ndarray, kernel_chw: np.ndarray, window: tuple[int, int],
                               shortcut: bool) -> np.ndarray:
    """Per-window zero-padded cross-correlation, written from the definition.

    ``kernel_chw`` is (C, 2wh-1, 2ww-1); tap (a, b) reads the input at offset
    (a - (wh-1), b - (ww-1)) from the output pixel, and contributes only if that
    pixel lies in the same window and inside the map (the bottom/right padding
    is zeros, so "inside the map" is the padding policy).
    """
    wh, ww = window
    batch, height, width, channels = x.shape
    kh, kw = kernel_chw.shape[1:]
    out = np.zeros_like(x)
    for y in range(height):
        for xx in range(width):
            top, left = (y // wh) * wh, (xx // ww) * ww
            for a in range(kh):
                sy = y + a - (wh - 1)
                if not (top <= sy < top + wh and sy < height):
                    continue
                for b in range(kw):
                    sx = xx + b - (ww - 1)
                    if not (left <= sx < left + ww and sx < width):
                        continue
                    out[:, y, xx, :] += x[:, sy, sx, :] * kernel_chw[:, a, b]
    if shortcut:
        out = out + x
    return out


def naive_same_correlation(x: np.ndarray, kernel_hwc: np.ndarray) -> np.ndarray:
    """Full-map 'same' depthwise cross-correlation for an odd kernel, from the definition."""
    kh, kw, _ = kernel_hwc.shape
    _, height, width, _ = x.shape
    out = np.zeros_like(x)
    for y in range(height):
        for xx in range(width):
            for a in range(kh):
                sy = y + a - kh // 2
                if not 0 <= sy < height:
                    continue
                for b in range(kw):
                    sx = xx + b - kw // 2
                    if 0 <= sx < width:
                        out[:, y, xx, :] += x[:, sy, sx, :] * kernel_hwc[a, b, :]
    return out


# ---------------------------------------------------------------- index and layouts


@given(window=windows)
def test_index_matches_formula_and_covers_the_table(window):
    wh, ww = window
    index = core.relative_position_index(window)
    d = wh * ww
    assert index.shape == (d, d) and index.dtype == np.int64
    for i in range(d):
        ri, ci = divmod(i, ww)
        for j in range(d):
            rj, cj = divmod(j, ww)
            assert index[i, j] == (ri - rj + wh - 1) * (2 * ww - 1) + (ci - cj + ww - 1)
    # Range: every (2wh-1)(2ww-1) relative offset occurs, nothing outside it.
    assert set(np.unique(index).tolist()) == set(range(core.table_size(window)))
    # The zero offset sits on the diagonal; opposite offsets mirror around it.
    assert np.all(np.diag(index) == core.center_offset(window))
    assert np.array_equal(index.T, core.table_size(window) - 1 - index)


@given(window=windows, channels=st.integers(1, 4), seed=seeds)
def test_table_kernel_round_trip(window, channels, seed):
    kh, kw = core.table_shape(window)
    table = _rng(seed).normal(size=(channels, kh * kw))
    kernel = core.table_to_kernel(table, window)
    assert kernel.shape == (kh, kw, channels)
    for c in range(channels):
        for a in range(kh):
            for b in range(kw):
                assert kernel[a, b, c] == table[c, a * kw + b]
    back, back_window = core.kernel_to_table(kernel)
    assert back_window == tuple(window)
    assert np.array_equal(back, table)


def test_layout_refusals():
    with pytest.raises(InvalidWindowError):
        core.as_window(0)
    with pytest.raises(InvalidWindowError):
        core.as_window((3, 4, 5))
    with pytest.raises(InvalidWindowError):
        core.table_to_kernel(np.zeros((2, 10)), 3)          # a 3x3 window needs 25 entries
    with pytest.raises(InvalidWindowError):
        core.kernel_to_table(np.zeros((4, 5, 2)))          # even kernel height
    with pytest.raises(InvalidWindowError):
        core.partition(np.zeros((1, 5, 6, 1)), 3)          # not padded


@given(window=windows, channels=st.integers(1, 3), seed=seeds, shortcut=st.booleans())
def test_dense_matrices_are_table_gathered_by_index(window, channels, seed, shortcut):
    table = _rng(seed).normal(size=(channels, core.table_size(window)))
    index = core.relative_position_index(window)
    matrices = core.dense_matrices(table, window, shortcut=shortcut)
    d = index.shape[0]
    assert matrices.shape == (channels, d, d)
    for c in range(channels):
        for i in range(d):
            for j in range(d):
                expected = table[c, index[i, j]] + (1.0 if shortcut and i == j else 0.0)
                assert matrices[c, i, j] == expected


# ---------------------------------------------------------------- WBMM == windowed conv


@given(window=windows, batch=st.integers(1, 2), height=st.integers(1, 11), width=st.integers(1, 11),
       channels=st.integers(1, 3), seed=seeds, shortcut=st.booleans())
def test_wbmm_equals_per_window_zero_padded_correlation(window, batch, height, width, channels, seed,
                                                        shortcut):
    """Theorem: WBMM(w) == the (2w-1)^2 cross-correlation with kernel R_c reshaped,
    zero-padded at every window border, plus identity; any H, W (pad bottom/right, crop)."""
    rng = _rng(seed)
    kh, kw = core.table_shape(window)
    x = rng.normal(size=(batch, height, width, channels))
    table = rng.normal(size=(channels, kh * kw))
    expected = naive_windowed_correlation(x, table.reshape(channels, kh, kw), window, shortcut)
    got = core.wbmm_forward(x, table, window, shortcut=shortcut)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    # The core's own windowed conv agrees with the same naive loop.
    windowed = core.windowed_depthwise(x, core.table_to_kernel(table, window), window)
    np.testing.assert_allclose(windowed + (x if shortcut else 0), expected, rtol=RTOL, atol=ATOL)


@given(window=windows, channels=st.integers(1, 3), seed=seeds)
def test_wbmm_bias_is_added_per_channel(window, channels, seed):
    rng = _rng(seed)
    x = rng.normal(size=(1, window[0] + 1, window[1] + 2, channels))
    table = rng.normal(size=(channels, core.table_size(window)))
    bias = rng.normal(size=channels)
    np.testing.assert_allclose(core.wbmm_forward(x, table, window, bias=bias),
                               core.wbmm_forward(x, table, window) + bias, rtol=RTOL, atol=ATOL)


@given(window=windows, batch=st.integers(1, 2), channels=st.integers(1, 3), seed=seeds)
def test_single_window_equals_full_same_depthwise_conv(window, batch, channels, seed):
    """Theorem: on a map that is exactly one window, WBMM == the full 'same' (2w-1)^2 conv."""
    rng = _rng(seed)
    wh, ww = window
    x = rng.normal(size=(batch, wh, ww, channels))
    table = rng.normal(size=(channels, core.table_size(window)))
    kernel = core.table_to_kernel(table, window)
    full = naive_same_correlation(x, kernel)
    np.testing.assert_allclose(core.wbmm_forward(x, table, window, shortcut=False), full, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(core.wbmm_forward(x, table, window, shortcut=True), full + x,
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(core.depthwise_conv2d(x, kernel, "same"), full, rtol=RTOL, atol=ATOL)


@given(window=st.tuples(st.integers(2, 4), st.integers(1, 4)), tiles=st.tuples(st.integers(2, 3), st.integers(1, 3)),
       channels=st.integers(1, 3), seed=seeds)
def test_wbmm_differs_from_global_conv_across_window_borders(window, tiles, channels, seed):
    """Theorem: WBMM is NOT the full-map large-kernel conv once there are >= 2 windows.

    Exactly: inside window k, WBMM(x) == conv(x masked to window k); and the global
    conv differs by the taps that cross into neighbouring windows (non-zero for
    generic inputs, so claiming equality would fail here)."""
    rng = _rng(seed)
    wh, ww = window
    height, width = wh * tiles[0], ww * tiles[1]
    x = rng.normal(size=(1, height, width, channels))
    table = rng.normal(size=(channels, core.table_size(window)))
    kernel = core.table_to_kernel(table, window)
    wbmm = core.wbmm_forward(x, table, window, shortcut=False)
    global_conv = core.depthwise_conv2d(x, kernel, "same")
    # Window rows 0 and 1 touch: with wh >= 2 the kernel reaches across that border.
    assert np.abs(wbmm - global_conv).max() > 1e-3
    for ty in range(tiles[0]):
        for tx in range(tiles[1]):
            rows, cols = slice(ty * wh, (ty + 1) * wh), slice(tx * ww, (tx + 1) * ww)
            masked = np.zeros_like(x)
            masked[:, rows, cols] = x[:, rows, cols]
            np.testing.assert_allclose(wbmm[:, rows, cols], core.depthwise_conv2d(masked, kernel, "same")[:, rows, cols],
                                       rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- the Toeplitz-block theorem


def _conv_matrix(kernel_hw: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (HW x HW) matrix of the 'same' correlation, read off its responses to unit inputs."""
    d = height * width
    basis = np.eye(d).reshape(d, height, width, 1)
    rows = core.depthwise_conv2d(basis, kernel_hw[:, :, None], "same")
    return rows.reshape(d, d)   # row i = response to the unit input at i => y_flat = x_flat @ M


@given(height=st.integers(1, 6), width=st.integers(1, 6), half=st.tuples(st.integers(0, 6), st.integers(0, 6)),
       seed=seeds)
def test_same_depthwise_conv_is_a_toeplitz_block_matmul(height, width, half, seed):
    """Theorem: a zero-padded 'same' conv with an odd K on H x W is y_flat = x_flat @ M,
    M Toeplitz-block with M[i, j] = K[r_i - r_j + kh//2, c_i - c_j + kw//2] (0 outside K);
    taps beyond (2H-1) x (2W-1) never touch the input."""
    rng = _rng(seed)
    kh, kw = 2 * half[0] + 1, 2 * half[1] + 1
    kernel = rng.normal(size=(kh, kw))
    matrix = _conv_matrix(kernel, height, width)
    x = rng.normal(size=(1, height, width, 1))
    np.testing.assert_allclose(core.depthwise_conv2d(x, kernel[:, :, None], "same").reshape(-1),
                               x.reshape(-1) @ matrix, rtol=RTOL, atol=ATOL)
    for i in range(height * width):
        ri, ci = divmod(i, width)
        for j in range(height * width):
            rj, cj = divmod(j, width)
            a, b = ri - rj + kh // 2, ci - cj + kw // 2
            expected = kernel[a, b] if 0 <= a < kh and 0 <= b < kw else 0.0
            assert matrix[i, j] == pytest.approx(expected, abs=ATOL)
    # Cropping K to its central (2H-1) x (2W-1) part changes nothing.
    ch, cw = min(kh, 2 * height - 1), min(kw, 2 * width - 1)
    top, left = (kh - ch) // 2, (kw - cw) // 2
    cropped = kernel[top:top + ch, left:left + cw]
    np.testing.assert_allclose(_conv_matrix(cropped, height, width), matrix, rtol=RTOL, atol=ATOL)
    # ... and with exactly (2H-1) x (2W-1) taps it is WBMM's M for the window (H, W).
    if (kh, kw) == (2 * height - 1, 2 * width - 1):
        table, window = core.kernel_to_table(kernel[:, :, None])
        assert window == (height, width)
        np.testing.assert_allclose(core.dense_matrices(table, window)[0], matrix, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- padding policy


@given(window=windows, height=st.integers(1, 13), width=st.integers(1, 13), channels=st.integers(1, 2), seed=seeds)
def test_padding_policy_pads_bottom_right_and_crops(window, height, width, channels, seed):
    rng = _rng(seed)
    wh, ww = window
    hp, wp = core.padded_size(height, width, window)
    assert hp % wh == 0 and wp % ww == 0 and height <= hp < height + wh and width <= wp < width + ww
    x = rng.normal(size=(1, height, width, channels))
    table = rng.normal(size=(channels, core.table_size(window)))
    padded = np.zeros((1, hp, wp, channels))
    padded[:, :height, :width] = x
    np.testing.assert_array_equal(core.pad_to_window(x, window), padded)
    out = core.wbmm_forward(x, table, window)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, core.wbmm_forward(padded, table, window)[:, :height, :width],
                               rtol=RTOL, atol=ATOL)


def test_padding_is_bottom_right_not_top_left():
    """A 5x5 map with 3x3 windows: anchoring windows at the bottom/right (padding top/left)
    would group other pixels together and give another answer; the policy is (0, 0)-anchored."""
    rng = _rng(7)
    window = (3, 3)
    x = rng.normal(size=(1, 5, 5, 2))
    table = rng.normal(size=(2, core.table_size(window)))
    ours = core.wbmm_forward(x, table, window, shortcut=False)
    top_left = np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
    other = core.wbmm_forward(top_left, table, window, shortcut=False)[:, 1:, 1:]
    assert np.abs(ours - other).max() > 1e-3
    kernel = table.reshape(2, 5, 5)
    np.testing.assert_allclose(ours, naive_windowed_correlation(x, kernel, window, False), rtol=RTOL, atol=ATOL)


@given(window=windows, channels=st.integers(1, 3), seed=seeds)
def test_partition_round_trip(window, channels, seed):
    wh, ww = window
    x = _rng(seed).normal(size=(2, 2 * wh, 3 * ww, channels))
    windows_ = core.partition(x, window)
    assert windows_.shape == (2 * 2 * 3, wh * ww, channels)
    # Window n = (b, row tile, col tile) in raster order; pixel p = r*ww + c inside it.
    np.testing.assert_array_equal(windows_[4], x[0, wh:2 * wh, ww:2 * ww].reshape(wh * ww, channels))
    np.testing.assert_array_equal(core.unpartition(windows_, window, 2, 2 * wh, 3 * ww), x)


# ---------------------------------------------------------------- inference-time folding


def _random_bn(rng: np.random.Generator, channels: int) -> core.BatchNormParams:
    return core.BatchNormParams(gamma=rng.uniform(0.5, 1.5, channels), beta=rng.normal(size=channels),
                                mean=rng.normal(size=channels), var=rng.uniform(0.3, 2.0, channels), eps=1e-5)


def _apply_bn(y: np.ndarray, bn: core.BatchNormParams) -> np.ndarray:
    return bn.gamma * (y - bn.mean) / np.sqrt(bn.var + bn.eps) + bn.beta


@given(window=windows, height=st.integers(1, 9), width=st.integers(1, 9), channels=st.integers(1, 3),
       seed=seeds, with_bias=st.booleans(), shortcut=st.booleans())
def test_batchnorm_folding_is_exact(window, height, width, channels, seed, with_bias, shortcut):
    """BN(WBMM(x) + x (+ bias)) == the deployed X @ R'[I] + b, R' = s*(R + e_center), no shortcut."""
    rng = _rng(seed)
    x = rng.normal(size=(2, height, width, channels))
    table = rng.normal(size=(channels, core.table_size(window)))
    bias = rng.normal(size=channels) if with_bias else None
    bn = _random_bn(rng, channels)
    reference = _apply_bn(core.wbmm_forward(x, table, window, shortcut=shortcut, bias=bias), bn)
    folded_table, folded_bias = core.fold_batchnorm(table, window, bn, shortcut=shortcut, bias=bias)
    assert folded_table.shape == table.shape and folded_bias.shape == (channels,)
    deployed = core.wbmm_forward(x, folded_table, window, shortcut=False, bias=folded_bias)
    np.testing.assert_allclose(deployed, reference, rtol=RTOL, atol=ATOL)
    # The fold must not write into the caller's table.
    assert not np.shares_memory(folded_table, table)


@given(window=st.tuples(st.integers(3, 5), st.integers(3, 5)), channels=st.integers(1, 3), seed=seeds)
def test_branch_folding_exact_on_a_single_window_map(window, channels, seed):
    """WBMM-P stage 4: BN(WBMM(x) + x + BN3(dw3(x)) + BN5(dw5(x))) folds into one table + bias
    when the map is one window; on a map of several windows it does not."""
    rng = _rng(seed)
    wh, ww = window
    table = rng.normal(size=(channels, core.table_size(window)))
    bn3, bn5, bn = (_random_bn(rng, channels) for _ in range(3))
    k3, k5 = rng.normal(size=(3, 3, channels)), rng.normal(size=(5, 5, channels))

    def reference(x):
        mixed = (core.wbmm_forward(x, table, window, shortcut=True)
                 + _apply_bn(core.depthwise_conv2d(x, k3, "same"), bn3)
                 + _apply_bn(core.depthwise_conv2d(x, k5, "same"), bn5))
        return _apply_bn(mixed, bn)

    s3, t3 = bn3.scale_shift()
    s5, t5 = bn5.scale_shift()
    merged = core.fold_branch(core.fold_branch(table, window, k3 * s3), window, k5 * s5)
    folded_table, folded_bias = core.fold_batchnorm(merged, window, bn, shortcut=True, bias=t3 + t5)

    x = rng.normal(size=(2, wh, ww, channels))
    np.testing.assert_allclose(core.wbmm_forward(x, folded_table, window, shortcut=False, bias=folded_bias),
                               reference(x), rtol=RTOL, atol=ATOL)
    # Two windows side by side: the branches see across the border, the folded table cannot.
    x2 = rng.normal(size=(1, wh, 2 * ww, channels))
    assert np.abs(core.wbmm_forward(x2, folded_table, window, shortcut=False, bias=folded_bias)
                  - reference(x2)).max() > 1e-6


def test_branch_that_does_not_fit_is_refused():
    with pytest.raises(InvalidWindowError):
        core.fold_branch(np.zeros((1, core.table_size(2))), 2, np.zeros((5, 5, 1)))  # 5 > 2*2-1
