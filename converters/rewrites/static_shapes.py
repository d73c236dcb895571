"""Graph pass ``static_shapes``: replace RESHAPE targets computed at run time by constants.

Keras models converted with a free batch dimension compute the target shape of the
RESHAPEs around every Dense on a 4-D tensor at run time (SHAPE -> GATHER -> REDUCE_PROD
-> PACK / CONCATENATION). Such a RESHAPE has a dynamic output, so XNNPACK leaves it and
the ops reading it to TFLite's own kernels and the graph falls apart into many delegate
partitions (ConvNeXtTiny from ``TFLiteConverter.from_keras_model``: 73 instead of 1).
Stock models pay little for it, but once a rewrite hands a few convs to the builtin kernel
every partition boundary costs: the exact rewrite of ConvNeXtTiny ran 137 ms with the
computed shapes against 132 ms for the same rewrite of a fixed-batch export.

When height, width and channels are static, each computed target is a constant except for
at most one entry that follows the batch, which RESHAPE's -1 states exactly for every batch
size. The pass finds the values by running the model (TFLite's own kernels, every tensor
kept) at batch 1 with two different inputs and, when the batch is free, at batch 2: an
entry equal in every run is a constant, the one entry that changes with the batch becomes
-1. A target with two batch-dependent entries, or one that depends on the input values,
stays as it is, with the reason. The shapes written in the file for run-time tensors are
placeholders, so every activation tensor's shape is then written from the batch-1 run
(its signature keeps -1 where the batch-2 run differs), and the shape arithmetic nobody
reads any more is removed.

Not for: models whose height or width is free (refused: the targets would change with
them), or shape computations in subgraphs other than the main one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters import tflite_io
from converters.rewrites._graph import Builtin, GraphEditor, Options, TensorType, builtin_of, prune_unused

NAME = "static_shapes"

# Ops that only compute on integers and have no side effects: the ones a shape computation
# is made of. Removed when nothing reads their outputs any more.
_SHAPE_ARITHMETIC = {
    Builtin.SHAPE, Builtin.GATHER, Builtin.REDUCE_PROD, Builtin.PACK, Builtin.CONCATENATION,
    Builtin.STRIDED_SLICE, Builtin.SLICE, Builtin.CAST, Builtin.MUL, Builtin.ADD, Builtin.SUB,
    Builtin.FLOOR_DIV, Builtin.SQUEEZE, Builtin.EXPAND_DIMS, Builtin.RESHAPE, Builtin.UNPACK,
}
_INTEGER_TYPES = {TensorType.INT32, TensorType.INT64}


@dataclass
class StaticShapesReport:
    """What the pass did: targets made constant, those it left (with why), ops it removed."""
    folded: int = 0
    ops_removed: int = 0
    left: list[str] = field(default_factory=list)
    reason: str = ""        # why the pass could not run on a model that has computed targets


def match(model: schema.ModelT) -> list[int]:
    """Indices (main subgraph) of RESHAPEs whose target is a tensor without constant data."""
    if not model.subgraphs:
        return []
    graph = model.subgraphs[0]
    found = []
    for index, op in enumerate(graph.operators or []):
        if builtin_of(model, op) != Builtin.RESHAPE or op.inputs is None or len(op.inputs) < 2:
            continue
        target = int(op.inputs[1])
        if target >= 0 and tflite_io.constant_value(model, 0, target) is None:
            found.append(index)
    return found


def check(model: schema.ModelT) -> str | None:
    """Why the pass cannot run on this model, or None."""
    graph = model.subgraphs[0]
    for index in graph.inputs:
        tensor = graph.tensors[int(index)]
        signature = _signature(tensor)
        if -1 in signature[1:]:
            return f"input {tflite_io.tensor_name(tensor)!r} has a free dimension besides the batch ({signature})"
    return None


def rewrite(model: schema.ModelT, data: bytes) -> StaticShapesReport:
    """Fold what can be folded in ``model`` (parsed from ``data``, the original bytes)."""
    report = StaticShapesReport()
    reshapes = match(model)
    if not reshapes:
        return report   # nothing to fold
    refusal = check(model)
    if refusal:
        report.reason = refusal
        return report
    graph = model.subgraphs[0]
    batch_is_free = any(_signature(graph.tensors[int(i)])[:1] == [-1] for i in graph.inputs)
    # The targets are made outputs of a probe copy: the interpreter keeps outputs, and
    # keeping every tensor instead (experimental_preserve_all_tensors) took 8x longer on
    # ConvNeXtTiny (a page fault per 4 KB of 6 GB).
    probe = _with_extra_outputs(model, [int(graph.operators[i].inputs[1]) for i in reshapes])
    try:
        first = _Run(probe, seed=0, batch=1)
        second = _Run(probe, seed=1, batch=1)
    except (RuntimeError, ValueError) as exc:
        report.reason = f"the model does not run on TFLite's own kernels to find the shapes ({_one_line(exc)})"
        return report
    doubled = None
    if batch_is_free:
        try:
            doubled = _Run(probe, seed=0, batch=2)
        except (RuntimeError, ValueError) as exc:
            # The original fails at batch 2 as well, so batch-1 constants lose nothing.
            report.left.append(f"the model does not run at batch 2 ({_one_line(exc)}); targets fixed at batch 1")

    targets = {}
    for index in reshapes:
        op = graph.operators[index]
        target_index = int(op.inputs[1])
        values = first.value(target_index)
        if values is None or values.ndim != 1 or not np.array_equal(values, second.value(target_index)):
            report.left.append(f"op {index}: its target depends on the input values")
            continue
        target = values.astype(np.int64)
        if doubled is not None:
            at_batch_2 = doubled.value(target_index)
            if at_batch_2 is None or at_batch_2.shape != target.shape:
                report.left.append(f"op {index}: its target has another length at batch 2")
                continue
            changes = np.flatnonzero(target != at_batch_2.astype(np.int64))
            if len(changes) + int((target == -1).sum()) > 1:
                report.left.append(f"op {index}: more than one entry of its target follows the batch")
                continue
            target[changes] = -1
        targets[index] = target

    for index, target in targets.items():
        op = graph.operators[index]
        name = tflite_io.tensor_name(graph.tensors[int(op.outputs[0])])
        constant = GraphEditor(model, 0).int32(f"{name}/static_shape", [int(v) for v in target])
        op.inputs = np.array([int(op.inputs[0]), constant.index], dtype=np.int32)
        options = schema.ReshapeOptionsT()
        options.newShape = target.astype(np.int32)
        op.builtinOptionsType = Options.ReshapeOptions
        op.builtinOptions = options
    report.folded = len(targets)
    if targets:
        _write_run_shapes(model, first, doubled)
        report.ops_removed = _remove_dead_shape_arithmetic(model)
        prune_unused(model, 0)
    return report


def _signature(tensor: schema.TensorT) -> list[int]:
    return [int(s) for s in tensor.shapeSignature] if tensor.shapeSignature is not None else []


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160]


def _with_extra_outputs(model: schema.ModelT, tensors: list[int]) -> bytes:
    graph = model.subgraphs[0]
    outputs = graph.outputs
    graph.outputs = np.concatenate([np.asarray(outputs, dtype=np.int32), np.asarray(tensors, dtype=np.int32)])
    try:
        return tflite_io.model_to_bytes(model)
    finally:
        graph.outputs = outputs


class _Run:
    """The model run once on TFLite's own kernels, which give every tensor its run-time shape."""

    def __init__(self, data: bytes, seed: int, batch: int):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from converters.verify import random_inputs

        self.interpreter = Interpreter(model_content=data,
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        details = self.interpreter.get_input_details()
        inputs = random_inputs(data, seed, batch=batch)
        for detail, value in zip(details, inputs):
            if tuple(detail["shape"]) != value.shape:
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
        self.interpreter.allocate_tensors()
        for detail, value in zip(details, inputs):
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        self.shapes = {int(d["index"]): tuple(int(s) for s in d["shape"])
                       for d in self.interpreter.get_tensor_details()}

    def value(self, tensor_index: int) -> np.ndarray | None:
        try:
            return np.array(self.interpreter.get_tensor(tensor_index))
        except ValueError:
            return None


def _write_run_shapes(model: schema.ModelT, first: _Run, doubled: _Run | None) -> None:
    """Tensors whose shape in the file is a placeholder (it differs from the batch-1 run) get
    the run's shape, since XNNPACK partitions by the file's shapes; their signature has -1
    where the batch-2 run differs. Tensors whose file shape was right keep their signature."""
    graph = model.subgraphs[0]
    for index, tensor in enumerate(graph.tensors):
        shape = first.shapes.get(index)
        written = tuple(int(s) for s in tensor.shape) if tensor.shape is not None else ()
        if shape is None or shape == written or tflite_io.constant_value(model, 0, index) is not None:
            continue
        tensor.shape = np.array(shape, dtype=np.int32)
        signature = list(shape)
        if doubled is not None and len(doubled.shapes.get(index, ())) == len(shape):
            signature = [-1 if a != b else a for a, b in zip(shape, doubled.shapes[index])]
        tensor.shapeSignature = np.array(signature, dtype=np.int32)


def _remove_dead_shape_arithmetic(model: schema.ModelT) -> int:
    graph = model.subgraphs[0]
    removed = 0
    while True:
        read = {int(i) for op in graph.operators for i in op.inputs if i >= 0} | {int(i) for i in graph.outputs}
        kept = []
        for op in graph.operators:
            dead = (builtin_of(model, op) in _SHAPE_ARITHMETIC
                    and all(graph.tensors[int(o)].type in _INTEGER_TYPES for o in op.outputs)
                    and not any(int(o) in read for o in op.outputs))
            if not dead:
                kept.append(op)
        if len(kept) == len(graph.operators):
            return removed
        removed += len(graph.operators) - len(kept)
        graph.operators = kept
