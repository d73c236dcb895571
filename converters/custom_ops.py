"""The two custom ops wbmm-mobile writes into .tflite files: the one definition of their format.

The C++ delegate (``delegates/``) executes them and mirrors these constants in
``delegates/wbmm_custom_ops.h``; ``tests/test_custom_op_format.py`` checks that
the two agree, so change both together and bump ``FORMAT_VERSION``.

Both ops compute a depthwise cross-correlation with a kernel stored in TFLite's
depthwise layout (1, kh, kw, C):

``WBMM`` (the paper's operator, ``wbmm_mobile.core.wbmm_forward``)
    inputs:  0 x (B, H, W, C) float32;
             1 table as kernel (1, 2wh-1, 2ww-1, C), float32 or float16;
             2 bias (C,) float32, or -1 (absent).
    output:  (B, H, W, C) float32.
    The map is zero-padded bottom/right to a multiple of the window; inside each
    window the kernel is applied 'same' with zero padding at the window border;
    ``shortcut`` adds x; the result is cropped back to (H, W).

``WBMM_DEPTHWISE`` (an exact large depthwise conv, stride 1, dilation 1)
    inputs:  0 x (B, H, W, C) float32;
             1 kernel (1, kh, kw, C), float32 or float16;
             2 bias (C,) float32, or -1.
    output:  (B, OH, OW, C) float32 with TF's SAME or VALID rule, then the fused
    activation (TFLite's ActivationFunctionType numbering).

int8 form of both (the delegate runs it; same names, same options, same
``FORMAT_VERSION``): the op is int8 when input 0 is int8, and then follows
TFLite's int8 spec:
    inputs:  0 x (B, H, W, C) int8, per-tensor (scale, zero point);
             1 kernel / table (1, kh, kw, C) int8, per-channel symmetric
               (zero points 0, quantized_dimension 3);
             2 bias (C,) int32 at scale x_scale * w_scale[c], zero point 0, or -1.
    output:  int8, per-tensor.
    ``WBMM``: padding (bottom/right to the window, and at every window border)
    holds the input zero point (real 0); ``shortcut`` must be 0 (the delegate
    refuses flag 1: the identity is a builtin int8 ADD after the op).
    ``WBMM_DEPTHWISE``: int8 DEPTHWISE_CONV_2D with its padding and activation.
    The emitters: ``convert --precision int8 --lowering custom`` emits the op on the
    table without the identity (a following BatchNorm's scale folded in), then the
    shortcut as TFLite quantises it: int8 ADD of x (after an int8 MUL of x by the BN
    scale when a BN follows), so the identity never sets the table's per-channel scale;
    the rewriter's ``WBMM_DEPTHWISE`` reuses the layer's own
    int8 tensors and quantisation unchanged.
    Requantization: XNNPACK's (float32 scale x_scale * w_scale[c] / y_scale,
    round half to even), see docs/USAGE.md.

``custom_options`` of both: little-endian int32 words
    [MAGIC, FORMAT_VERSION, a, b, c, d]
with (a, b, c, d) = (window_h, window_w, flags, 0) for WBMM, flags bit 0 =
shortcut; and (kernel_h, kernel_w, padding, activation) for WBMM_DEPTHWISE.
Plain words rather than a flexbuffer because the C++ side then needs no parser.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wbmm_mobile.errors import CorruptModelError

WBMM_OP = "WBMM"
WBMM_DEPTHWISE_OP = "WBMM_DEPTHWISE"
CUSTOM_OP_NAMES = (WBMM_OP, WBMM_DEPTHWISE_OP)

MAGIC = 0x314D4257          # b"WBM1" read as a little-endian int32
FORMAT_VERSION = 1
OPTION_WORDS = 6
_OPTIONS = struct.Struct("<6i")

FLAG_SHORTCUT = 1

PADDING_SAME = 0
PADDING_VALID = 1

# TFLite ActivationFunctionType values the delegate implements.
ACTIVATION_NONE = 0
ACTIVATION_RELU = 1
ACTIVATION_RELU6 = 3
SUPPORTED_ACTIVATIONS = (ACTIVATION_NONE, ACTIVATION_RELU, ACTIVATION_RELU6)


@dataclass(frozen=True)
class WbmmOptions:
    window_h: int
    window_w: int
    shortcut: bool

    def pack(self) -> bytes:
        if self.window_h < 1 or self.window_w < 1:
            raise ValueError(f"window must be positive, got ({self.window_h}, {self.window_w})")
        flags = FLAG_SHORTCUT if self.shortcut else 0
        return _OPTIONS.pack(MAGIC, FORMAT_VERSION, self.window_h, self.window_w, flags, 0)


@dataclass(frozen=True)
class DepthwiseOptions:
    kernel_h: int
    kernel_w: int
    padding: int = PADDING_SAME
    activation: int = ACTIVATION_NONE

    def pack(self) -> bytes:
        if self.padding not in (PADDING_SAME, PADDING_VALID):
            raise ValueError(f"padding must be PADDING_SAME or PADDING_VALID, got {self.padding}")
        if self.activation not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"activation {self.activation} is not one of {SUPPORTED_ACTIVATIONS}")
        return _OPTIONS.pack(MAGIC, FORMAT_VERSION, self.kernel_h, self.kernel_w, self.padding, self.activation)


def unpack_options(op_name: str, data: bytes) -> WbmmOptions | DepthwiseOptions:
    """Parse ``custom_options`` of one of our ops; a clear error for anything else."""
    if op_name not in CUSTOM_OP_NAMES:
        raise CorruptModelError(f"custom op {op_name!r} is not a wbmm-mobile op")
    if len(data) != _OPTIONS.size:
        raise CorruptModelError(f"{op_name} options are {len(data)} bytes, expected {_OPTIONS.size}")
    magic, version, a, b, c, d = _OPTIONS.unpack(bytes(data))
    if magic != MAGIC:
        raise CorruptModelError(f"{op_name} options have magic {magic:#x}, expected {MAGIC:#x}")
    if version != FORMAT_VERSION:
        raise CorruptModelError(f"{op_name} options are format version {version}, this tool reads {FORMAT_VERSION}")
    if op_name == WBMM_OP:
        return WbmmOptions(a, b, bool(c & FLAG_SHORTCUT))
    return DepthwiseOptions(a, b, c, d)
