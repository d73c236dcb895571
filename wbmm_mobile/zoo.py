"""Keras models for the demo and the benchmarks: WBMM-P-like networks, their 13x13
depthwise twins, and single-layer models.

What these are: networks built *in the style of* WBMM-P from the description in
``docs/WBMM.md`` (block, stem, downsampling, head, stage layout), with random,
seeded weights. What they are not: the published WBMM-P (no trained weights are
loaded, the PyTorch state dicts are not read, details the description leaves
open are our choice and marked below). They exist so that conversion and
latency can be measured on a realistic graph, and so that conversion tests have
something non-trivial to check: after building, every weight, including the
BatchNorm moving statistics and the layer scales (which would otherwise make
each block an identity to 1e-6), is drawn from a seeded generator.

Block (docs/WBMM.md): ``x + gamma * BN(pwconv2(GRN(GELU(pwconv1(SE(BN(op(x))))))))``
with op 'W' = WBMM with its identity shortcut (``kind='wbmm'``) or a
(2w-1)x(2w-1) = 13x13 depthwise conv without bias (``kind='dw13'``, the twin),
and op 'D' = 3x3 depthwise conv without bias. The twin's 13x13 conv has no identity
(a plain depthwise conv, as in ConvNeXt-style baselines), so the twins differ even
where every map is one window; ``WBMM(x) == DW13(x) + x`` there. Stage-4 'W' ops (written 'W+')
add parallel 3x3 and 5x5 depthwise branches, each followed by its own BN:
``op(x) = W(x) + BN3(dw3(x)) + BN5(dw5(x))`` (our reading of "+3x3 and 5x5 DW
branches"; it is exactly foldable into one table when the stage-4 map is a single
window, as at 224x224 with window 7).

Layer names carry the role, e.g. ``s3_b0_wbmm``, ``s3_b0_dw13``, ``s1_b1_dw3``,
``s4_b0_branch_dw5``; converters and reports can rely on the prefix ``s<stage>_b<block>_``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import keras
import numpy as np

from wbmm_mobile import core
from wbmm_mobile.layers import GRN, WBMM, LayerScale, SqueezeExcite

__all__ = [
    "KINDS", "P_DEPTHS", "P_DIMS", "SMALL_DEPTHS", "SMALL_DIMS", "OpCounts",
    "stage_layout", "wbmm_p_like", "wbmm_p_small", "single_layer_model", "count_ops",
]

KINDS = ("wbmm", "dw13")
P_DEPTHS = (2, 2, 6, 2)
P_DIMS = (64, 128, 256, 512)
# The demo's configuration: half the widths, one 'D' block in stage 1 and one (W, D)
# pair in stage 3; the stage pattern (D | W,D | W,D,... | W+,W+) is kept.
SMALL_DEPTHS = (1, 2, 2, 2)
SMALL_DIMS = (32, 64, 128, 256)
# Measured 2026-11-26 on the 2-core project machine, shared with other jobs: building
# takes ~1 s per model; tf.lite.TFLiteConverter.from_keras_model takes 9-22 s per
# small model at 224x224 (20-25 s for the full P configuration).

BN_EPSILON = 1e-5
LN_EPSILON = 1e-6


def stage_layout(depths: Sequence[int]) -> tuple[tuple[str, ...], ...]:
    """WBMM-P's op letters per stage for any depths: S1 all 'D'; S2 and S3 alternate 'W', 'D'
    starting with 'W'; S4 all 'W+' (WBMM plus 3x3 and 5x5 branches).

    ``stage_layout((2, 2, 6, 2))`` == (('D','D'), ('W','D'), ('W','D')*3, ('W+','W+')).
    """
    if len(depths) != 4 or any(int(d) < 1 for d in depths):
        raise ValueError(f"depths must be four positive ints, got {tuple(depths)}")
    d1, d2, d3, d4 = (int(d) for d in depths)
    alternate = lambda n: tuple("W" if i % 2 == 0 else "D" for i in range(n))  # noqa: E731
    return ("D",) * d1, alternate(d2), alternate(d3), ("W+",) * d4


def _scaled_dims(dims: Sequence[int], width_multiplier: float) -> tuple[int, ...]:
    # Multiples of 8 keep SE's C/4 and the stem's C0/2 integral.
    return tuple(max(8, int(round(d * width_multiplier / 8)) * 8) for d in dims)


def _large_op(kind: str, window: tuple[int, int], name: str):
    if kind == "wbmm":
        return WBMM(window, use_shortcut=True, use_bias=False, name=f"{name}_wbmm")
    kernel = core.table_shape(window)      # 13x13 for a 7x7 window: the same receptive field per window
    return keras.layers.DepthwiseConv2D(kernel, padding="same", use_bias=False, name=f"{name}_dw13")


def _block(x, op: str, dim: int, kind: str, window: tuple[int, int], name: str):
    layers = keras.layers
    if op == "D":
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw3")(x)
    else:
        y = _large_op(kind, window, name)(x)
        if op == "W+":
            b3 = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_branch_dw3")(x)
            b3 = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_branch_dw3_bn")(b3)
            b5 = layers.DepthwiseConv2D(5, padding="same", use_bias=False, name=f"{name}_branch_dw5")(x)
            b5 = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_branch_dw5_bn")(b5)
            y = layers.Add(name=f"{name}_branches")([y, b3, b5])
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_op_bn")(y)
    y = SqueezeExcite(name=f"{name}_se")(y)
    y = layers.Dense(4 * dim, name=f"{name}_pwconv1")(y)
    y = layers.Activation("gelu", name=f"{name}_gelu")(y)
    y = GRN(name=f"{name}_grn")(y)
    y = layers.Dense(dim, use_bias=False, name=f"{name}_pwconv2")(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_pw_bn")(y)
    y = LayerScale(1e-6, name=f"{name}_layer_scale")(y)
    return layers.Add(name=f"{name}_residual")([x, y])


def _conv_s2(x, filters: int, name: str):
    # Symmetric padding 1 as in the reference (Keras 'same' would pad 0 top / 1 bottom at stride 2).
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, 3, strides=2, padding="valid", name=f"{name}_conv")(x)


def wbmm_p_like(input_shape=(224, 224, 3), num_classes: int = 1000, depths=P_DEPTHS, dims=P_DIMS,
                kind: str = "wbmm", window=7, width_multiplier: float = 1.0, seed: int = 0,
                randomize: bool = True, batch_size: int | None = None, name: str | None = None) -> keras.Model:
    """A WBMM-P-like classifier (see the module docstring) with random weights.

    Args:
        input_shape: (H, W, 3) of one image, NHWC.
        num_classes: width of the final Linear.
        depths, dims: blocks and channels per stage (P: (2, 2, 6, 2), (64, 128, 256, 512)).
        kind: 'wbmm' (the 'W' op is WBMM with shortcut) or 'dw13' (the twin: a
            (2wh-1)x(2ww-1) depthwise conv, 13x13 for the default window).
        window: WBMM window, int or (wh, ww).
        width_multiplier: scales every dim (rounded to a multiple of 8).
        seed: the numpy seed all weights are drawn from. Both kinds built with the same
            seed hold identical weights everywhere, and the twin's 13x13 kernels are the
            WBMM tables in kernel layout (``core.table_to_kernel``).
        randomize: False keeps Keras's initial weights (BN statistics 0/1, layer
            scales 1e-6): for training, not for conversion tests.
        batch_size: fix the batch dimension (e.g. 1 for TFLite benchmarks); None = dynamic.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    window = core.as_window(window)
    dims = _scaled_dims(dims, width_multiplier)
    if len(dims) != 4:
        raise ValueError(f"dims must have four entries, got {dims}")
    layout = stage_layout(depths)

    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape), batch_size=batch_size, name="image")
    x = _conv_s2(inputs, dims[0] // 2, "stem1")
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name="stem1_ln")(x)
    x = layers.Activation("gelu", name="stem1_gelu")(x)
    x = _conv_s2(x, dims[0], "stem2")
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name="stem2_ln")(x)
    for stage, (ops_, dim) in enumerate(zip(layout, dims), start=1):
        if stage > 1:
            x = _conv_s2(x, dim, f"down{stage}")
            x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"down{stage}_ln")(x)
        for block, op in enumerate(ops_):
            x = _block(x, op, dim, kind, window, f"s{stage}_b{block}")
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name="head_ln")(x)
    outputs = layers.Dense(num_classes, name="head_fc")(x)
    model = keras.Model(inputs, outputs, name=name or f"wbmm_p_like_{kind}")
    if randomize:
        _randomize(model, seed)
    return model


def wbmm_p_small(kind: str = "wbmm", input_shape=(224, 224, 3), num_classes: int = 1000, seed: int = 0,
                 batch_size: int | None = 1) -> keras.Model:
    """The demo's model: ``wbmm_p_like`` with SMALL_DEPTHS/SMALL_DIMS, batch fixed to 1."""
    return wbmm_p_like(input_shape, num_classes, SMALL_DEPTHS, SMALL_DIMS, kind=kind, seed=seed,
                       batch_size=batch_size, name=f"wbmm_p_small_{kind}")


def single_layer_model(kind: str, input_shape, kernel_or_window, seed: int = 0, use_shortcut: bool = True,
                       batch_size: int = 1) -> keras.Model:
    """One layer on an (H, W, C) input, for the latency sweeps.

    kind 'depthwise': ``DepthwiseConv2D(k, padding='same', use_bias=False)``;
    kind 'wbmm': ``WBMM(window, use_shortcut)``. Weights ~ N(0, 1/taps), seeded.
    """
    height, width, channels = (int(v) for v in input_shape)
    inputs = keras.Input(shape=(height, width, channels), batch_size=batch_size, name="x")
    if kind == "depthwise":
        kh, kw = core.as_window(kernel_or_window)
        layer = keras.layers.DepthwiseConv2D((kh, kw), padding="same", use_bias=False, name=f"dw{kh}x{kw}")
        tag = f"depthwise{kh}x{kw}"
    elif kind == "wbmm":
        wh, ww = core.as_window(kernel_or_window)
        layer = WBMM((wh, ww), use_shortcut=use_shortcut, name=f"wbmm{wh}x{ww}")
        tag = f"wbmm{wh}x{ww}"
    else:
        raise ValueError(f"kind must be 'depthwise' or 'wbmm', got {kind!r}")
    model = keras.Model(inputs, layer(inputs), name=f"{tag}_{height}x{width}x{channels}")
    _randomize(model, seed)
    return model


def convnext_tiny(input_shape=(224, 224, 3), seed: int = 0) -> keras.Model:
    """``keras.applications.ConvNeXtTiny(weights=None)``, seeded, with every layer scale set to 1.

    Its layer scales start at 1e-6, which scales each block's 7x7 depthwise conv by 1e-6 in
    the output and would hide an error in whatever runs that conv from a 1e-4 check; at 1
    it shows. Keras stores those convs as ``Conv2D(groups=C)``: a CONV_2D with a
    (C, 7, 7, 1) kernel in TFLite, not a DEPTHWISE_CONV_2D.
    """
    keras.utils.set_random_seed(seed)
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=tuple(input_shape))
    for layer in model.layers:
        if type(layer).__name__ == "LayerScale":
            layer.gamma.assign(np.ones(layer.gamma.shape, dtype="float32"))
    return model


@dataclass(frozen=True)
class OpCounts:
    """What a model contains, for tests and reports."""
    wbmm: int
    depthwise: dict = field(default_factory=dict)     # {(kh, kw): count}
    batch_norm: int = 0
    params: int = 0

    def depthwise_of(self, kernel) -> int:
        return self.depthwise.get(core.as_window(kernel), 0)


def count_ops(model: keras.Model) -> OpCounts:
    wbmm = batch_norms = 0
    kernels: Counter = Counter()
    for layer in model.layers:
        if isinstance(layer, WBMM):
            wbmm += 1
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernels[tuple(layer.kernel_size)] += 1
        elif isinstance(layer, keras.layers.BatchNormalization):
            batch_norms += 1
    return OpCounts(wbmm=wbmm, depthwise=dict(kernels), batch_norm=batch_norms, params=int(model.count_params()))


def _randomize(model: keras.Model, seed: int) -> None:
    """Draw every weight from one seeded generator, layer by layer in model order.

    Scales keep activations O(1) through the stack; BN statistics and layer scales
    are far from their identity initialisation so that a wrong conversion of any
    block shows in the output. Depthwise kernels are drawn in the table layout
    (C, kh*kw) so that a WBMM table and its twin's kernel get the same numbers.
    """
    rng = np.random.default_rng(seed)

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype("float32")

    for layer in model.layers:
        if isinstance(layer, WBMM):
            channels, taps = layer.table.shape
            layer.table.assign(normal((channels, taps), 1 / np.sqrt(taps)))
            if layer.use_bias:
                layer.bias.assign(normal(layer.bias.shape, 0.05))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, _ = layer.kernel.shape
            table = normal((channels, kh * kw), 1 / np.sqrt(kh * kw))
            layer.kernel.assign(table.reshape(channels, kh, kw).transpose(1, 2, 0)[..., None])
            if layer.use_bias:
                layer.bias.assign(normal(layer.bias.shape, 0.05))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            layer.kernel.assign(normal(layer.kernel.shape, 1 / np.sqrt(fan_in)))
            if layer.use_bias:
                layer.bias.assign(normal(layer.bias.shape, 0.05))
        elif isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
            layer.beta.assign(normal(shape, 0.1))
            layer.moving_mean.assign(normal(shape, 0.2))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        elif isinstance(layer, keras.layers.LayerNormalization):
            layer.gamma.assign(rng.uniform(0.8, 1.2, layer.gamma.shape).astype("float32"))
            layer.beta.assign(normal(layer.beta.shape, 0.05))
        elif isinstance(layer, GRN):
            layer.gamma.assign(normal(layer.gamma.shape, 0.2))
            layer.beta.assign(normal(layer.beta.shape, 0.05))
        elif isinstance(layer, SqueezeExcite):
            for kernel, bias in ((layer.reduce_kernel, layer.reduce_bias), (layer.expand_kernel, layer.expand_bias)):
                kernel.assign(normal(kernel.shape, 1 / np.sqrt(kernel.shape[0])))
                bias.assign(normal(bias.shape, 0.05))
        elif isinstance(layer, LayerScale):
            layer.gamma.assign(rng.uniform(0.1, 0.5, layer.gamma.shape).astype("float32"))
        elif layer.weights:
            raise TypeError(f"_randomize does not know layer {layer.name!r} of type {type(layer).__name__}")
