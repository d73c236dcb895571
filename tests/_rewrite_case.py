"""A small fluent harness for rewrite tests: build -> convert (real TFLite converter) ->
rewrite -> assert ops -> compare numerically -> reload.

    Case.depthwise(7).convert().rewrite(strategy="split").expect_ops(...).compare(rtol=1e-5, atol=1e-6)

Converted models are cached per spec so the many tests that share a tiny model pay
for the converter once.
"""

from __future__ import annotations

import functools
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from converters import tflite_io, verify
from converters.rewrite import RewriteOptions, rewrite_model


@functools.lru_cache(maxsize=None)
def converted_depthwise(kernel: int | tuple = 7, size: tuple = (12, 12), channels: int = 4, padding: str = "same",
                        bias: bool = True, activation: str | None = None, strides: int = 1, dilation: int = 1,
                        depth_multiplier: int = 1, quantize: str | None = None, grouped: bool = False,
                        dynamic: bool = False) -> bytes:
    """A one-layer Keras model (DepthwiseConv2D, or Conv2D(groups=C) when ``grouped``), converted."""
    import keras

    from converters.keras_convert import to_tflite

    keras.utils.set_random_seed(1)
    shape = (None, None, channels) if dynamic else (*size, channels)
    inputs = keras.Input(shape, batch_size=1)
    if grouped:
        layer = keras.layers.Conv2D(channels, kernel, padding=padding, groups=channels, use_bias=bias,
                                    activation=activation, bias_initializer="random_normal")
    else:
        layer = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding=padding, use_bias=bias,
                                             activation=activation, dilation_rate=dilation,
                                             depth_multiplier=depth_multiplier, bias_initializer="random_normal")
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(0)
    return to_tflite(model, quantize or "float32",
                     lambda: ([rng.uniform(-1, 1, (1, *size, channels)).astype(np.float32)] for _ in range(16)))


class Case:
    def __init__(self, **spec):
        self.spec = spec
        self.original: bytes | None = None
        self.result = None

    @classmethod
    def depthwise(cls, kernel=7, **spec) -> "Case":
        return cls(kernel=kernel, **spec)

    def convert(self) -> "Case":
        self.original = converted_depthwise(**self.spec)
        return self

    def rewrite(self, **options) -> "Case":
        options.setdefault("min_kernel", 7)
        self.result = rewrite_model(self.original, RewriteOptions(**options))
        return self

    @property
    def report(self):
        return self.result.report

    def ops(self) -> Counter:
        model = tflite_io.load_model(self.result.model)
        return Counter(tflite_io.op_names(model))

    def expect_ops(self, present: dict[str, int] | None = None, absent: tuple[str, ...] = ()) -> "Case":
        ops = self.ops()
        for name, count in (present or {}).items():
            assert ops[name] == count, f"expected {count} x {name}, got {dict(ops)}"
        for name in absent:
            assert ops[name] == 0, f"expected no {name}, got {dict(ops)}"
        return self

    def expect_rewritten(self, strategy: str) -> "Case":
        layers = self.report.layers
        assert len(layers) == 1 and layers[0].rewritten and layers[0].strategy == strategy, layers
        return self

    def expect_left_alone(self, reason: str) -> "Case":
        layers = self.report.layers
        assert len(layers) == 1 and not layers[0].rewritten, layers
        assert reason in layers[0].reason, f"reason {layers[0].reason!r} does not mention {reason!r}"
        assert self.result.model and self.ops() == Counter(
            tflite_io.op_names(tflite_io.load_model(self.original))), "the model changed"
        return self

    def outputs(self, seed: int = 5, kernels: str = "cpu"):
        inputs = verify.random_inputs(self.original, seed)
        reference = verify.run_tflite(self.original, inputs, kernels=kernels, dequantize_outputs=True)[0]
        candidate = verify.run_tflite(self.result.model, inputs, kernels=kernels, dequantize_outputs=True)[0]
        return inputs, reference, candidate

    def compare(self, rtol: float, atol: float, kernels: str = "cpu") -> "Case":
        _, reference, candidate = self.outputs(kernels=kernels)
        np.testing.assert_allclose(candidate, reference, rtol=rtol, atol=atol)
        return self

    def compare_int8(self, steps: int = 1, kernels: str = "cpu") -> "Case":
        """Integer outputs of the original and the rewrite, compared as integers: at most ``steps`` apart."""
        inputs = verify.random_inputs(self.original, 5)
        reference = verify.run_tflite(self.original, inputs, kernels=kernels)[0]
        candidate = verify.run_tflite(self.result.model, inputs, kernels=kernels)[0]
        assert np.issubdtype(reference.dtype, np.integer) and candidate.dtype == reference.dtype
        worst = int(np.abs(candidate.astype(np.int64) - reference.astype(np.int64)).max())
        assert worst <= steps, f"max {worst} steps > {steps}"
        return self

    def reloads(self, interpreter: bool = True) -> "Case":
        """The written file reads back; with ``interpreter`` the runtime also loads it
        (models with wbmm custom ops load only with the delegate)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rewritten.tflite"
            path.write_bytes(self.result.model)
            model = tflite_io.load_model(path)
            assert tflite_io.op_names(model) == tflite_io.op_names(tflite_io.load_model(self.result.model))
            if interpreter:
                verify.load_interpreter(path, kernels="cpu")
        return self
