"""Graph pass ``integer_negation``: the TFLite converter's float NEG in an int8 model becomes an int8 MUL by -1.

The TFLite converter (2.21), asked for a full-integer int8 model, still leaves LayerNorm's
negation in float: DEQUANTIZE (int8 -> float32) -> NEG -> QUANTIZE (float32 -> int8), twice per
LayerNorm (keras.applications ConvNeXtTiny: 23 islands, 46 float tensors). An integer-only
target (an NPU) places none of a float op, so such a model is not integer-only however the
convs are rewritten. Each such chain becomes one int8 MUL of the chain's int8 input by a
constant -1 (int8 -1, scale 1, zero point 0, a real -1 exactly), written to the chain's int8
output: TFLite's int8 MUL computes ``zp_y + round((q - zp_x) * -1 * s_x / s_y)``, clamped,
which is the float chain's result; exact to the integer when ``s_x == s_y`` (the converter
writes equal scales there, so the real multiplier is 1) and at most one step apart otherwise
(the same real number rounded through a fixed-point multiplier instead of float32). The
rewriter's verification then checks the model in steps as for every other rewrite.

Run once per model for integer-only targets (``strategy.INTEGER_ONLY_TARGETS``), before the
layer rewrites. A chain whose float tensors something else reads, or that is not per-tensor
int8 on both ends, is left as it is.

Not for: any other float op (those are reported by the float-tensor count of the report).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from converters.rewrites._graph import (Builtin, GraphEditor, Options, Tensor, TensorType, builtin_of, prune_unused,
                                       quantization)

NAME = "integer_negation"


def _per_tensor_int8(tensor: schema.TensorT) -> bool:
    q = tensor.quantization
    return tensor.type == TensorType.INT8 and q is not None and q.scale is not None and len(q.scale) == 1


def match(model: schema.ModelT, g: int = 0) -> list[tuple[int, int, int]]:
    """(DEQUANTIZE, NEG, QUANTIZE) op indices of each chain that can become one int8 MUL."""
    graph = model.subgraphs[g]
    ops = graph.operators or []
    readers: dict[int, list[int]] = {}
    for index, op in enumerate(ops):
        for t in op.inputs:
            if t >= 0:
                readers.setdefault(int(t), []).append(index)
    outputs = {int(t) for t in graph.outputs}
    writer = {int(t): index for index, op in enumerate(ops) for t in op.outputs}

    def only_reader(tensor: int) -> int | None:
        users = readers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in outputs else None

    chains = []
    for neg_index, op in enumerate(ops):
        if builtin_of(model, op) != Builtin.NEG:
            continue
        source = writer.get(int(op.inputs[0]))
        consumer = only_reader(int(op.outputs[0]))
        if source is None or consumer is None or only_reader(int(op.inputs[0])) != neg_index:
            continue
        dequantize, quantize = ops[source], ops[consumer]
        if builtin_of(model, dequantize) != Builtin.DEQUANTIZE or builtin_of(model, quantize) != Builtin.QUANTIZE:
            continue
        if _per_tensor_int8(graph.tensors[int(dequantize.inputs[0])]) and \
                _per_tensor_int8(graph.tensors[int(quantize.outputs[0])]):
            chains.append((source, neg_index, consumer))
    return chains


def rewrite(model: schema.ModelT, g: int = 0) -> int:
    """Replace every matched chain in subgraph ``g``; returns how many were replaced."""
    chains = match(model, g)
    if not chains:
        return 0
    graph = model.subgraphs[g]
    editor = GraphEditor(model, g)
    minus_one = editor.constant("wbmm_integer_negation/minus_one", np.array([-1], dtype=np.int8))
    graph.tensors[minus_one.index].quantization = quantization(1.0, 0)
    replaced: dict[int, schema.OperatorT] = {}
    for dequantize_index, neg_index, quantize_index in chains:
        x = int(graph.operators[dequantize_index].inputs[0])
        y = int(graph.operators[quantize_index].outputs[0])
        options = schema.MulOptionsT()
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        # TFLite's op versions: MUL of int8 is version 2.
        replaced[quantize_index] = editor.op(Builtin.MUL, [Tensor(x, ()), minus_one], [Tensor(y, ())],
                                             Options.MulOptions, options, version=2)
    dropped = {i for chain in chains for i in chain[:2]}
    graph.operators = [replaced.get(i, op) for i, op in enumerate(graph.operators) if i not in dropped]
    prune_unused(model, g)
    return len(chains)
