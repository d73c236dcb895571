"""The model facts an NPU check needs: op counts per type and whether the model computes in integers.

Not for: anything about a compiler (the other modules of this package).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

__all__ = ["op_counts", "activation_precision", "tensors_of_type"]

_INTEGER_ACTIVATIONS = ("INT8", "UINT8", "INT16")
_FLOAT_ACTIVATIONS = ("FLOAT32", "FLOAT16")


def _load(model):
    from converters import tflite_io

    if isinstance(model, (str, Path)):
        return tflite_io.read_model(model)
    if isinstance(model, (bytes, bytearray)):
        return tflite_io.load_model_bytes(bytes(model))
    return model


def op_counts(model) -> Counter:
    """Op type -> count over every subgraph (``model``: a path, .tflite bytes or a ModelT)."""
    from converters import tflite_io

    tree = _load(model)
    counts: Counter = Counter()
    for g in range(len(tree.subgraphs)):
        counts.update(tflite_io.op_names(tree, g))
    return counts


def _activation_types(tree) -> Counter:
    """Type names of the tensors ops read or write at run time (constants left out)."""
    from converters import tflite_io

    types: Counter = Counter()
    for graph in tree.subgraphs:
        used = {int(i) for op in graph.operators or [] for i in list(op.inputs if op.inputs is not None else [])
                + list(op.outputs if op.outputs is not None else []) if int(i) >= 0}
        for index in used:
            tensor = graph.tensors[index]
            buffer = tree.buffers[tensor.buffer] if tensor.buffer < len(tree.buffers or []) else None
            if buffer is not None and buffer.data is not None and len(buffer.data):
                continue
            types[tflite_io.tensor_type_name(tensor.type)] += 1
    return types


def activation_precision(model) -> str:
    """``integer`` (only int8/int16 activations), ``mixed`` (integer and float ones: a quantised model
    with float islands), or ``float`` (no integer activation at all: nothing an integer NPU can take)."""
    types = _activation_types(_load(model))
    integer = sum(types[t] for t in _INTEGER_ACTIVATIONS)
    floating = sum(types[t] for t in _FLOAT_ACTIVATIONS)
    if integer and floating:
        return "mixed"
    return "integer" if integer else "float"


def tensors_of_type(model, type_name: str) -> list[tuple[str, list[str]]]:
    """(tensor name, ops that write it) for every tensor of ``type_name`` (e.g. COMPLEX64)."""
    from converters import tflite_io

    tree = _load(model)
    found = []
    for g, graph in enumerate(tree.subgraphs):
        names = tflite_io.op_names(tree, g)
        for index, tensor in enumerate(graph.tensors or []):
            if tflite_io.tensor_type_name(tensor.type) != type_name:
                continue
            writers = [names[o] for o, op in enumerate(graph.operators or [])
                       if op.outputs is not None and index in [int(i) for i in op.outputs]]
            found.append((tflite_io.tensor_name(tensor), writers))
    return found
