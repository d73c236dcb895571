"""What every WBMM lowering shares: the deploy-time parameters of one layer, the lowering
interface, the deploy-time Keras layers the converter traces, and small helpers to find a
lowered layer's ops again in the converted flatbuffer.

A lowering is match -> check -> rewrite: ``check`` returns a reason when it refuses a
layer; ``emit`` builds the ops traced in the WBMM layer's place (``deploy_layer``) before the
TFLite converter runs; ``finalize`` edits the converted ``ModelT`` in place where the
converter alone cannot produce the wanted ops (``gather``: it would constant-fold the
gather; ``custom``: it knows no WBMM op). Not for choosing a lowering (the user does,
per model) nor for running models (``converters.verify``).

Deploy-time tables carry the identity shortcut in their centre entry (except at int8, see
``WbmmParams.shortcut_scale``): ``I[i, j]``
equals the centre offset exactly when ``i == j``, so ``X @ (R[I] + 1) == X @ (R + e_center)[I]``
(docs/WBMM.md's reparameterisation without BN), exact also with bottom/right padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wbmm_mobile import core

# Every op a lowering emits runs inside this name scope, so its tensors are named
# ".../<MARKER_PREFIX><index>/..." in the .tflite and finalize() can find them again.
MARKER_PREFIX = "wbmm_lowered_"


@dataclass
class WbmmParams:
    """One WBMM layer as it will be deployed (BatchNorm and shortcut already folded)."""
    index: int                       # position among the model's WBMM layers (marker suffix)
    name: str                        # Keras layer name
    window: tuple[int, int]
    table: np.ndarray                # (C, (2wh-1)*(2ww-1)) float32, shortcut folded in
    bias: np.ndarray | None          # (C,) float32 or None
    input_shape: tuple               # (B or None, H, W, C)
    folded: list[str] = field(default_factory=list)   # e.g. ["shortcut", "batchnorm 'bn_3'"]
    # int8 keeps the identity out of M: folded, the diagonal's 1 sets M's single per-tensor
    # scale and costs the small off-diagonal weights most of their 8 bits. Then the lowering
    # adds ``x * shortcut_scale`` (the BN scale s, or ones) after the matmul instead.
    shortcut_scale: np.ndarray | None = None
    end_layer: str | None = None      # the Keras layer whose output the deployed op produces

    @property
    def marker(self) -> str:
        return f"{MARKER_PREFIX}{self.index}"

    @property
    def channels(self) -> int:
        return int(self.table.shape[0])

    @property
    def d(self) -> int:
        return self.window[0] * self.window[1]

    @property
    def table_bytes(self) -> int:
        """float32 bytes of the compact table (+ bias): what a fused kernel needs."""
        return 4 * (self.table.size + (0 if self.bias is None else self.bias.size))

    @property
    def dense_bytes(self) -> int:
        """float32 bytes of the dense M (C, d, d) (+ bias): what the bmm lowering stores."""
        return 4 * (self.channels * self.d * self.d + (0 if self.bias is None else self.bias.size))

    def dense_matrices(self) -> np.ndarray:
        return core.dense_matrices(self.table, self.window, shortcut=False).astype(np.float32)

    def kernel(self) -> np.ndarray:
        """The table in depthwise-kernel layout (2wh-1, 2ww-1, C)."""
        return core.table_to_kernel(self.table, self.window).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """numpy reference of the deployed layer."""
        y = core.wbmm_forward(x, self.table, self.window, shortcut=False, bias=self.bias)
        return y if self.shortcut_scale is None else y + x * self.shortcut_scale


class Lowering:
    """Base class; subclasses set ``name``/``summary`` and override what they need."""
    name = ""
    summary = ""
    needs_delegate = False
    edits_flatbuffer = False          # True when finalize() must run on the converted file
    # int8 keeps the identity shortcut out of the table (``WbmmParams.shortcut_scale``) unless
    # a lowering sets this (none does: folded, the identity sets the table's int8 scales;
    # benchmarks/int8_custom_shortcut.py sets it to measure that older custom form).
    folds_shortcut_at_int8 = False

    def check(self, params: WbmmParams, precision: str) -> str | None:
        """``None`` when this lowering can deploy ``params`` at ``precision``, else the reason."""
        height, width = params.input_shape[1], params.input_shape[2]
        if height is None or width is None:
            return "spatial size unknown at conversion time (the lowering needs static H and W)"
        return None

    def deploy_layer(self, params: WbmmParams, precision: str = "float32"):
        """The Keras layer traced in the WBMM layer's place: ``emit`` under the layer's marker
        (``precision`` is the conversion's, for lowerings whose traced ops depend on it)."""
        return deployed_layer(params, self.emit)

    def emit(self, x, params: WbmmParams):
        """The TensorFlow ops computing the deployed layer on ``x`` (traced at conversion only)."""
        raise NotImplementedError

    def finalize(self, model, layers: list[WbmmParams]) -> list[str]:
        """Edit the converted ``ModelT`` in place; return notes for the report."""
        return []


def deployed_layer(params: WbmmParams, emit):
    """A Keras layer named like the WBMM layer it replaces, running ``emit(x, params)`` inside the
    marker name scope, so that finalize() can find its ops again in the converted file."""
    import keras
    import tensorflow as tf

    class DeployedWbmm(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(name=params.name, **kwargs)
            self.params = params

        def call(self, x):
            with tf.name_scope(params.marker):
                return emit(x, params)

        def compute_output_shape(self, input_shape):
            return tuple(input_shape)

    return DeployedWbmm()


# ----------------------------------------------------------------------------- flatbuffer helpers

def tensor_name(tensor) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else (name or "")


def has_marker(tensor, marker: str) -> bool:
    """True when a tensor's (possibly ';'-joined, fused) name contains the layer's scope."""
    return any(f"{marker}/" in part or part.endswith(marker) for part in tensor_name(tensor).split(";"))


def opcode_index(model, builtin_code: int, custom_code: str | None = None, version: int = 1) -> int:
    """Index of an operator code in ``model.operatorCodes``, added if missing."""
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        value = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
        if value != builtin_code:
            continue
        if custom_code is None:
            return i
        current = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        if current == custom_code:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin_code
    code.deprecatedBuiltinCode = min(builtin_code, 127)
    code.version = version
    if custom_code is not None:
        code.customCode = custom_code
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def add_constant(model, subgraph, array: np.ndarray, name: str, tensor_type: int, quantization=None) -> int:
    """Append a constant tensor (new buffer) to ``subgraph``; returns its index."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape = [int(s) for s in array.shape]
    tensor.type = tensor_type
    tensor.buffer = len(model.buffers) - 1
    tensor.name = name
    tensor.quantization = quantization
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def add_tensor_like(subgraph, template, shape, name: str) -> int:
    """Append an activation tensor with ``template``'s type and quantisation and a new shape."""
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.shape = [int(s) for s in shape]
    tensor.type = template.type
    tensor.buffer = 0
    tensor.name = name
    tensor.quantization = template.quantization
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def producers(subgraph) -> dict[int, int]:
    """tensor index -> index of the op writing it."""
    return {t: i for i, op in enumerate(subgraph.operators) for t in (op.outputs if op.outputs is not None else [])}


def consumers(subgraph) -> dict[int, list[int]]:
    """tensor index -> indices of the ops reading it."""
    users: dict[int, list[int]] = {}
    for i, op in enumerate(subgraph.operators):
        for t in op.inputs if op.inputs is not None else []:
            if t >= 0:
                users.setdefault(int(t), []).append(i)
    return users


def compact(model) -> None:
    """Drop tensors no op, subgraph or signature uses, and buffers no tensor or metadata uses.

    The lowerings replace constants (M by a table, a DEQUANTIZE'd filter by its source); without
    this the stale data would stay in the file and the size the report gives would be wrong.
    """
    used_buffers = {0}
    for sg_index, subgraph in enumerate(model.subgraphs):
        used = set(int(t) for t in (subgraph.inputs if subgraph.inputs is not None else []))
        used |= set(int(t) for t in (subgraph.outputs if subgraph.outputs is not None else []))
        for op in subgraph.operators or []:
            for field_name in ("inputs", "outputs", "intermediates"):
                values = getattr(op, field_name)
                used |= {int(t) for t in (values if values is not None else []) if t >= 0}
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == sg_index:
                for tensor_map in (signature.inputs or []) + (signature.outputs or []):
                    used.add(int(tensor_map.tensorIndex))
        remap = {old: new for new, old in enumerate(sorted(used))}
        subgraph.tensors = [subgraph.tensors[old] for old in sorted(used)]
        subgraph.inputs = [remap[int(t)] for t in subgraph.inputs]
        subgraph.outputs = [remap[int(t)] for t in subgraph.outputs]
        for op in subgraph.operators or []:
            for field_name in ("inputs", "outputs", "intermediates"):
                values = getattr(op, field_name)
                if values is not None:
                    setattr(op, field_name, [remap[int(t)] if t >= 0 else int(t) for t in values])
        for signature in model.signatureDefs or []:
            if signature.subgraphIndex == sg_index:
                for tensor_map in (signature.inputs or []) + (signature.outputs or []):
                    tensor_map.tensorIndex = remap[int(tensor_map.tensorIndex)]
        used_buffers |= {int(t.buffer) for t in subgraph.tensors}
    used_buffers |= {int(m.buffer) for m in model.metadata or []}
    used_buffers |= {int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else [])}
    buffer_remap = {old: new for new, old in enumerate(sorted(used_buffers))}
    model.buffers = [model.buffers[old] for old in sorted(used_buffers)]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = buffer_remap[int(tensor.buffer)]
    for metadata in model.metadata or []:
        metadata.buffer = buffer_remap[int(metadata.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [buffer_remap[int(b)] for b in model.metadataBuffer]
