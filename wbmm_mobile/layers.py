"""Keras 3 layers: the trainable WBMM operator and the small layers of WBMM-style blocks.

``WBMM`` is the operator of ``docs/WBMM.md`` (window partition, ``M_c = R_c[I]``,
``Y_c = X_c @ M_c (+ X_c) (+ b_c)``, pad bottom/right and crop) written with
``keras.ops`` only, so any Keras backend runs it; TensorFlow is the one the
converters use. Every tensor inside it has rank <= 4 (NNAPI's TRANSPOSE limit),
which keeps even a naively traced graph deployable. ``GRN``, ``SqueezeExcite``
and ``LayerScale`` are the pieces the model zoo needs around it.

Not for deployment speed: the converters replace this layer's graph with their
own lowerings, reading ``layer.table``, ``layer.bias``, ``layer.window``,
``layer.use_shortcut`` and ``layer.use_bias``. The numpy reference the layer is
tested against is ``wbmm_mobile.core.wbmm_forward``.
"""

from __future__ import annotations

import keras
from keras import ops

from wbmm_mobile import core

__all__ = ["WBMM", "GRN", "SqueezeExcite", "LayerScale", "CUSTOM_OBJECTS"]

_PACKAGE = "wbmm_mobile"


def _channels(input_shape, layer_name: str) -> int:
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"{layer_name} needs a known channel count (last axis), got input shape {input_shape}")
    return int(channels)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WBMM(keras.layers.Layer):
    """Windowed batch matrix multiplication on NHWC maps of any height and width.

    Args:
        window_size: ``7`` or ``(wh, ww)``; the equivalent depthwise kernel is (2wh-1, 2ww-1).
        use_shortcut: add the identity (``X @ (M + 1)``), as the paper's reference does.
        use_bias: add a per-channel bias after the matmul.
        table_initializer: initializer of the (C, (2wh-1)*(2ww-1)) table. The default,
            a truncated normal of std 0.02, is the usual choice for relative-position
            tables; it is not taken from the paper.
        table_regularizer: optional regularizer of the table.
        bias_initializer: initializer of the bias (zeros).

    Weights: ``table`` of shape (C, (2wh-1)*(2ww-1)); ``bias`` of shape (C,) or ``None``.
    """

    def __init__(self, window_size=7, use_shortcut: bool = True, use_bias: bool = False,
                 table_initializer="default", table_regularizer=None, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.window = core.as_window(window_size)
        self.use_shortcut = bool(use_shortcut)
        self.use_bias = bool(use_bias)
        if table_initializer == "default":
            table_initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.table_initializer = keras.initializers.get(table_initializer)
        self.table_regularizer = keras.regularizers.get(table_regularizer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # I flattened: gathering R_c at these positions and reshaping gives M_c (d x d).
        self._flat_index = core.relative_position_index(self.window).reshape(-1).astype("int32")
        self.table = None
        self.bias = None

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"WBMM expects NHWC input of rank 4, got shape {input_shape}")
        channels = _channels(input_shape, "WBMM")
        self.table = self.add_weight(name="table", shape=(channels, core.table_size(self.window)),
                                     initializer=self.table_initializer, regularizer=self.table_regularizer,
                                     trainable=True)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(channels,), initializer=self.bias_initializer,
                                        trainable=True)

    def call(self, x):
        wh, ww = self.window
        d = wh * ww
        channels = int(self.table.shape[0])
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            # Spatial size known only at run time: every size below becomes a tensor.
            dynamic = ops.shape(x)
            height = dynamic[1] if height is None else height
            width = dynamic[2] if width is None else width
        pad_h, pad_w = (-height) % wh, (-width) % ww
        padded = x
        if not (isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == 0 and pad_w == 0):
            padded = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        tiles_w = (width + pad_w) // ww

        # Partition with rank <= 4 tensors: (B, Hp, Wp, C) -> (B*nh, wh, nw, ww*C)
        # -> (B*nh, nw, wh, ww*C) -> (N, d, C) -> (C, N, d), pixel p = r*ww + c.
        windows = ops.reshape(padded, (-1, wh, tiles_w, ww * channels))
        windows = ops.transpose(windows, (0, 2, 1, 3))
        windows = ops.reshape(windows, (-1, d, channels))
        windows = ops.transpose(windows, (2, 0, 1))

        # M_c = R_c[I]; Y_c = X_c @ M_c, one (N, d) x (d, d) product per channel.
        matrices = ops.reshape(ops.take(self.table, self._flat_index, axis=1), (channels, d, d))
        out = ops.matmul(windows, ops.cast(matrices, windows.dtype))

        # Un-partition by the same steps in reverse, then crop the padding away.
        out = ops.transpose(out, (1, 2, 0))
        out = ops.reshape(out, (-1, tiles_w, wh, ww * channels))
        out = ops.transpose(out, (0, 2, 1, 3))
        out = ops.reshape(out, (-1, height + pad_h, width + pad_w, channels))
        if padded is not x:
            out = out[:, :height, :width, :]
        if self.use_shortcut:
            out = out + x       # the identity on the cropped map == X @ (M + 1) on the padded one
        if self.use_bias:
            out = out + ops.cast(self.bias, out.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "window_size": list(self.window),
            "use_shortcut": self.use_shortcut,
            "use_bias": self.use_bias,
            "table_initializer": keras.initializers.serialize(self.table_initializer),
            "table_regularizer": keras.regularizers.serialize(self.table_regularizer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GRN(keras.layers.Layer):
    """Global response normalisation (ConvNeXt V2) on NHWC maps.

    ``G`` = L2 norm over H, W per channel; ``N = G / (mean_c G + eps)``;
    ``out = (gamma * N + 1) * x + beta``. gamma and beta start at zero, so a fresh
    layer is the identity.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = _channels(input_shape, "GRN")
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        norm = ops.sqrt(ops.sum(ops.square(x), axis=(1, 2), keepdims=True))
        normalised = norm / (ops.mean(norm, axis=-1, keepdims=True) + self.epsilon)
        return (ops.cast(self.gamma, x.dtype) * normalised + 1.0) * x + ops.cast(self.beta, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SqueezeExcite(keras.layers.Layer):
    """avgpool -> 1x1 conv C -> C/reduction (bias) -> ReLU -> 1x1 conv -> C (bias) -> sigmoid -> x * gate.

    The 1x1 convs on a pooled (B, C) vector are plain matmuls, written as such.
    """

    def __init__(self, reduction: int = 4, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.reduction = int(reduction)

    def build(self, input_shape):
        channels = _channels(input_shape, "SqueezeExcite")
        hidden = max(1, channels // self.reduction)
        self.reduce_kernel = self.add_weight(name="reduce_kernel", shape=(channels, hidden),
                                             initializer="glorot_uniform")
        self.reduce_bias = self.add_weight(name="reduce_bias", shape=(hidden,), initializer="zeros")
        self.expand_kernel = self.add_weight(name="expand_kernel", shape=(hidden, channels),
                                             initializer="glorot_uniform")
        self.expand_bias = self.add_weight(name="expand_bias", shape=(channels,), initializer="zeros")

    def call(self, x):
        pooled = ops.mean(x, axis=(1, 2))                                              # (B, C)
        hidden = ops.relu(ops.matmul(pooled, ops.cast(self.reduce_kernel, x.dtype))
                          + ops.cast(self.reduce_bias, x.dtype))
        gate = ops.sigmoid(ops.matmul(hidden, ops.cast(self.expand_kernel, x.dtype))
                           + ops.cast(self.expand_bias, x.dtype))
        return x * ops.expand_dims(ops.expand_dims(gate, 1), 1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["reduction"] = self.reduction
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerScale(keras.layers.Layer):
    """Per-channel scale ``gamma * x`` (gamma starts at ``init_value``, 1e-6 as in ConvNeXt)."""

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        channels = _channels(input_shape, "LayerScale")
        self.gamma = self.add_weight(name="gamma", shape=(channels,),
                                     initializer=keras.initializers.Constant(self.init_value))

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["init_value"] = self.init_value
        return config


# For keras.models.load_model(..., custom_objects=CUSTOM_OBJECTS) in code that does not
# import this module first (registration happens at import).
CUSTOM_OBJECTS = {f"{_PACKAGE}>{cls.__name__}": cls for cls in (WBMM, GRN, SqueezeExcite, LayerScale)}

