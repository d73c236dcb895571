"""Small helpers that add tensors, constant buffers and ops to one subgraph of a ``ModelT``.

Every rewrite builds its replacement ops through :class:`GraphEditor`, so opcodes are
shared (one ``OperatorCodeT`` per op kind), tensor shapes are always written (the
XNNPACK delegate reads them when it partitions) and a batch dimension that is
dynamic in the original (``shapeSignature`` -1) stays dynamic in the new tensors.

Not for: deciding what to rewrite (the passes do) or file I/O (``converters.tflite_io``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

Builtin = schema.BuiltinOperator
Options = schema.BuiltinOptions
TensorType = schema.TensorType
Activation = schema.ActivationFunctionType

_TYPE_OF_DTYPE = {
    np.dtype(np.float32): TensorType.FLOAT32, np.dtype(np.float16): TensorType.FLOAT16,
    np.dtype(np.int32): TensorType.INT32, np.dtype(np.int8): TensorType.INT8, np.dtype(np.int64): TensorType.INT64,
}


@dataclass(frozen=True)
class Tensor:
    """A tensor index with its static shape, as the builders pass them around."""
    index: int
    shape: tuple[int, ...]


class GraphEditor:
    """Adds tensors and ops to ``model.subgraphs[subgraph]``; ops are returned, not inserted,
    so a pass can replace one op by a list in its original position."""

    def __init__(self, model: schema.ModelT, subgraph: int = 0, dynamic_batch: bool = False):
        self.model = model
        self.graph = model.subgraphs[subgraph]
        self.dynamic_batch = dynamic_batch
        self.ops: list[schema.OperatorT] = []
        if self.graph.tensors is None:
            self.graph.tensors = []
        if self.model.buffers is None or not self.model.buffers:
            self.model.buffers = [schema.BufferT()]   # buffer 0 is the empty sentinel by convention

    # ------------------------------------------------------------------ tensors
    def tensor(self, name: str, shape: Sequence[int], tensor_type: int = TensorType.FLOAT32,
               quantization: schema.QuantizationParametersT | None = None) -> Tensor:
        """A new activation tensor (no data)."""
        t = schema.TensorT()
        t.name = name.encode()
        t.shape = np.array(shape, dtype=np.int32)
        if self.dynamic_batch and len(shape) >= 1:
            signature = np.array(shape, dtype=np.int32)
            signature[0] = -1
            t.shapeSignature = signature
        t.type = tensor_type
        t.buffer = 0
        t.quantization = quantization
        self.graph.tensors.append(t)
        return Tensor(len(self.graph.tensors) - 1, tuple(int(s) for s in shape))

    def constant(self, name: str, value: np.ndarray) -> Tensor:
        """A constant tensor holding ``value`` (float32, float16, int32, int8) in a new buffer."""
        value = np.ascontiguousarray(value)
        if value.dtype not in _TYPE_OF_DTYPE:
            raise TypeError(f"no TFLite type for constant of dtype {value.dtype}")
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        t = schema.TensorT()
        t.name = name.encode()
        t.shape = np.array(value.shape, dtype=np.int32)
        t.type = _TYPE_OF_DTYPE[value.dtype]
        t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return Tensor(len(self.graph.tensors) - 1, tuple(int(s) for s in value.shape))

    def weight(self, name: str, value: np.ndarray, store_float16: bool) -> Tensor:
        """A float32 weight; with ``store_float16`` it is stored as float16 behind a DEQUANTIZE
        (the layout the TFLite converter uses for float16 models)."""
        if not store_float16:
            return self.constant(name, np.asarray(value, dtype=np.float32))
        half = self.constant(name + "/fp16", np.asarray(value, dtype=np.float16))
        out = self.tensor(name, half.shape)
        # TFLite's op versioning: DEQUANTIZE of float16 is version 3, of int8 version 2.
        self.op(Builtin.DEQUANTIZE, [half], [out], version=3)
        return out

    def int32(self, name: str, values: Sequence[int]) -> Tensor:
        return self.constant(name, np.asarray(values, dtype=np.int32))

    # ------------------------------------------------------------------ ops
    def opcode(self, builtin: int, custom: str | None = None, version: int = 1) -> int:
        """Index of the OperatorCodeT for a builtin (or custom) op, added if missing."""
        codes = self.model.operatorCodes
        if codes is None:
            codes = self.model.operatorCodes = []
        for index, code in enumerate(codes):
            value = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
            if value != builtin:
                continue
            if builtin == Builtin.CUSTOM:
                name = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
                if name != custom:
                    continue
            code.version = max(int(code.version), version)
            return index
        code = schema.OperatorCodeT()
        code.builtinCode = builtin
        # Codes up to 127 must also sit in the deprecated int8 field for old readers.
        code.deprecatedBuiltinCode = min(builtin, Builtin.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = version
        if custom is not None:
            code.customCode = custom.encode()
        codes.append(code)
        return len(codes) - 1

    def op(self, builtin: int, inputs: Sequence[Tensor | int | None], outputs: Sequence[Tensor],
           options_type: int = Options.NONE, options=None, version: int = 1,
           custom: str | None = None, custom_options: bytes | None = None) -> schema.OperatorT:
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode(builtin, custom, version)
        op.inputs = np.array([_index(t) for t in inputs], dtype=np.int32)
        op.outputs = np.array([_index(t) for t in outputs], dtype=np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        if custom_options is not None:
            op.customOptions = np.frombuffer(custom_options, dtype=np.uint8)
        self.ops.append(op)
        return op

    # ------------------------------------------------------------------ builtin op shorthands
    def pad(self, x: Tensor, paddings: Sequence[tuple[int, int]], name: str) -> Tensor:
        if not any(a or b for a, b in paddings):
            return x
        shape = tuple(s + a + b for s, (a, b) in zip(x.shape, paddings))
        out = self.tensor(name, shape)
        self.op(Builtin.PAD, [x, self.constant(name + "/paddings", np.array(paddings, dtype=np.int32).reshape(-1, 2))], [out],
                Options.PadOptions, schema.PadOptionsT())
        return out

    def slice(self, x: Tensor, begin: Sequence[int], size: Sequence[int], name: str) -> Tensor:
        """STRIDED_SLICE with unit strides; a size of -1 keeps a whole axis (mask bit, so a
        dynamic batch axis stays dynamic)."""
        if all(b == 0 and (s == -1 or s == d) for b, s, d in zip(begin, size, x.shape)):
            return x
        whole = [s == -1 for s in size]
        out_shape = tuple(d if w else s for d, s, w in zip(x.shape, size, whole))
        ends = [0 if w else b + s for b, s, w in zip(begin, size, whole)]
        mask = sum(1 << axis for axis, w in enumerate(whole) if w)
        options = schema.StridedSliceOptionsT()
        options.beginMask = mask
        options.endMask = mask
        out = self.tensor(name, out_shape)
        self.op(Builtin.STRIDED_SLICE,
                [x, self.int32(name + "/begin", [0 if w else b for b, w in zip(begin, whole)]),
                 self.int32(name + "/end", ends), self.int32(name + "/strides", [1] * len(begin))],
                [out], Options.StridedSliceOptions, options)
        return out

    def reshape(self, x: Tensor, shape: Sequence[int], name: str) -> Tensor:
        """RESHAPE; the first dimension is written as -1 so a resized batch still fits."""
        shape = tuple(int(s) for s in shape)
        if shape == x.shape:
            return x
        if int(np.prod(shape)) != int(np.prod(x.shape)):
            raise ValueError(f"reshape {x.shape} -> {shape} changes the element count")
        out = self.tensor(name, shape)
        target = list(shape)
        target[0] = -1
        options = schema.ReshapeOptionsT()
        options.newShape = np.array(target, dtype=np.int32)
        self.op(Builtin.RESHAPE, [x, self.int32(name + "/shape", target)], [out], Options.ReshapeOptions, options)
        return out

    def transpose(self, x: Tensor, perm: Sequence[int], name: str) -> Tensor:
        out = self.tensor(name, tuple(x.shape[p] for p in perm))
        self.op(Builtin.TRANSPOSE, [x, self.int32(name + "/perm", perm)], [out],
                Options.TransposeOptions, schema.TransposeOptionsT())
        return out

    def concat(self, parts: Sequence[Tensor], axis: int, name: str) -> Tensor:
        if len(parts) == 1:
            return parts[0]
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        out = self.tensor(name, shape)
        options = schema.ConcatenationOptionsT()
        options.axis = axis
        self.op(Builtin.CONCATENATION, list(parts), [out], Options.ConcatenationOptions, options)
        return out

    def add(self, a: Tensor, b: Tensor, name: str, activation: int = Activation.NONE,
            out: Tensor | None = None) -> Tensor:
        out = out or self.tensor(name, tuple(np.broadcast_shapes(a.shape, b.shape)))
        options = schema.AddOptionsT()
        options.fusedActivationFunction = activation
        self.op(Builtin.ADD, [a, b], [out], Options.AddOptions, options)
        return out

    def batch_matmul(self, a: Tensor, b: Tensor, name: str) -> Tensor:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = self.tensor(name, tuple(batch) + (a.shape[-2], b.shape[-1]))
        self.op(Builtin.BATCH_MATMUL, [a, b], [out], Options.BatchMatMulOptions, schema.BatchMatMulOptionsT())
        return out

    def depthwise(self, x: Tensor, kernel: Tensor, bias: Tensor | None, padding: int, name: str,
                  activation: int = Activation.NONE, out: Tensor | None = None,
                  dilation: tuple[int, int] = (1, 1)) -> Tensor:
        kh, kw = kernel.shape[1:3]
        b, h, w, c = x.shape
        if padding == schema.Padding.VALID:
            shape = (b, h - (kh - 1) * dilation[0], w - (kw - 1) * dilation[1], c)
        else:
            shape = (b, h, w, c)
        out = out or self.tensor(name, shape)
        options = schema.DepthwiseConv2DOptionsT()
        options.padding = padding
        options.strideH = options.strideW = 1
        options.dilationHFactor, options.dilationWFactor = dilation
        options.depthMultiplier = 1
        options.fusedActivationFunction = activation
        self.op(Builtin.DEPTHWISE_CONV_2D, [x, kernel, bias if bias is not None else -1], [out],
                # TFLite's op versions: 2 adds dilation and the optional bias.
                Options.DepthwiseConv2DOptions, options, version=2 if bias is None or dilation != (1, 1) else 1)
        return out

    def activation(self, x: Tensor, activation: int, name: str, out: Tensor | None = None) -> Tensor:
        if activation == Activation.NONE and out is None:
            return x
        builtin = {Activation.RELU: Builtin.RELU, Activation.RELU6: Builtin.RELU6}.get(activation)
        if builtin is None:
            raise ValueError(f"activation {activation} has no standalone op here")
        out = out or self.tensor(name, x.shape)
        self.op(builtin, [x], [out])
        return out

    def dequantize(self, x: Tensor, name: str) -> Tensor:
        out = self.tensor(name, x.shape)
        self.op(Builtin.DEQUANTIZE, [x], [out], version=2)
        return out

    def quantize(self, x: Tensor, out: Tensor) -> Tensor:
        self.op(Builtin.QUANTIZE, [x], [out])
        return out


def quantization(scale, zero_point=0, dimension: int = 0) -> schema.QuantizationParametersT:
    """TFLite quantisation parameters: one (scale, zero point) per tensor, or per channel of ``dimension``."""
    q = schema.QuantizationParametersT()
    q.scale = np.atleast_1d(np.asarray(scale, np.float32))
    q.zeroPoint = np.broadcast_to(np.atleast_1d(np.asarray(zero_point, np.int64)), q.scale.shape).copy()
    q.quantizedDimension = dimension
    return q


def new_model(description: str) -> GraphEditor:
    """An editor on a fresh one-subgraph model (buffer 0 empty, no ops yet): for building small
    test and timing models from scratch. Set ``graph.operators``/``inputs``/``outputs`` after."""
    model = schema.ModelT()
    model.version = 3
    model.description = description.encode()
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [], []
    model.subgraphs = [graph]
    return GraphEditor(model, 0)


def _index(t: Tensor | int | None) -> int:
    if t is None:
        return -1
    return t.index if isinstance(t, Tensor) else int(t)


def prune_unused(model: schema.ModelT, subgraph: int = 0) -> None:
    """Drop DEQUANTIZE ops whose outputs nobody reads, then tensors no op or signature uses,
    and empty the buffers no tensor uses any more (buffers keep their indices so other
    subgraphs stay valid)."""
    graph = model.subgraphs[subgraph]
    outputs = set(int(i) for i in graph.outputs)
    changed = True
    while changed:
        changed = False
        consumed = {int(i) for op in graph.operators for i in op.inputs if i >= 0} | outputs
        kept = []
        for op in graph.operators:
            name = builtin_of(model, op)
            if name == Builtin.DEQUANTIZE and not any(int(o) in consumed for o in op.outputs):
                changed = True
                continue
            kept.append(op)
        graph.operators = kept

    used = set(int(i) for i in graph.inputs) | outputs
    for op in graph.operators:
        used.update(int(i) for i in op.inputs if i >= 0)
        used.update(int(i) for i in op.outputs)
        if op.intermediates is not None:
            used.update(int(i) for i in op.intermediates)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == subgraph:
            used.update(int(t.tensorIndex) for t in (signature.inputs or []) + (signature.outputs or []))
    old_count = len(graph.tensors)
    remap = {}
    new_tensors = []
    for index, tensor in enumerate(graph.tensors):
        if index in used:
            remap[index] = len(new_tensors)
            new_tensors.append(tensor)
    if len(new_tensors) != old_count:
        graph.tensors = new_tensors
        graph.inputs = np.array([remap[int(i)] for i in graph.inputs], dtype=np.int32)
        graph.outputs = np.array([remap[int(i)] for i in graph.outputs], dtype=np.int32)
        for op in graph.operators:
            op.inputs = np.array([remap[int(i)] if i >= 0 else -1 for i in op.inputs], dtype=np.int32)
            op.outputs = np.array([remap[int(i)] for i in op.outputs], dtype=np.int32)
            if op.intermediates is not None:
                op.intermediates = np.array([remap[int(i)] for i in op.intermediates], dtype=np.int32)
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == subgraph:
                for t in (signature.inputs or []) + (signature.outputs or []):
                    t.tensorIndex = remap[int(t.tensorIndex)]

    buffers_in_use = {int(t.buffer) for g in model.subgraphs for t in g.tensors or []}
    for index, buffer in enumerate(model.buffers or []):
        if index and index not in buffers_in_use and buffer.data is not None:
            buffer.data = None


def builtin_of(model: schema.ModelT, op: schema.OperatorT) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
