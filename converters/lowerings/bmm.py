"""``bmm`` lowering: window partition by reshape/transpose, one BATCH_MATMUL with a constant dense M.

Per layer: (B, H, W, C) -[PAD]-> (B, Hp, Wp, C) -> (B*nh, wh, nw, ww*C) -> (B*nh, nw, wh, ww*C)
-> (N, d, C) -> (C, N, d); ``BATCH_MATMUL`` with ``M`` (C, d, d) = ``R'[I]`` (shortcut folded in the
centre of R'); then the same steps backwards, [crop], [+ bias]. Every tensor has rank <= 4, which
NNAPI's TRANSPOSE needs; XNNPACK delegates all of these ops. The file stores C*d^2 floats per layer
(14x the table at 7x7): the price of not gathering M at run time. ``gather`` reuses this graph.
"""

from __future__ import annotations

import numpy as np

from converters.lowerings.base import Lowering, WbmmParams


def to_windows(x, window: tuple[int, int]):
    """(windows, restore): ``x`` (B, H, W, C) zero-padded bottom/right to whole windows and cut
    into its windows stacked on the batch axis, (B*nh*nw, wh, ww, C), rank <= 4 all the way;
    ``restore`` puts such a tensor back to (B, H, W, C)."""
    import tensorflow as tf

    wh, ww = window
    _, height, width, channels = x.shape
    pad_h, pad_w = (-height) % wh, (-width) % ww
    tiles_w = (width + pad_w) // ww
    if pad_h or pad_w:
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    t = tf.transpose(tf.reshape(x, (-1, wh, tiles_w, ww * channels)), (0, 2, 1, 3))
    windows = tf.reshape(t, (-1, wh, ww, channels))

    def restore(y):
        t = tf.transpose(tf.reshape(y, (-1, tiles_w, wh, ww * channels)), (0, 2, 1, 3))
        t = tf.reshape(t, (-1, height + pad_h, width + pad_w, channels))
        return t[:, :height, :width, :] if pad_h or pad_w else t

    return windows, restore


def window_matmul(x, matrices, window: tuple[int, int], bias=None, shortcut_scale=None):
    """TensorFlow ops of the lowering; ``matrices`` is (C, d, d) (a constant or a tensor)."""
    import tensorflow as tf

    source = x
    wh, ww = window
    _, height, width, channels = x.shape
    pad_h, pad_w = (-height) % wh, (-width) % ww
    padded_h, padded_w = height + pad_h, width + pad_w
    tiles_w = padded_w // ww
    if pad_h or pad_w:
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    t = tf.reshape(x, (-1, wh, tiles_w, ww * channels))
    t = tf.transpose(t, (0, 2, 1, 3))
    t = tf.reshape(t, (-1, wh * ww, channels))          # (N, d, C), pixel p = r*ww + c
    t = tf.transpose(t, (2, 0, 1))                      # (C, N, d)
    t = tf.linalg.matmul(t, matrices)                   # Y_c = X_c @ M_c
    t = tf.transpose(t, (1, 2, 0))
    t = tf.reshape(t, (-1, tiles_w, wh, ww * channels))
    t = tf.transpose(t, (0, 2, 1, 3))
    t = tf.reshape(t, (-1, padded_h, padded_w, channels))
    if pad_h or pad_w:
        t = t[:, :height, :width, :]
    if shortcut_scale is not None:
        t = t + (source if np.all(shortcut_scale == 1.0) else source * shortcut_scale)
    if bias is not None:
        t = t + bias
    return t


class BmmLowering(Lowering):
    name = "bmm"
    summary = "reshape/transpose + BATCH_MATMUL with a constant dense M (C, d, d)"

    def emit(self, x, p: WbmmParams):
        import tensorflow as tf

        bias = None if p.bias is None else tf.constant(p.bias.astype(np.float32))
        scale = None if p.shortcut_scale is None else p.shortcut_scale.astype(np.float32)
        return window_matmul(x, tf.constant(p.dense_matrices()), p.window, bias, scale)


LOWERING = BmmLowering()
