"""Small models for the NPU checks, each made by the real TFLite converter (cached per spec).

- ``depthwise(kernel, precision)``: one DepthwiseConv2D (the layer the rewrites target).
- ``transpose_control(precision)``: depthwise 7x7 -> reshape to rank 6 -> transpose -> reshape
  back -> depthwise 7x7: five ops of which Qualcomm's HTP takes only the two convs (it has
  no rank-6 tensors), so the check must say 2 of 5 in 2 partitions.
- ``rank6_transpose_only()``: a rank-6 TRANSPOSE and nothing else: no op can be offloaded
  to the HTP, the compiler exits 1, and the check must still give 0 of 1.
- ``rfft2d()``: RFFT2D -> COMPLEX_ABS: a complex64 tensor, which QNN cannot represent; the
  compiler stops with exit 5 instead of leaving the op on the CPU.

Also used by ``benchmarks/npu_check.py``.
"""

from __future__ import annotations

import functools

import numpy as np


def _representative(shape: tuple[int, ...]):
    rng = np.random.default_rng(0)
    return lambda: ([rng.uniform(-1, 1, shape).astype(np.float32)] for _ in range(16))


def _convert(model, precision: str, shape: tuple[int, ...]) -> bytes:
    from converters.keras_convert import to_tflite

    return to_tflite(model, precision, _representative(shape) if precision == "int8" else None)


@functools.lru_cache(maxsize=None)
def depthwise(kernel: int = 7, precision: str = "float32", size: int = 28, channels: int = 32) -> bytes:
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, channels), batch_size=1)
    outputs = keras.layers.DepthwiseConv2D(kernel, padding="same", bias_initializer="random_normal")(inputs)
    return _convert(keras.Model(inputs, outputs), precision, (1, size, size, channels))


@functools.lru_cache(maxsize=None)
def transpose_control(precision: str = "float32", size: int = 16, channels: int = 8) -> bytes:
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((size, size, channels), batch_size=1)
    x = keras.layers.DepthwiseConv2D(7, padding="same")(inputs)
    # Rank 6: (1, 2, H/2, 2, W/2, C), then swap the two inner halves and fold back.
    x = keras.ops.reshape(x, (1, 2, size // 2, 2, size // 2, channels))
    x = keras.ops.transpose(x, (0, 3, 2, 1, 4, 5))
    x = keras.ops.reshape(x, (1, size, size, channels))
    outputs = keras.layers.DepthwiseConv2D(7, padding="same")(x)
    return _convert(keras.Model(inputs, outputs), precision, (1, size, size, channels))


@functools.lru_cache(maxsize=None)
def rank6_transpose_only() -> bytes:
    import keras

    inputs = keras.Input((2, 3, 2, 3, 4), batch_size=1)
    outputs = keras.ops.transpose(inputs, (0, 3, 2, 1, 4, 5))
    return _convert(keras.Model(inputs, outputs), "float32", (1, 2, 3, 2, 3, 4))


@functools.lru_cache(maxsize=None)
def rfft2d(size: int = 16) -> bytes:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, size, size), tf.float32)])
    def spectrum(x):
        return tf.abs(tf.signal.rfft2d(x))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([spectrum.get_concrete_function()], spectrum)
    return converter.convert()
