"""``gather`` lowering: the compact table stays in the file and M is built in the graph by GATHER.

The TFLite converter constant-folds a gather of constants, so the graph is converted as for
``bmm`` and then edited: the constant M (C, d, d) feeding each layer's BATCH_MATMUL (directly,
or through the DEQUANTIZE of a float16 file) is replaced by the table (C, (2wh-1)(2ww-1)) and a
``GATHER(table, I, axis=1)`` producing M right before the matmul. The table is read back out of
M itself, so whatever the converter did to M (float16, int8 with its scale, a folded scale) is
kept bit for bit, and the edit is refused unless ``table[:, I]`` reproduces M exactly.
Cost: one gather of C*d^2 values per call; file: the table plus the (d, d) index, as an int32
or int16 constant when that costs at most ``INDEX_BUDGET`` of the table, else computed per call
from two length-d vectors (slower; see ``_relative_index``).
Measured alternative, rejected: the table stored as rows (T, C), GATHER on axis 0 and a TRANSPOSE
(d, d, C) -> (C, d, d) ran 2.5-3x slower than the single axis-1 GATHER at 14x14x384 (the
transpose of the gathered M dominates).
"""

from __future__ import annotations

import numpy as np

from converters.lowerings.base import (WbmmParams, add_constant, add_tensor_like, consumers, has_marker,
                                       opcode_index, producers)
from converters.lowerings.bmm import BmmLowering
from wbmm_mobile import core
from wbmm_mobile.errors import ConversionError


# The index may cost at most this fraction of the stored table's bytes as a constant; past it,
# it is computed per call (see _index_in_graph). 0.15 keeps the file within the 1.2x target
# (table + rest of the model) with room for the graph itself.
INDEX_BUDGET = 0.15


def _relative_index(model, subgraph, params: WbmmParams, index: np.ndarray, transposed: bool, table_bytes: int):
    """(index tensor, ops producing it, description). A constant index is fastest: measured at
    14x14x384, w=7, XNNPACK: GATHER with constant int32 or int16 positions 1.4-1.6 ms, with
    positions computed by a SUB 7-10 ms (the runtime handles the gather differently when its
    positions are not constant). So: int32 constant if it fits the budget, else int16 (every
    table index < 2^15), else the computed index."""
    from ai_edge_litert import schema_py_generated as schema

    d2 = index.size
    for dtype, tensor_type in ((np.int32, schema.TensorType.INT32), (np.int16, schema.TensorType.INT16)):
        if d2 * np.dtype(dtype).itemsize <= INDEX_BUDGET * table_bytes and index.max() <= np.iinfo(dtype).max:
            tensor = add_constant(model, subgraph, index.astype(dtype), f"{params.marker}/relative_index",
                                  tensor_type)
            return tensor, [], f"constant {np.dtype(dtype).name} index"
    tensor, ops = _index_in_graph(model, subgraph, params, transposed)
    return tensor, ops, "index computed per call: a constant one would exceed the size budget"


def _index_in_graph(model, subgraph, params: WbmmParams, transposed: bool):
    """The (d, d) int32 index I computed per call from two length-d vectors.

    With u_p = r_p*(2ww-1) + c_p for pixel p = (r_p, c_p), ``I[i, j] = u_i - u_j + centre``: one
    broadcast SUB of a (d, 1) and a (1, d) constant. The file then holds 2d ints instead of d^2
    (153 KB at 14x14), which is what keeps the gather file near the table's own size.
    """
    from ai_edge_litert import schema_py_generated as schema

    wh, ww = params.window
    rows, cols = np.divmod(np.arange(wh * ww), ww)
    u = (rows * (2 * ww - 1) + cols).astype(np.int32)
    centre = core.center_offset(params.window)
    left, right = (centre - u, -u) if transposed else (u + centre, u)
    expected = core.relative_position_index(params.window)
    if not np.array_equal(left[:, None] - right[None, :], expected.T if transposed else expected):
        raise ConversionError(f"layer {params.name!r}: internal error building the relative index")
    left_tensor = add_constant(model, subgraph, left.reshape(-1, 1), f"{params.marker}/index_rows",
                               schema.TensorType.INT32)
    right_tensor = add_constant(model, subgraph, right.reshape(1, -1), f"{params.marker}/index_cols",
                                schema.TensorType.INT32)
    index = schema.TensorT()
    index.shape, index.type, index.buffer = [wh * ww, wh * ww], schema.TensorType.INT32, 0
    index.name = f"{params.marker}/relative_index"
    subgraph.tensors.append(index)
    index_tensor = len(subgraph.tensors) - 1
    sub = schema.OperatorT()
    sub.opcodeIndex = opcode_index(model, schema.BuiltinOperator.SUB)
    sub.inputs, sub.outputs = [left_tensor, right_tensor], [index_tensor]
    sub.builtinOptionsType = schema.BuiltinOptions.SubOptions
    sub.builtinOptions = schema.SubOptionsT()
    return index_tensor, [sub]


def _first_positions(index: np.ndarray, table_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each table entry k, one (i, j) with index[i, j] == k (every k occurs in I)."""
    flat = index.reshape(-1)
    first = np.full(table_size, -1, dtype=np.int64)
    for position in range(flat.size - 1, -1, -1):
        first[flat[position]] = position
    if (first < 0).any():
        raise ConversionError("the relative-position index does not cover the table")
    return np.divmod(first, index.shape[1])


class GatherLowering(BmmLowering):
    name = "gather"
    summary = "compact table in the file, M = GATHER(table, I) in the graph, then BATCH_MATMUL"
    edits_flatbuffer = True

    def finalize(self, model, layers: list[WbmmParams]) -> list[str]:
        from ai_edge_litert import schema_py_generated as schema
        from converters import tflite_io

        subgraph = model.subgraphs[0]
        notes = []
        for params in layers:
            written_by = producers(subgraph)
            matmul_at = next((i for i, op in enumerate(subgraph.operators)
                              if tflite_io.opcode_name(model, op.opcodeIndex) == "BATCH_MATMUL"
                              and any(has_marker(subgraph.tensors[t], params.marker) for t in op.outputs)), None)
            if matmul_at is None:
                raise ConversionError(f"layer {params.name!r}: no BATCH_MATMUL of its lowering found in the file")
            matmul = subgraph.operators[matmul_at]
            rhs = int(matmul.inputs[1])
            constant, dequantize_at = rhs, None
            if rhs in written_by and tflite_io.opcode_name(
                    model, subgraph.operators[written_by[rhs]].opcodeIndex) == "DEQUANTIZE":
                dequantize_at = written_by[rhs]
                constant = int(subgraph.operators[dequantize_at].inputs[0])
            dense = tflite_io.constant_value(model, 0, constant)
            if dense is None or dense.shape != (params.channels, params.d, params.d):
                raise ConversionError(f"layer {params.name!r}: the matmul's right-hand side is not a constant "
                                      f"(C, d, d) = {(params.channels, params.d, params.d)}")
            options = matmul.builtinOptions
            index = core.relative_position_index(params.window)
            transposed = options is not None and bool(getattr(options, "adjY", False))
            if transposed:
                index = index.T
            rows, cols = _first_positions(index, core.table_size(params.window))
            table = np.ascontiguousarray(dense[:, rows, cols])
            if not np.array_equal(table[:, index], dense):
                raise ConversionError(f"layer {params.name!r}: the converted M is not R[I] for any table R "
                                      "(the converter changed its structure); use --lowering bmm")

            # The table gets a buffer of its own: converters share identical buffers between tensors.
            table_tensor = subgraph.tensors[constant]
            table_index = add_constant(model, subgraph, table, f"{params.marker}/table", table_tensor.type,
                                       table_tensor.quantization)
            index_tensor, index_ops, index_form = _relative_index(model, subgraph, params, index, transposed,
                                                                  table.nbytes)
            if dequantize_at is not None:
                # float16 file: DEQUANTIZE(table16) -> GATHER; the dequantized tensor changes shape.
                dequantize = subgraph.operators[dequantize_at]
                if len(consumers(subgraph).get(rhs, [])) != 1:
                    raise ConversionError(f"layer {params.name!r}: its dequantized M is shared with other ops")
                dequantize.inputs = [table_index]
                subgraph.tensors[rhs].shape = list(table.shape)
                subgraph.tensors[rhs].shapeSignature = None
                gather_input = rhs
            else:
                gather_input = table_index
            gathered = add_tensor_like(subgraph, subgraph.tensors[rhs], dense.shape, f"{params.marker}/gathered_M")
            if dequantize_at is not None:
                subgraph.tensors[gathered].type = schema.TensorType.FLOAT32

            gather = schema.OperatorT()
            gather.opcodeIndex = opcode_index(model, schema.BuiltinOperator.GATHER)
            gather.inputs = [gather_input, index_tensor]
            gather.outputs = [gathered]
            gather.builtinOptionsType = schema.BuiltinOptions.GatherOptions
            gather.builtinOptions = schema.GatherOptionsT()
            gather.builtinOptions.axis = 1
            matmul.inputs = [int(matmul.inputs[0]), gathered] + [int(t) for t in matmul.inputs[2:]]
            subgraph.operators[matmul_at:matmul_at] = index_ops + [gather]
            notes.append(f"{params.name}: M (C, d, d) = {dense.shape} replaced by a {table.shape} table + GATHER "
                         f"({index_form})")
        return notes


LOWERING = GatherLowering()
