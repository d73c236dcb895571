"""Read and write .tflite files through the schema's object API (``ModelT`` and friends).

Plain functions: bytes or a path in, a mutable ``ModelT`` tree out, and back. Every
field the schema knows survives a round trip (signatures, metadata, buffers,
quantisation parameters, every subgraph) because nothing here interprets the tree;
rewrite passes (``converters/rewrites/``) do that. Buffers that live after the
flatbuffer (files past 2 GB, ``Buffer.offset > 1``) are read into memory on load;
writing a model whose flatbuffer itself would pass 2 GB is refused.

Not for: running models (``converters/verify.py``) or deciding what to rewrite.

A corrupt file must never take the process down: the generated flatbuffer reader
raises whatever Python raises on bad offsets (IndexError, struct.error,
UnicodeDecodeError, ValueError from numpy, RecursionError, MemoryError), so
:func:`load_model` maps all of them to :class:`CorruptModelError` naming the
file, and then checks every index the rest of the project follows.

The two entry points, and what they return: :func:`read_model_bytes` (bytes or a path ->
checked ``bytes``, to run or hash) and :func:`load_model` (bytes or a path -> ``ModelT``,
to read or edit). ``read_model`` and ``load_model_bytes`` are their 0.1 names for
``load_model``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from wbmm_mobile.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError

FILE_IDENTIFIER = b"TFL3"
_MAX_FLATBUFFER_BYTES = 2**31 - 1
# Data buffers are placed on 16-byte boundaries, as the TFLite converter does, so kernels
# that map weights directly (XNNPACK packs from them) never see a misaligned pointer.
_BUFFER_ALIGNMENT = 16

_BUILTIN_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_") and isinstance(value, int)}
_TENSOR_TYPE_NAMES = {value: name for name, value in vars(schema.TensorType).items()
                      if not name.startswith("_") and isinstance(value, int)}


# ---------------------------------------------------------------------------- reading

def read_model_bytes(model: bytes | bytearray | memoryview | str | os.PathLike, name: str | None = None) -> bytes:
    """The bytes of a .tflite given as bytes or a path, checked to be a .tflite flatbuffer.

    ``ModelNotFoundError`` for a missing file, ``CorruptModelError`` for a directory, an
    unreadable file, or bytes without the 'TFL3' identifier. Use this to run or hash a
    model; use :func:`load_model` to edit it.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, name = bytes(model), name or "<bytes>"
    else:
        path = Path(model)
        name = name or str(path)
        if not path.exists():
            raise ModelNotFoundError(f"{name}: no such model file")
        if path.is_dir():
            raise CorruptModelError(f"{name}: is a directory, not a .tflite file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorruptModelError(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) < 8:
        raise CorruptModelError(f"{name}: {len(data)} bytes is too short for a .tflite model")
    # A flatbuffer .tflite carries its file identifier at bytes 4..8.
    if data[4:8] != FILE_IDENTIFIER:
        raise CorruptModelError(f"{name}: not a .tflite model (identifier {data[4:8]!r}, expected {FILE_IDENTIFIER!r})")
    return data


def load_model(model: bytes | bytearray | memoryview | str | os.PathLike, name: str | None = None) -> schema.ModelT:
    """Parse a .tflite (bytes or a path) into a mutable ``ModelT``. ``name`` is what error
    messages call the input (default: the path, or "<bytes>")."""
    data = read_model_bytes(model, name)
    name = name or ("<bytes>" if isinstance(model, (bytes, bytearray, memoryview)) else str(model))
    try:
        root = struct.unpack_from("<I", data, 0)[0]
        if root + 4 > len(data):
            raise CorruptModelError(f"{name}: root table offset {root} is past the end of the file ({len(data)} bytes)")
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        _load_external_buffers(model, data, name)
        _check_indices(model, name)
    except CorruptModelError:
        raise
    except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - any reader failure means corrupt
        raise CorruptModelError(f"{name}: corrupt .tflite file ({type(exc).__name__}: {exc})"[:300]) from None
    return model


# The names of release 0.1, kept for one release: both are ``load_model`` (a ModelT).
read_model = load_model
load_model_bytes = load_model


def _load_external_buffers(model: schema.ModelT, data: bytes, name: str) -> None:
    # Files larger than 2 GB keep buffer bytes after the flatbuffer; offset 1 is a placeholder.
    for index, buffer in enumerate(model.buffers or []):
        if buffer.offset and buffer.offset > 1:
            end = buffer.offset + buffer.size
            if end > len(data):
                raise CorruptModelError(f"{name}: buffer {index} points past the end of the file")
            buffer.data = np.frombuffer(data, dtype=np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = 0
            buffer.size = 0


def _check_indices(model: schema.ModelT, name: str) -> None:
    """Every index a pass follows must land inside its table, or the file is corrupt."""
    n_codes = len(model.operatorCodes or [])
    n_buffers = len(model.buffers or [])
    if not model.subgraphs:
        raise CorruptModelError(f"{name}: the model has no subgraph")
    for g, graph in enumerate(model.subgraphs):
        n_tensors = len(graph.tensors or [])
        for t, tensor in enumerate(graph.tensors or []):
            if not 0 <= tensor.buffer < max(n_buffers, 1):
                raise CorruptModelError(f"{name}: subgraph {g} tensor {t} uses buffer {tensor.buffer} of {n_buffers}")
        for label, indices in (("input", graph.inputs), ("output", graph.outputs)):
            for i in _as_list(indices):
                if not 0 <= i < n_tensors:
                    raise CorruptModelError(f"{name}: subgraph {g} {label} tensor {i} of {n_tensors}")
        for o, op in enumerate(graph.operators or []):
            if not 0 <= op.opcodeIndex < n_codes:
                raise CorruptModelError(f"{name}: subgraph {g} op {o} has opcode {op.opcodeIndex} of {n_codes}")
            for i in _as_list(op.inputs) + _as_list(op.outputs):
                if not -1 <= i < n_tensors:
                    raise CorruptModelError(f"{name}: subgraph {g} op {o} refers to tensor {i} of {n_tensors}")


def _as_list(values) -> list[int]:
    return [] if values is None else [int(v) for v in values]


# ---------------------------------------------------------------------------- writing

class _AlignedBufferT(schema.BufferT):
    """A BufferT that packs its bytes on a 16-byte boundary (see _BUFFER_ALIGNMENT)."""

    def Pack(self, builder):  # noqa: N802 - the generated API's name
        data = None
        if self.data is not None and len(self.data):
            raw = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def model_to_bytes(model: schema.ModelT) -> bytes:
    """Serialise a ``ModelT`` (buffers aligned to 16 bytes) with the TFL3 identifier."""
    total = sum(len(b.data) for b in model.buffers or [] if b.data is not None)
    if total > _MAX_FLATBUFFER_BYTES:
        raise UnsupportedModelError(
            f"the model holds {total / 2**30:.1f} GiB of weights; writing .tflite files past 2 GB is not supported")
    originals = list(model.buffers or [])
    aligned = []
    for buffer in originals:
        copy = _AlignedBufferT()
        copy.data, copy.offset, copy.size = buffer.data, buffer.offset, buffer.size
        aligned.append(copy)
    model.buffers = aligned
    try:
        builder = flatbuffers.Builder(max(1024, total + 1024 * 1024))
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())
    finally:
        model.buffers = originals


def write_model(model: schema.ModelT, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (a partial file never replaces a good one)."""
    path = Path(path)
    data = model_to_bytes(model)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- small queries

def builtin_name(code: int) -> str:
    return _BUILTIN_NAMES.get(int(code), f"BUILTIN_{code}")


def tensor_type_name(code: int) -> str:
    return _TENSOR_TYPE_NAMES.get(int(code), f"TYPE_{code}")


def opcode_name(model: schema.ModelT, opcode_index: int) -> str:
    """The op's builtin name (e.g. ``DEPTHWISE_CONV_2D``), or its custom code for custom ops."""
    code = model.operatorCodes[opcode_index]
    # Codes above 127 live only in builtinCode; older files only set deprecatedBuiltinCode.
    value = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    if value == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return builtin_name(value)


def op_names(model: schema.ModelT, subgraph: int = 0) -> list[str]:
    """Op names of one subgraph in execution order."""
    return [opcode_name(model, op.opcodeIndex) for op in model.subgraphs[subgraph].operators or []]


_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32, schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT64: np.int64, schema.TensorType.INT16: np.int16, schema.TensorType.BOOL: np.bool_,
    schema.TensorType.FLOAT64: np.float64,
}


def numpy_dtype(tensor_type: int):
    if tensor_type not in _NUMPY_TYPES:
        raise UnsupportedModelError(f"tensor type {tensor_type_name(tensor_type)} has no numpy equivalent here")
    return _NUMPY_TYPES[tensor_type]


def tensor_name(tensor: schema.TensorT) -> str:
    """A tensor's name as text (the object API gives bytes)."""
    return tensor.name.decode(errors="replace") if isinstance(tensor.name, bytes) else str(tensor.name)


def constant_value(model: schema.ModelT, subgraph: int, tensor_index: int) -> np.ndarray | None:
    """The constant data of a tensor as a shaped numpy array, or None if it has no data."""
    tensor = model.subgraphs[subgraph].tensors[tensor_index]
    buffer = model.buffers[tensor.buffer]
    if buffer.data is None or len(buffer.data) == 0:
        return None
    dtype = numpy_dtype(tensor.type)
    raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
    shape = [int(s) for s in (tensor.shape if tensor.shape is not None else [])]
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if any(s < 0 for s in shape) or len(raw) != expected:
        raise CorruptModelError(f"constant tensor {tensor_name(tensor)!r} of shape {shape} holds {len(raw)} bytes, "
                                f"expected {expected}")
    values = np.frombuffer(raw, dtype=dtype)
    return values.reshape(shape) if shape else values.reshape(())
