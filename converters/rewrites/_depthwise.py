"""Match a depthwise conv and the checks every large-kernel rewrite shares.

A depthwise conv is a DEPTHWISE_CONV_2D, or a CONV_2D whose filter is (C, kh, kw, 1) on a
C-channel input (Keras' ``Conv2D(groups=C)``, which ConvNeXt uses and the TFLite converter
keeps as CONV_2D). ``match`` reads one op into a :class:`DepthwiseLayer` (shapes, the kernel as float
numbers, bias, padding, activation, precision); ``check_common`` returns the reason a
layer must be left alone, or None. Strategy-specific reasons (a halo matrix too
large, an even kernel in windowed mode) live in the strategy's own file.

Precision handling: float16 weights behind DEQUANTIZE are read as the exact float16
values and written back as float16 (behind DEQUANTIZE). Integer layers (int8, and int16
activations with int8 weights, TFLite's 16x8 scheme) keep their own integer tensors:
the rewrites that have an integer form (``builtin_kernel``, ``custom``) reuse the layer's
int8 filter, int32/int64 bias and quantisation unchanged (:func:`integer_filter`); the
others run their replacement in float between a DEQUANTIZE of the input and a QUANTIZE
into the original output (:func:`emit_in_float`, a *float island*), which only
``--allow-float-islands`` permits (``converters/rewrite.py`` decides).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters import tflite_io
from converters.rewrites._graph import Activation, GraphEditor, Tensor

SUPPORTED_ACTIVATIONS = {Activation.NONE: "none", Activation.RELU: "relu", Activation.RELU6: "relu6"}
INTEGER_PRECISIONS = ("int8", "int16")
# Why the rewrites that sum several convs (split, dilated) have no integer form.
SUM_OF_REQUANTISED_CONVS = (
    "a sum of separately computed int8 convs cannot be exact: each TFLite int8 conv requantises its partial "
    "sum to int8 (rounding by up to half a step, and clipping) and the int8 ADD requantises again, so the "
    "result drifts from the single conv's one rounding of its int32 sum; no builtin op adds int32 partial "
    "sums before one requantisation")


@dataclass
class DepthwiseLayer:
    subgraph: int
    op_index: int
    name: str
    op: str
    x: Tensor
    out: Tensor
    kernel_size: tuple[int, int]
    kernel: np.ndarray | None          # (kh, kw, C) float64 real values, None if not constant
    bias: np.ndarray | None            # (C,) float64 real values
    padding: int                       # schema.Padding.SAME / VALID
    activation: int
    precision: str                     # "float32", "float16" (weights), "int8", "int16", or a type name
    stride: tuple[int, int]
    dilation: tuple[int, int]
    depth_multiplier: int
    dynamic_batch: bool
    dynamic_spatial: bool
    output_quantization: schema.QuantizationParametersT | None = None
    notes: list[str] = field(default_factory=list)
    filter_index: int = -1             # the op's filter tensor (int8 per-channel for integer layers)
    bias_index: int = -1               # the op's bias tensor, -1 when absent
    filter_quantization: schema.QuantizationParametersT | None = None

    @property
    def padding_name(self) -> str:
        return "SAME" if self.padding == schema.Padding.SAME else "VALID"

    @property
    def channels(self) -> int:
        return self.x.shape[3]

    @property
    def weights_float16(self) -> bool:
        return self.precision == "float16"

    @property
    def integer(self) -> bool:
        """int8 or int16 activations: the layer computes in integers and should stay so."""
        return self.precision in INTEGER_PRECISIONS

    @property
    def grouped(self) -> bool:
        """A CONV_2D with one group per channel (filter (C, kh, kw, 1)) rather than DEPTHWISE_CONV_2D."""
        return self.op == "CONV_2D"


def _producer(graph: schema.SubGraphT, tensor_index: int) -> schema.OperatorT | None:
    for op in graph.operators:
        if tensor_index in [int(o) for o in op.outputs]:
            return op
    return None


def _constant_through_dequantize(model, g: int, tensor_index: int) -> tuple[np.ndarray | None, bool]:
    """The constant behind ``tensor_index``; follows one DEQUANTIZE of a float16 constant."""
    value = tflite_io.constant_value(model, g, tensor_index)
    if value is not None:
        return value, False
    graph = model.subgraphs[g]
    producer = _producer(graph, tensor_index)
    if producer is not None and tflite_io.opcode_name(model, producer.opcodeIndex) == "DEQUANTIZE":
        source = int(producer.inputs[0])
        value = tflite_io.constant_value(model, g, source)
        if value is not None and graph.tensors[source].type == schema.TensorType.FLOAT16:
            return value, True
    return None, False


def _per_channel_scales(tensor: schema.TensorT, channels: int) -> np.ndarray | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = np.asarray(q.scale, dtype=np.float64)
    return np.broadcast_to(scale, (channels,)) if scale.size == 1 else scale


def _shape(tensor: schema.TensorT) -> tuple[int, ...]:
    return tuple(int(s) for s in (tensor.shape if tensor.shape is not None else []))


def match(model: schema.ModelT, g: int, op_index: int) -> DepthwiseLayer | None:
    """A DepthwiseLayer for a depthwise conv (see the module doc), None for any other op."""
    graph = model.subgraphs[g]
    op = graph.operators[op_index]
    op_name = tflite_io.opcode_name(model, op.opcodeIndex)
    if op_name not in ("DEPTHWISE_CONV_2D", "CONV_2D"):
        return None
    options = op.builtinOptions
    inputs = [int(i) for i in op.inputs]
    x_t, w_t = graph.tensors[inputs[0]], graph.tensors[inputs[1]]
    x_shape, w_shape = _shape(x_t), _shape(w_t)
    # A CONV_2D with groups == channels (filter (C, kh, kw, 1)) is a depthwise conv: Keras
    # writes ConvNeXt's 7x7 convs as Conv2D(groups=C), and the converter keeps them CONV_2D.
    grouped = op_name == "CONV_2D"
    if grouped and not (len(w_shape) == 4 and len(x_shape) == 4 and w_shape[3] == 1
                        and w_shape[0] == x_shape[3] and x_shape[3] > 1):
        return None
    out_index = int(op.outputs[0])
    out_t = graph.tensors[out_index]
    signature = [int(s) for s in x_t.shapeSignature] if x_t.shapeSignature is not None else list(x_shape)
    name = tflite_io.tensor_name(out_t)
    kernel_size = (w_shape[1], w_shape[2]) if len(w_shape) == 4 else (0, 0)
    channel_axis = 0 if grouped else 3

    raw, behind_dequantize = _constant_through_dequantize(model, g, inputs[1])
    bias_index = inputs[2] if len(inputs) > 2 else -1
    raw_bias = None
    if bias_index >= 0:
        raw_bias, _ = _constant_through_dequantize(model, g, bias_index)

    if x_t.type == schema.TensorType.INT8:
        precision = "int8"
    elif x_t.type == schema.TensorType.INT16:
        precision = "int16"
    elif x_t.type == schema.TensorType.FLOAT32:
        precision = "float16" if behind_dequantize else "float32"
    else:
        precision = tflite_io.tensor_type_name(x_t.type).lower()

    kernel = bias = None
    channels = x_shape[3] if len(x_shape) == 4 else 0
    if raw is not None and len(w_shape) == 4:
        # (kh, kw, C) whatever the op: depthwise filters are (1, kh, kw, C), grouped conv (C, kh, kw, 1).
        taps = raw[:, :, :, 0].transpose(1, 2, 0) if grouped else raw[0]
        if precision in INTEGER_PRECISIONS and w_t.type == schema.TensorType.INT8:
            w_scale = _per_channel_scales(w_t, w_shape[channel_axis])
            zero = np.asarray(w_t.quantization.zeroPoint if w_t.quantization.zeroPoint is not None else [0])
            kernel = (taps.astype(np.float64) - np.broadcast_to(zero, (w_shape[channel_axis],))) * w_scale
            in_scale = _per_channel_scales(x_t, 1)
            if raw_bias is not None and in_scale is not None:
                bias = raw_bias.astype(np.float64) * in_scale[0] * w_scale
        elif precision in ("float32", "float16"):
            kernel = taps.astype(np.float64)
            bias = None if raw_bias is None else raw_bias.astype(np.float64)

    if bias is not None and not np.any(bias):
        bias = None   # the converter writes zeros for use_bias=False; adding them is wasted work
    return DepthwiseLayer(
        subgraph=g, op_index=op_index, name=name,
        x=Tensor(inputs[0], x_shape), out=Tensor(out_index, _shape(out_t)),
        kernel_size=kernel_size, kernel=kernel, bias=bias,
        padding=int(options.padding), activation=int(options.fusedActivationFunction), precision=precision,
        stride=(int(options.strideH), int(options.strideW)),
        dilation=(int(options.dilationHFactor), int(options.dilationWFactor)),
        # The kernels infer the multiplier from the shapes; the option field is advisory.
        depth_multiplier=1 if grouped else (
            (w_shape[3] // channels) if channels and len(w_shape) == 4 else int(options.depthMultiplier)),
        op=op_name,
        dynamic_batch=bool(signature and signature[0] == -1),
        dynamic_spatial=any(s == -1 for s in signature[1:]),
        output_quantization=out_t.quantization,
        filter_index=inputs[1], bias_index=bias_index, filter_quantization=w_t.quantization)


def check_common(layer: DepthwiseLayer, min_kernel: int) -> str | None:
    """Why no large-kernel rewrite may touch this layer, or None."""
    kh, kw = layer.kernel_size
    if max(kh, kw) < min_kernel:
        return f"kernel {kh}x{kw} is below --min-kernel {min_kernel}"
    if layer.stride != (1, 1):
        return f"stride {layer.stride[0]}x{layer.stride[1]} (only stride 1 is rewritten)"
    if layer.dilation != (1, 1):
        return f"dilation {layer.dilation[0]}x{layer.dilation[1]} (only dilation 1 is rewritten)"
    if layer.depth_multiplier != 1:
        return f"depth multiplier {layer.depth_multiplier} (only 1 is rewritten)"
    if layer.dynamic_spatial or len(layer.x.shape) != 4:
        return "dynamic shape (height, width or channels unknown before run time)"
    if layer.precision not in ("float32", "float16") + INTEGER_PRECISIONS:
        return f"unsupported type {layer.precision}"
    if layer.kernel is None:
        return "unsupported type: the filter is not a constant of a supported type"
    if layer.activation not in SUPPORTED_ACTIVATIONS:
        return f"unsupported fused activation {schema_activation_name(layer.activation)}"
    return None


def schema_activation_name(value: int) -> str:
    names = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    return names.get(value, str(value))


def emit_in_float(editor: GraphEditor, layer: DepthwiseLayer,
                  body: Callable[[GraphEditor, Tensor, Tensor], None]) -> None:
    """Run ``body(editor, x_float, out_float)``; for integer layers wrap it in DEQUANTIZE/QUANTIZE
    (a float island) so the original integer input and output tensors (and their parameters)
    stay as they were."""
    if not layer.integer:
        body(editor, layer.x, layer.out)
        return
    x_float = editor.dequantize(layer.x, f"{layer.name}/wbmm/dequantized_input")
    out_float = editor.tensor(f"{layer.name}/wbmm/float_output", layer.out.shape)
    body(editor, x_float, out_float)
    editor.quantize(out_float, layer.out)


def per_channel_symmetric(layer: DepthwiseLayer) -> bool:
    """The int8 filter has one scale per channel, on the channel axis, and zero points 0: the
    weight quantisation of TFLite's int8 spec (and of the WBMM ops' int8 form)."""
    q = layer.filter_quantization
    if q is None or q.scale is None or len(q.scale) != layer.channels:
        return False
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0])
    return not np.any(zero) and int(q.quantizedDimension) == (0 if layer.grouped else 3)


def integer_filter(editor: GraphEditor, layer: DepthwiseLayer, name: str) -> Tensor:
    """The layer's own int8 per-channel filter in the depthwise layout (1, kh, kw, C).

    A DEPTHWISE_CONV_2D's filter is reused as it is. A grouped CONV_2D stores (C, kh, kw, 1)
    with the channel on axis 0: the same int8 numbers are written transposed, with the same
    scales and zero points on quantized_dimension 3, so every product is unchanged.
    """
    graph = editor.graph
    source = graph.tensors[layer.filter_index]
    kh, kw = layer.kernel_size
    if not layer.grouped:
        return Tensor(layer.filter_index, (1, kh, kw, layer.channels))
    raw = tflite_io.constant_value(editor.model, layer.subgraph, layer.filter_index)
    stored = editor.constant(name, np.ascontiguousarray(raw[:, :, :, 0].transpose(1, 2, 0)[None]))
    quantization = copy.deepcopy(source.quantization)
    quantization.quantizedDimension = 3
    graph.tensors[stored.index].quantization = quantization
    return stored


def float32_kernel(layer: DepthwiseLayer) -> np.ndarray:
    """The kernel as stored for the replacement ops (float16 models keep their float16 numbers)."""
    return layer.kernel.astype(np.float32)


def same_padding(layer: DepthwiseLayer) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) zero padding that TF's SAME rule adds at stride 1."""
    kh, kw = layer.kernel_size
    if layer.padding != schema.Padding.SAME:
        return (0, 0), (0, 0)
    return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)


def effective_kernel(layer: DepthwiseLayer) -> tuple[np.ndarray, tuple[tuple[int, int], tuple[int, int]]]:
    """The float32 kernel cropped to the taps that can reach the input, with the explicit
    (top, bottom), (left, right) zero padding that makes a VALID conv of it equal the layer.

    docs/WBMM.md's first theorem: on an H x W map, taps farther than H-1 rows (W-1 columns)
    from the centre only ever multiply padding, so a 31x31 SAME conv on a 14x14 map is
    exactly a 27x27 one. Exact; nothing is cropped when K <= 2H-1.
    """
    kernel = float32_kernel(layer)
    (top, bottom), (left, right) = same_padding(layer)
    _, height, width, _ = layer.x.shape
    _, out_h, out_w, _ = layer.out.shape
    rows = _reachable(kernel.shape[0], top, height, out_h)
    cols = _reachable(kernel.shape[1], left, width, out_w)
    cropped = kernel[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1]
    top, left = top - rows[0], left - cols[0]
    bottom = out_h + cropped.shape[0] - 1 - height - top
    right = out_w + cropped.shape[1] - 1 - width - left
    return np.ascontiguousarray(cropped), ((top, bottom), (left, right))


def _reachable(k: int, pad_before: int, size: int, out_size: int) -> tuple[int, int]:
    # Tap i reads input row r + i - pad_before for output row r in [0, out_size).
    return max(0, pad_before - out_size + 1), min(k - 1, pad_before + size - 1)


def final_bias_and_activation(editor: GraphEditor, layer: DepthwiseLayer, y: Tensor, out: Tensor) -> None:
    """``out = act(y + bias)``: one ADD with the activation fused, or one RELU/RELU6, or a copy-free
    hand-over when neither is needed (the last op then writes ``out`` itself)."""
    if layer.bias is not None:
        bias = editor.weight(f"{layer.name}/wbmm/bias", layer.bias.astype(np.float32), store_float16=False)
        editor.add(y, bias, "", layer.activation, out=out)
    elif layer.activation != Activation.NONE:
        editor.activation(y, layer.activation, "", out=out)
    else:
        # Redirect the producer of y to write the original output tensor directly.
        producer = editor.ops[-1]
        producer.outputs = np.array([out.index if int(o) == y.index else int(o) for o in producer.outputs],
                                    dtype=np.int32)


@dataclass(frozen=True)
class DepthwiseTerm:
    """One conv of a sum of depthwise convs: its taps (kh, kw, C), the tensor it reads, and how.
    ``x`` may be a function that emits the ops making that tensor: it is called right before
    the conv, so the convs reading the layer's input directly come first in the graph."""
    name: str
    taps: np.ndarray
    x: Tensor | Callable[[], Tensor]
    padding: int
    dilation: tuple[int, int] = (1, 1)


def emit_depthwise_sum(editor: GraphEditor, layer: DepthwiseLayer, terms: list[DepthwiseTerm], out: Tensor,
                       base: str) -> None:
    """``out = act(sum of the terms' depthwise convs + bias)``: the layer's bias rides on the first
    conv (the runtime's kernel wants a bias tensor, so the others share zeros) and its activation
    on the last ADD, which writes ``out``. Weights keep the layer's float16 storage."""
    channels = terms[0].taps.shape[2]
    zeros = editor.constant(f"{base}/zero_bias", np.zeros(channels, dtype=np.float32))
    total = None
    for number, term in enumerate(terms):
        piece = editor.weight(f"{term.name}/kernel", term.taps.reshape(1, *term.taps.shape), layer.weights_float16)
        bias = zeros
        if number == 0 and layer.bias is not None:
            bias = editor.weight(f"{term.name}/bias", layer.bias.astype("float32"), store_float16=False)
        last = number == len(terms) - 1
        x = term.x() if callable(term.x) else term.x
        partial = editor.depthwise(x, piece, bias, term.padding, f"{term.name}/output", dilation=term.dilation)
        total = partial if total is None else editor.add(
            total, partial, f"{term.name}/sum", layer.activation if last else Activation.NONE, out=out if last else None)
