"""The delegate's int8 kernels against TFLite's own int8 kernels.

References, never the code under test: TFLite's builtin int8 DEPTHWISE_CONV_2D
(``BUILTIN_WITHOUT_DEFAULT_DELEGATES``) and XNNPACK's (``AUTO``), each running
the same .tflite file. The delegate requantizes as XNNPACK does (float32
scale, round to nearest even; kernels/int8_depthwise.h says why), so the
contract checked everywhere is: every output within one step of both
references, and at least 99.9% identical to XNNPACK's.

Models: one-layer Keras models through the real TFLiteConverter (full int8,
int8 input and output, a seeded representative dataset): DepthwiseConv2D and
Conv2D(groups=C), the form keras.applications ConvNeXt converts to; and
hand-quantized models (tests/delegate_models.py: ``int8_conv_model``) for the
corners a converter does not produce: zero points at -128 and 127, per-channel
scales from 1e-4 to 1, saturating outputs, RELU_N1_TO_1, dilation, and the
int8 WBMM / WBMM_DEPTHWISE custom ops. The int8 WBMM op's reference is the
builtin int8 DEPTHWISE_CONV_2D run on every window as its own image (windows
moved to the batch axis, 'same', the map padded with the input zero point).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import delegates
from converters.custom_ops import DepthwiseOptions, WbmmOptions
from delegate_models import int8_conv_model, to_int8_tflite

BUILT = delegates.built_file(delegates.LIBRARY_NAME) is not None or bool(os.environ.get(delegates.LIBRARY_ENV_VAR))
pytestmark = pytest.mark.skipif(not BUILT, reason="build the delegate first: make delegate")

ISAS = delegates.available_isas() if BUILT else ["portable"]
BUILTIN = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
XNNPACK = OpResolverType.AUTO

NONE, RELU, RELU_N1_TO_1, RELU6 = 0, 1, 2, 3


def run(model: bytes, x: np.ndarray, resolver=BUILTIN, threads: int = 1, **options):
    """Output (int) and the delegation report (None without options) of one invoke."""
    delegate = delegates.load(**options) if options else None
    interpreter = Interpreter(model_content=model, experimental_delegates=[delegate] if delegate else None,
                              experimental_op_resolver_type=resolver, num_threads=threads)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(np.int32)
    return y, delegates.delegation_report(interpreter, delegate) if delegate else None


def assert_matches_tflite(y: np.ndarray, builtin: np.ndarray, xnnpack: np.ndarray, what: str,
                          identical_to_xnnpack: float = 0.999) -> None:
    assert y.shape == builtin.shape == xnnpack.shape, what
    assert np.abs(y - builtin).max() <= 1, f"{what}: {np.abs(y - builtin).max()} steps from the builtin kernel"
    assert np.abs(y - xnnpack).max() <= 1, f"{what}: {np.abs(y - xnnpack).max()} steps from XNNPACK"
    same = float(np.mean(y == xnnpack))
    assert same >= identical_to_xnnpack, f"{what}: only {same:.5f} identical to XNNPACK"


def check_every_isa(model: bytes, x: np.ndarray, what: str, expected_op: str = "DEPTHWISE_CONV_2D",
                    threads=(1, 2), **options) -> np.ndarray:
    builtin, _ = run(model, x, BUILTIN)
    reference_xnnpack, _ = run(model, x, XNNPACK)
    for isa in ISAS:
        for n in threads:
            y, report = run(model, x, claim_depthwise=1, min_kernel=3, isa=isa, num_threads=n, **options)
            assert report.claimed_ops == (expected_op,), f"{what} {isa}: {report.claimed_ops}"
            assert_matches_tflite(y, builtin, reference_xnnpack, f"{what} isa {isa} ({report.int8_isa}) threads {n}")
    return builtin


# ---------------------------------------------------------------- hand-quantized builtin depthwise


def random_case(rng, shape, kernel, *, x_zp=None, y_zp=None, scale_span=(1e-4, 1.0), bias=True, saturate=False):
    """int8 x, kernel and bias with per-channel kernel scales log-spaced over ``scale_span``; the
    output scale puts typical outputs at tens of steps (``saturate``: most of them past +-127)."""
    channels = shape[3]
    kh, kw = kernel
    x = rng.integers(-128, 128, shape).astype(np.int8)
    k = rng.integers(-127, 128, (kh, kw, channels)).astype(np.int8)
    w_scales = np.geomspace(*scale_span, channels).astype(np.float32)
    rng.shuffle(w_scales)
    x_scale = np.float32(0.02)
    x_zp = int(rng.integers(-128, 128)) if x_zp is None else x_zp
    y_zp = int(rng.integers(-128, 128)) if y_zp is None else y_zp
    typical = float(np.median(w_scales)) * x_scale * 128 * 64 * np.sqrt(kh * kw)
    y_scale = np.float32(typical / (2000.0 if saturate else 40.0))
    b = rng.integers(-20000, 20000, channels).astype(np.int32) if bias else None
    return x, k, w_scales, (x_scale, x_zp), (y_scale, y_zp), b


DEPTHWISE_CASES = [
    # (shape, kernel, dilation, padding, activation, zero points (x, y), saturate)
    ((1, 9, 11, 5), (3, 3), (1, 1), "same", NONE, (-128, 127), False),
    ((1, 17, 15, 13), (5, 5), (2, 2), "same", RELU, (127, -128), False),
    ((2, 13, 19, 9), (7, 7), (1, 1), "valid", RELU6, (None, None), False),
    ((1, 23, 21, 19), (7, 7), (3, 3), "same", RELU_N1_TO_1, (0, 0), False),
    ((1, 21, 27, 17), (9, 13), (2, 1), "valid", NONE, (-128, -128), True),
    ((1, 25, 25, 24), (13, 13), (1, 1), "same", RELU, (None, None), False),
    ((1, 29, 31, 33), (13, 13), (2, 2), "same", NONE, (127, 127), True),
    ((1, 35, 37, 7), (31, 31), (1, 1), "same", RELU6, (-128, 5), False),
    ((1, 33, 33, 20), (31, 31), (1, 1), "valid", NONE, (None, None), False),
    ((1, 15, 17, 3), (11, 11), (3, 2), "same", RELU, (3, -7), False),
]


@pytest.mark.parametrize("shape, kernel, dilation, padding, activation, zps, saturate", DEPTHWISE_CASES)
def test_hand_quantized_depthwise_matches_builtin_and_xnnpack(shape, kernel, dilation, padding, activation, zps,
                                                               saturate):
    rng = np.random.default_rng(sum(shape) * 31 + kernel[0])
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, kernel, x_zp=zps[0], y_zp=zps[1], saturate=saturate)
    model = int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, yq, bias, padding=padding,
                            activation=activation, dilation=dilation)
    builtin = check_every_isa(model, x, f"{kernel} dilation {dilation} {padding} act {activation}")
    if saturate:  # the case really reaches both ends of int8
        assert (builtin == -128).mean() > 0.05 and (builtin == 127).mean() > 0.05
    if activation in (RELU, RELU6, RELU_N1_TO_1):  # and the clamp really clamps
        assert (builtin == builtin.min()).mean() > 0.05


def test_tiny_multipliers_output_the_zero_point_like_tflite():
    """Per-channel scales down to 1e-12: both TFLite kernels output the zero point there; so do we."""
    rng = np.random.default_rng(4)
    shape = (1, 12, 12, 6)
    x, k, _, xq, yq, bias = random_case(rng, shape, (7, 7))
    w_scales = np.array([1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1], np.float32)
    model = int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, (np.float32(1e-3), 9), bias)
    builtin = check_every_isa(model, x, "tiny multipliers", threads=(1,))
    assert (builtin[..., 0] == 9).all()


# ---------------------------------------------------------------- converter-made models


keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("kernel, padding, activation, channels, dilation", [
    (7, "same", None, 24, 1), (13, "same", "relu", 21, 1), (31, "valid", None, 10, 1), (9, "same", "relu6", 35, 2),
    (5, "valid", None, 17, 3),
])
def test_converted_keras_depthwise(kernel, padding, activation, channels, dilation):
    keras.utils.set_random_seed(kernel)
    size = (kernel - 1) * dilation + 1 + 6
    inp = keras.Input((size, size + 3, channels), batch_size=1)
    y = keras.layers.DepthwiseConv2D(kernel, padding=padding, activation=activation, dilation_rate=dilation,
                                     bias_initializer="random_normal")(inp)
    tflite = to_int8_tflite(keras.Model(inp, y), (size, size + 3, channels), seed=kernel)
    x = np.random.default_rng(kernel).integers(-128, 128, (1, size, size + 3, channels)).astype(np.int8)
    check_every_isa(tflite, x, f"keras {kernel}x{kernel} {padding} {activation} dilation {dilation}")


@pytest.mark.parametrize("kernel, padding, activation", [(7, "same", None), ((5, 9), "valid", "relu6")])
def test_converted_grouped_conv_like_convnext(kernel, padding, activation):
    """Conv2D(groups=C) converts to CONV_2D with a (C, kh, kw, 1) kernel. TFLite's builtin CONV_2D
    cannot run groups, so the references are XNNPACK on this model and the builtin
    DEPTHWISE_CONV_2D on the same numbers written as a depthwise model."""
    keras.utils.set_random_seed(3)
    channels, shape = 20, (1, 23, 21, 20)
    inp = keras.Input(shape[1:], batch_size=1)
    y = keras.layers.Conv2D(channels, kernel, padding=padding, groups=channels, activation=activation,
                            bias_initializer="random_normal")(inp)
    tflite = to_int8_tflite(keras.Model(inp, y), shape[1:])
    x = np.random.default_rng(3).integers(-128, 128, shape).astype(np.int8)

    # The same numbers as a builtin DEPTHWISE_CONV_2D: kernel (C, kh, kw, 1) -> (1, kh, kw, C).
    model = schema.ModelT.InitFromPackedBuf(tflite, 0)
    graph = model.subgraphs[0]
    (conv,) = [op for op in graph.operators
               if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D]
    k_t, b_t, x_t, y_t = (graph.tensors[i] for i in (conv.inputs[1], conv.inputs[2], conv.inputs[0], conv.outputs[0]))
    k = np.frombuffer(bytes(model.buffers[k_t.buffer].data), np.int8).reshape(k_t.shape)
    bias = np.frombuffer(bytes(model.buffers[b_t.buffer].data), np.int32)
    as_depthwise = int8_conv_model(
        "DEPTHWISE_CONV_2D", shape, np.transpose(k[..., 0], (1, 2, 0)), k_t.quantization.scale,
        (x_t.quantization.scale[0], x_t.quantization.zeroPoint[0]),
        (y_t.quantization.scale[0], y_t.quantization.zeroPoint[0]), bias, padding=padding,
        activation=conv.builtinOptions.fusedActivationFunction)
    builtin, _ = run(as_depthwise, x, BUILTIN)
    xnnpack, _ = run(tflite, x, XNNPACK)
    for isa in ISAS:
        y_delegate, report = run(tflite, x, XNNPACK, claim_depthwise=1, min_kernel=5, isa=isa)
        assert report.claimed_ops == ("CONV_2D",)
        assert_matches_tflite(y_delegate, builtin, xnnpack, f"grouped {kernel} isa {isa}")


# ---------------------------------------------------------------- int8 custom ops


def windows_to_batch(x: np.ndarray, window, zero_point: int) -> np.ndarray:
    """(B, H, W, C) -> (B * nwy * nwx, wh, ww, C), padded bottom/right with the zero point."""
    wh, ww = window
    b, h, w, c = x.shape
    nwy, nwx = -(-h // wh), -(-w // ww)
    padded = np.full((b, nwy * wh, nwx * ww, c), zero_point, x.dtype)
    padded[:, :h, :w] = x
    return padded.reshape(b, nwy, wh, nwx, ww, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, c)


def batch_to_windows(y: np.ndarray, shape, window) -> np.ndarray:
    wh, ww = window
    b, h, w, c = shape
    nwy, nwx = -(-h // wh), -(-w // ww)
    return y.reshape(b, nwy, nwx, wh, ww, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, nwy * wh, nwx * ww, c)[:, :h, :w]


@pytest.mark.parametrize("shape, window, zps", [
    ((1, 14, 14, 16), (7, 7), (-128, 127)), ((2, 17, 23, 13), (7, 7), (None, None)),
    ((1, 28, 28, 37), (14, 14), (127, -128)), ((1, 9, 11, 5), (3, 4), (0, 3)), ((1, 5, 6, 9), (1, 2), (-3, 0)),
])
def test_int8_wbmm_matches_builtin_depthwise_per_window(shape, window, zps):
    rng = np.random.default_rng(shape[1] * 7 + window[1])
    kernel = (2 * window[0] - 1, 2 * window[1] - 1)
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, kernel, x_zp=zps[0], y_zp=zps[1])
    model = int8_conv_model("WBMM", shape, k, w_scales, xq, yq, bias, options=WbmmOptions(*window, False).pack())
    windows = windows_to_batch(x, window, xq[1])
    reference_model = int8_conv_model("DEPTHWISE_CONV_2D", windows.shape, k, w_scales, xq, yq, bias, padding="same")
    builtin, xnnpack = (batch_to_windows(run(reference_model, windows, r)[0], shape, window) for r in (BUILTIN, XNNPACK))
    for isa in ISAS:
        for threads in (1, 3):
            y, report = run(model, x, isa=isa, num_threads=threads)
            assert report.claimed_ops == ("WBMM",)
            assert_matches_tflite(y, builtin, xnnpack, f"WBMM {window} isa {isa} ({report.int8_isa})")


@pytest.mark.parametrize("padding, activation", [(0, NONE), (1, RELU), (0, RELU6), (1, NONE)])
def test_int8_wbmm_depthwise_matches_builtin(padding, activation):
    rng = np.random.default_rng(padding * 4 + activation)
    shape, kernel = (1, 19, 22, 11), (9, 7)
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, kernel)
    model = int8_conv_model("WBMM_DEPTHWISE", shape, k, w_scales, xq, yq, bias,
                            options=DepthwiseOptions(*kernel, padding, activation).pack())
    reference = int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, yq, bias,
                                padding="same" if padding == 0 else "valid", activation=activation)
    builtin, xnnpack = (run(reference, x, r)[0] for r in (BUILTIN, XNNPACK))
    for isa in ISAS:
        y, report = run(model, x, isa=isa)
        assert report.claimed_ops == ("WBMM_DEPTHWISE",)
        assert_matches_tflite(y, builtin, xnnpack, f"WBMM_DEPTHWISE isa {isa}")


def test_int8_rows_wider_than_the_float_kernels_old_limit_match_builtin():
    """Rows of 3,073 and 4,099 pixels (the float kernels' column split once stopped at 64 pieces
    of at most 16 columns, and crashed past it; the int8 kernels split a row without a table):
    the int8 WBMM_DEPTHWISE op and a claimed int8 DEPTHWISE_CONV_2D against TFLite's kernels."""
    rng = np.random.default_rng(3073)
    for width in (3073, 4099):
        shape, kernel = (1, 9, width, 8), (7, 7)
        x, k, w_scales, xq, yq, bias = random_case(rng, shape, kernel)
        reference = int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, yq, bias, padding="same")
        custom = int8_conv_model("WBMM_DEPTHWISE", shape, k, w_scales, xq, yq, bias,
                                 options=DepthwiseOptions(*kernel, 0, NONE).pack())
        builtin = check_every_isa(reference, x, f"DEPTHWISE_CONV_2D width {width}")
        xnnpack, _ = run(reference, x, XNNPACK)
        for isa in ISAS:
            y, report = run(custom, x, isa=isa, num_threads=2)
            assert report.claimed_ops == ("WBMM_DEPTHWISE",)
            assert_matches_tflite(y, builtin, xnnpack, f"WBMM_DEPTHWISE width {width} isa {isa}")


def test_int8_wbmm_refuses_the_shortcut_flag(capfd):
    rng = np.random.default_rng(0)
    shape = (1, 14, 14, 8)
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, (13, 13))
    model = int8_conv_model("WBMM", shape, k, w_scales, xq, yq, bias, options=WbmmOptions(7, 7, True).pack())
    with pytest.raises(RuntimeError) as error:  # nothing else runs our custom op: the model fails, with the reason
        run(model, x, verbose=1)
    assert "int8 WBMM takes no shortcut flag" in str(error.value) + capfd.readouterr().err


def test_a_dilation_needing_gigabytes_of_scratch_is_refused_at_prepare(capfd):
    """A valid int8 depthwise conv whose dilated kernel is 64,001 rows tall (65 x 1 taps, dilation
    1,000; the builtin kernel takes up to about 65,535; on an 8-row map nearly every tap reads
    padding): the plain kernels' per-thread strip of 4,096-pixel rows would take gigabytes, so
    Prepare fails with the figure instead of allocating it. The builtin kernel runs the model."""
    rng = np.random.default_rng(1)
    shape = (1, 8, 4096, 8)
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, (65, 1))
    model = int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, yq, bias, dilation=(1000, 1))
    assert run(model, x, BUILTIN)[0].shape == shape
    with pytest.raises(RuntimeError) as error:
        run(model, x, claim_depthwise=1, min_kernel=3, verbose=1)
    message = str(error.value) + capfd.readouterr().err
    assert "MiB of scratch per thread" in message and "the limit is 1024 MiB" in message, message


# ---------------------------------------------------------------- what is left to TFLite


REFUSALS = [
    # (what to break, the reason the verbose log must give)
    (dict(kernel_zero_points=[3]), "kernel has a nonzero zero point"),
    (dict(bias_scales=[1.0] * 8), "bias scale is not input scale x kernel scale"),
    (dict(x_type=schema.TensorType.INT16), "input is int16, not float32 or int8"),
    (dict(x_type=schema.TensorType.UINT8), "input is uint8, not float32 or int8"),
    (dict(kernel_axis=1), "not per channel"),  # an 8x8 kernel on 8 channels: axis 1 also has 8 entries
]


@pytest.mark.parametrize("broken, reason", REFUSALS, ids=[r for _, r in REFUSALS])
def test_unsupported_quantization_is_left_to_tflite(broken, reason, capfd):
    rng = np.random.default_rng(1)
    shape = (1, 10, 10, 8)
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, (8, 8))
    if "kernel_zero_points" in broken:
        w_scales = w_scales[:1]  # per-tensor weights with a zero point
    model = int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, yq, bias, **broken)
    delegate = delegates.load(claim_depthwise=1, verbose=1)
    try:  # TFLite itself may reject some of these at allocation: only our decision matters here
        interpreter = Interpreter(model_content=model, experimental_delegates=[delegate],
                                  experimental_op_resolver_type=BUILTIN)
        interpreter.allocate_tensors()
        assert delegates.delegation_report(interpreter, delegate).claimed_nodes == ()
    except (RuntimeError, ValueError):
        pass
    err = capfd.readouterr().err
    assert "left to TFLite" in err and reason in err, err


def test_missing_quantization_is_left_to_tflite(capfd):
    rng = np.random.default_rng(2)
    shape = (1, 10, 10, 8)
    x, k, w_scales, xq, yq, bias = random_case(rng, shape, (7, 7))
    model = schema.ModelT.InitFromPackedBuf(int8_conv_model("DEPTHWISE_CONV_2D", shape, k, w_scales, xq, yq, bias), 0)
    model.subgraphs[0].tensors[0].quantization = None
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    delegate = delegates.load(claim_depthwise=1, verbose=1)
    try:
        interpreter = Interpreter(model_content=bytes(builder.Output()), experimental_delegates=[delegate],
                                  experimental_op_resolver_type=BUILTIN)
        interpreter.allocate_tensors()
        assert delegates.delegation_report(interpreter, delegate).claimed_nodes == ()
    except (RuntimeError, ValueError):
        pass
    assert "input has no quantization parameters" in capfd.readouterr().err


def test_small_convnext_like_model_full_int8():
    """A ConvNeXt-shaped Keras model (patchify stem, two blocks of grouped 7x7 conv -> LayerNorm ->
    pointwise MLP -> residual add, a downsampling conv, one more block) converted full int8: XNNPACK
    alone against XNNPACK with the delegate taking the three grouped 7x7 convs."""
    keras.utils.set_random_seed(7)
    inp = keras.Input((32, 32, 3), batch_size=1)
    y = keras.layers.Conv2D(24, 4, strides=4)(inp)

    def block(t, channels):
        r = keras.layers.Conv2D(channels, 7, padding="same", groups=channels)(t)
        r = keras.layers.LayerNormalization(epsilon=1e-6)(r)
        r = keras.layers.Dense(4 * channels, activation="gelu")(r)
        r = keras.layers.Dense(channels)(r)
        return keras.layers.Add()([t, r])

    y = block(block(y, 24), 24)
    y = keras.layers.Conv2D(40, 2, strides=2)(y)
    y = block(y, 40)
    tflite = to_int8_tflite(keras.Model(inp, y), (32, 32, 3))
    x = np.random.default_rng(7).integers(-128, 128, (1, 32, 32, 3)).astype(np.int8)
    alone, _ = run(tflite, x, XNNPACK)
    for isa in ISAS:
        y_delegate, report = run(tflite, x, XNNPACK, claim_depthwise=1, isa=isa)
        assert report.count("CONV_2D") == 3, report.claimed_ops
        assert np.abs(y_delegate - alone).max() <= 1 and np.mean(y_delegate == alone) >= 0.999, isa
