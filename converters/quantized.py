"""Integer (int8) helpers the rewriter's integer policy needs: a one-layer int8 depthwise model
built with the schema, its timing against the ``builtin_kernel`` rewrite, and whether a wbmm
delegate runs the int8 custom ops.

The one-layer model follows TFLite's int8 quantisation spec exactly as the TFLite converter
writes it: input and output int8 per-tensor (scale, zero point), filter int8 per-channel
symmetric (zero point 0, quantized_dimension 3), bias int32 with scale
``input_scale * filter_scale[c]`` and zero point 0. Built directly (no TensorFlow) so that
``auto --measure`` and the delegate probe cost milliseconds.

Not for: the integer rewrites themselves (``converters/rewrites/``) or the policy that picks
them (``converters/strategy.py``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters import tflite_io
from converters.rewrites._graph import Builtin, Options, TensorType, new_model, quantization

INPUT_SCALE = 1.0 / 127.0
INPUT_ZERO_POINT = -3     # not 0, so a kernel that forgets the zero point shows it


def int8_depthwise_model(height: int, width: int, channels: int, kernel: int, *, seed: int = 0,
                         padding: str = "SAME", activation: int = 0, custom_op: str | None = None) -> bytes:
    """A .tflite holding one int8 DEPTHWISE_CONV_2D on a 1xHxWxC int8 input, seeded weights; or, with
    ``custom_op``, the int8 form of that custom op on the same tensors: ``WBMM_DEPTHWISE`` (the
    same conv), or ``WBMM`` (the filter as the table of window (K+1)/2, odd K, 'same', no fused
    activation)."""
    from converters import custom_ops

    rng = np.random.default_rng(seed)
    editor = new_model("wbmm-mobile one-layer int8 depthwise model")
    graph = editor.graph
    valid = padding.upper() == "VALID"
    out_hw = (height - kernel + 1, width - kernel + 1) if valid else (height, width)
    w_scale = rng.uniform(0.5, 1.5, channels) / (127.0 * kernel)
    filter_q = rng.integers(-127, 128, (1, kernel, kernel, channels)).astype(np.int8)
    bias_q = rng.integers(-2000, 2000, channels).astype(np.int32)
    # Real outputs of a uniform [-1, 1) input stay within about 3 standard deviations.
    spread = 3.0 * np.sqrt(((filter_q.astype(np.float64) * w_scale) ** 2).sum(axis=(0, 1, 2)).max() / 3.0)
    x = editor.tensor("input", (1, height, width, channels), TensorType.INT8,
                      quantization(INPUT_SCALE, INPUT_ZERO_POINT))
    w = editor.constant("filter", filter_q)
    graph.tensors[w.index].quantization = quantization(w_scale, 0, dimension=3)
    b = editor.constant("bias", bias_q)
    graph.tensors[b.index].quantization = quantization(INPUT_SCALE * w_scale, 0)
    out = editor.tensor("output", (1, *out_hw, channels), TensorType.INT8, quantization(spread / 127.0, 5))
    if custom_op == custom_ops.WBMM_OP:
        if kernel % 2 == 0 or valid or activation:
            raise ValueError("a WBMM table needs an odd kernel, 'same' padding and no fused activation")
        window = (kernel + 1) // 2
        editor.op(Builtin.CUSTOM, [x, w, b], [out], custom=custom_ops.WBMM_OP,
                  custom_options=custom_ops.WbmmOptions(window, window, shortcut=False).pack())
    elif custom_op == custom_ops.WBMM_DEPTHWISE_OP:
        padding_code = custom_ops.PADDING_VALID if valid else custom_ops.PADDING_SAME
        editor.op(Builtin.CUSTOM, [x, w, b], [out], custom=custom_ops.WBMM_DEPTHWISE_OP,
                  custom_options=custom_ops.DepthwiseOptions(kernel, kernel, padding_code, activation).pack())
    elif custom_op is not None:
        raise ValueError(f"custom_op must be {custom_ops.WBMM_OP!r} or {custom_ops.WBMM_DEPTHWISE_OP!r}, got {custom_op!r}")
    else:
        options = schema.DepthwiseConv2DOptionsT()
        options.padding = schema.Padding.VALID if valid else schema.Padding.SAME
        options.strideH = options.strideW = options.depthMultiplier = 1
        options.dilationHFactor = options.dilationWFactor = 1
        options.fusedActivationFunction = activation
        editor.op(Builtin.DEPTHWISE_CONV_2D, [x, w, b], [out], Options.DepthwiseConv2DOptions, options, version=3)
    graph.operators = editor.ops
    graph.inputs = np.array([x.index], dtype=np.int32)
    graph.outputs = np.array([out.index], dtype=np.int32)
    return tflite_io.model_to_bytes(editor.model)


def delegate_runs_int8_custom_ops(make_delegate: Callable[[], Any], op: str = "WBMM_DEPTHWISE") -> tuple[bool, str]:
    """(True, "") when the delegate from ``make_delegate`` claims an int8 ``op`` node (WBMM or
    WBMM_DEPTHWISE) of a one-op probe model; else (False, why). A delegate without int8 kernels
    leaves the node unclaimed, and TFLite then refuses the model (an unresolved custom op has no
    kernel of its own), so a model that loads is one the delegate took."""
    from converters import verify
    from wbmm_mobile.errors import WbmmError

    probe = int8_depthwise_model(8, 8, 4, 7, custom_op=op)
    delegate = make_delegate()
    try:
        verify.load_interpreter(probe, kernels="xnnpack", delegate=delegate)
    except WbmmError as exc:
        detail = str(exc).split("Encountered")[0].split(": ", 1)[-1].strip()[:160]
        return False, f"the loaded wbmm delegate does not run int8 {op} ({detail})"
    return True, ""


__all__ = ["int8_depthwise_model", "delegate_runs_int8_custom_ops"]
