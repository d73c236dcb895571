"""The delegate's kernels through the real ai-edge-litert interpreter, against wbmm_mobile.core.

Hypothesis draws shapes, windows, kernel sizes, channel counts that are not
multiples of any SIMD width (4 portable/NEON, 8 AVX2, 16 AVX-512), maps not
divisible by the window, SAME/VALID padding, activations, float16 weights
(stored fp16 or behind a DEQUANTIZE), thread counts and every kernel ISA this
CPU runs. Models are hand-written .tflite files (tests/delegate_models.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from hypothesis import given
from hypothesis import strategies as st

import delegates
from converters.custom_ops import ACTIVATION_NONE, ACTIVATION_RELU, ACTIVATION_RELU6, PADDING_SAME, PADDING_VALID
from delegate_models import depthwise_model, wbmm_model
from wbmm_mobile import core

pytestmark = pytest.mark.skipif(not delegates.built_file(delegates.LIBRARY_NAME) is not None and not __import__("os").environ.get(
    delegates.LIBRARY_ENV_VAR), reason="build the delegate first: make delegate")

ISAS = delegates.available_isas() if delegates.built_file(delegates.LIBRARY_NAME) is not None else ["portable"]

# float32 accumulation of up to ~1000 products of N(0,1) values: errors ~1e-5;
# 1e-4 absolute is explicit and still 3+ orders below a wrong tap or window.
ATOL = 1e-4
RTOL = 1e-5


def run(model: bytes, x: np.ndarray, **options):
    delegate = delegates.load(**options)
    interpreter = Interpreter(model_content=model, experimental_delegates=[delegate],
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return y, delegates.delegation_report(interpreter, delegate)


@st.composite
def wbmm_cases(draw):
    wh = draw(st.integers(1, 8))
    ww = draw(st.integers(1, 8))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3 * wh + 1)), draw(st.integers(1, 3 * ww + 1)),
             draw(st.integers(1, 21)))
    return dict(window=(wh, ww), shape=shape, shortcut=draw(st.booleans()), bias=draw(st.booleans()),
                weights=draw(st.sampled_from(["f32", "f16", "f16+dequantize"])),
                threads=draw(st.integers(1, 3)), isa=draw(st.sampled_from(ISAS)), seed=draw(st.integers(0, 2**16)))


@given(wbmm_cases())
def test_wbmm_matches_numpy_reference(case):
    rng = np.random.default_rng(case["seed"])
    wh, ww = case["window"]
    channels = case["shape"][3]
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    kernel = rng.standard_normal((2 * wh - 1, 2 * ww - 1, channels)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32) if case["bias"] else None
    fp16 = case["weights"] != "f32"
    model = wbmm_model(x.shape, kernel, (wh, ww), case["shortcut"], bias,
                       kernel_dtype=np.float16 if fp16 else np.float32, dequantize=case["weights"] == "f16+dequantize")
    y, report = run(model, x, num_threads=case["threads"], isa=case["isa"])

    used_kernel = kernel.astype(np.float16).astype(np.float64) if fp16 else kernel.astype(np.float64)
    table, window = core.kernel_to_table(used_kernel)
    expected = core.wbmm_forward(x.astype(np.float64), table, window, shortcut=case["shortcut"], bias=bias)
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)
    assert report.count("WBMM") == 1
    assert report.count("DEQUANTIZE") == (1 if case["weights"] == "f16+dequantize" else 0)
    assert report.isa == case["isa"] and report.num_threads == case["threads"]


@st.composite
def depthwise_cases(draw):
    kh, kw = draw(st.integers(1, 15)), draw(st.integers(1, 33))
    padding = draw(st.sampled_from([PADDING_SAME, PADDING_VALID]))
    min_h, min_w = (1, 1) if padding == PADDING_SAME else (kh, kw)
    shape = (draw(st.integers(1, 2)), draw(st.integers(min_h, max(min_h, 20))), draw(st.integers(min_w, max(min_w, 36))),
             draw(st.integers(1, 21)))
    return dict(kernel=(kh, kw), padding=padding, shape=shape,
                activation=draw(st.sampled_from([ACTIVATION_NONE, ACTIVATION_RELU, ACTIVATION_RELU6])),
                bias=draw(st.booleans()), fp16=draw(st.booleans()), threads=draw(st.integers(1, 3)),
                isa=draw(st.sampled_from(ISAS)), seed=draw(st.integers(0, 2**16)))


@given(depthwise_cases())
def test_exact_depthwise_matches_numpy_reference(case):
    rng = np.random.default_rng(case["seed"])
    kh, kw = case["kernel"]
    channels = case["shape"][3]
    x = (3 * rng.standard_normal(case["shape"])).astype(np.float32)  # reach the relu6 ceiling too
    kernel = rng.standard_normal((kh, kw, channels)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32) if case["bias"] else None
    model = depthwise_model(x.shape, kernel, case["padding"], case["activation"], bias,
                            kernel_dtype=np.float16 if case["fp16"] else np.float32)
    y, report = run(model, x, num_threads=case["threads"], isa=case["isa"])

    used_kernel = kernel.astype(np.float16) if case["fp16"] else kernel
    expected = core.depthwise_conv2d(x.astype(np.float64), used_kernel.astype(np.float64),
                                     "same" if case["padding"] == PADDING_SAME else "valid", bias=bias)
    if case["activation"] == ACTIVATION_RELU:
        expected = np.maximum(expected, 0)
    elif case["activation"] == ACTIVATION_RELU6:
        expected = np.clip(expected, 0, 6)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)
    assert report.claimed_ops == ("WBMM_DEPTHWISE",)


def test_wbmm_equals_large_depthwise_on_a_single_window():
    """docs/WBMM.md: on a map that is one window, WBMM (no shortcut) == 'same' depthwise with the (2w-1)^2 kernel."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 7, 7, 24)).astype(np.float32)
    kernel = rng.standard_normal((13, 13, 24)).astype(np.float32)
    y_wbmm, _ = run(wbmm_model(x.shape, kernel, 7, shortcut=False), x)
    y_dw, _ = run(depthwise_model(x.shape, kernel, PADDING_SAME), x)
    np.testing.assert_allclose(y_wbmm, y_dw, rtol=0, atol=1e-5)
    # and they differ once the map spans several windows (WBMM zero-pads at window borders)
    x2 = rng.standard_normal((1, 14, 14, 24)).astype(np.float32)
    y_wbmm2, _ = run(wbmm_model(x2.shape, kernel, 7, shortcut=False), x2)
    y_dw2, _ = run(depthwise_model(x2.shape, kernel, PADDING_SAME), x2)
    assert np.abs(y_wbmm2 - y_dw2).max() > 1.0


def test_threads_do_not_change_results():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 28, 28, 40)).astype(np.float32)
    kernel = rng.standard_normal((13, 13, 40)).astype(np.float32)
    model = wbmm_model(x.shape, kernel, 7)
    y1, r1 = run(model, x, num_threads=1)
    y3, r3 = run(model, x, num_threads=3)
    assert (r1.num_threads, r3.num_threads) == (1, 3)
    np.testing.assert_array_equal(y1, y3)  # same per-pixel summation order in every tile split
