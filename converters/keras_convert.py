"""Keras model with WBMM layers -> verified .tflite bytes and a conversion report.

Steps: find the WBMM layers and what can be folded into each (docs/WBMM.md's reparameterisation:
the identity shortcut, parallel depthwise branches with their BNs when the map is one window,
an eval-mode BatchNormalization after it); ask the chosen lowering (``converters.lowerings``)
whether it can deploy each one (a refusal names the layer and the reason); clone the model
with each WBMM layer replaced by the lowering's deploy-time layer (``keras.models.clone_model``;
WBMM layers inside custom block layers get their ``call`` swapped for the conversion instead,
since clone_model cannot reach into them); convert with
``tf.lite.TFLiteConverter.from_keras_model`` (never ``from_concrete_functions``: it loses Keras 3
weights) at float32, float16 (weights) or int8 (full integer, int8 input/output); let the
lowering edit the flatbuffer; refuse any tensor of rank > 4; then run the file with ai-edge-litert
against the original Keras model and fail past the tolerance (``converters.verify``).

``convert_file`` is the file-level entry point (what the CLI calls): it also routes ``.tflite``
inputs and Keras models without WBMM layers through the exact rewriter of large depthwise convs
(``converters.rewrite``), and writes the outputs only after verification passed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from converters.lowerings import DEFAULT_LOWERING, LOWERING_NAMES, get_lowering
from converters.lowerings.base import WbmmParams, compact
from converters.reports import LayerReport
from converters.verify import VerificationResult, compare, dequantize, input_specs, random_inputs, run_tflite, \
    tolerance_for, tolerances_for_model, wbmm_delegate_factory
from wbmm_mobile import core
from wbmm_mobile.errors import ConversionError, CorruptModelError, ModelNotFoundError, UnsupportedLayerError, \
    UnsupportedModelError, VerificationError

PRECISIONS = ("float32", "float16", "int8")
REPRESENTATIVE_SAMPLES = 32


# ----------------------------------------------------------------------------- report

@dataclass
class ConversionReport:
    model_name: str
    precision: str
    lowering: str
    layers: list[LayerReport]
    tflite_bytes: int
    compact_table_bytes: int
    op_counts: dict[str, int]
    max_tensor_rank: int
    needs_delegate: bool
    verification: VerificationResult | None
    verification_note: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    output_path: str | None = None
    rewrite: dict | None = None          # the rewriter's report when large depthwise convs went through it
    rewrite_notes: list[str] = field(default_factory=list)
    npu_placement: dict | None = None    # --target qualcomm-htp / ethos-u: where the compilers put the ops

    def to_dict(self) -> dict:
        data = asdict(self)
        data["verification"] = None if self.verification is None else self.verification.to_dict()
        return data


@dataclass
class ConversionResult:
    tflite: bytes
    report: ConversionReport


# ----------------------------------------------------------------------------- loading

def load_keras_model(path: str | os.PathLike):
    """``keras.models.load_model`` with the project's layers registered and one-line errors."""
    import keras

    import wbmm_mobile.layers  # noqa: F401 - registers WBMM, GRN, SqueezeExcite, LayerScale

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such model file")
    try:
        return keras.models.load_model(path, compile=False)
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
        if missing:
            registered = re.search(r"'registered_name': '([^']+)'", text[missing.end():])
            what = registered.group(1) if registered else missing.group(1)
            raise UnsupportedLayerError(f"{path}: layer class {missing.group(1)!r} ({what}) is not known to "
                                        "wbmm-mobile: import the code that defines it, or replace the layer") from exc
        if "Unknown layer" in text or "could not be deserialized" in text:
            raise UnsupportedLayerError(f"{path}: a layer of this model is not known to wbmm-mobile ({text[:200]})") \
                from exc
        raise CorruptModelError(f"{path}: not a loadable Keras model ({text[:200]})") from exc
    except (OSError, KeyError) as exc:
        raise CorruptModelError(f"{path}: not a Keras model file ({' '.join(str(exc).split())[:200]})") from exc


# ----------------------------------------------------------------------------- finding and folding WBMM layers

def _is_wbmm(layer) -> bool:
    from wbmm_mobile.layers import WBMM

    return isinstance(layer, WBMM)


def _all_layers(model) -> list:
    return list(model._flatten_layers(include_self=False, recursive=True))


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _readers(model) -> dict[int, list]:
    """id(layer) -> the top-level layers reading its output."""
    readers: dict[int, list] = {}
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                producer = _producer(tensor)
                if producer is not None:
                    readers.setdefault(id(producer), []).append(layer)
    return readers


@dataclass
class _FoldPlan:
    """What is folded into one WBMM layer: parallel depthwise branches (each with an optional BN)
    merged by an Add, then a BatchNormalization; ``end`` is the layer whose output the deployed
    op produces."""
    branches: list = field(default_factory=list)      # [(DepthwiseConv2D, BatchNormalization | None)]
    branch_add: Any = None
    wbmm_position: int = 0
    batchnorm: Any = None
    end: Any = None


def _single_input(layer):
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]


def _is_channel_batchnorm(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization) and len(layer._inbound_nodes) == 1 \
        and layer.axis in (-1, [-1], 3, [3])


def _branch(tensor, source, wbmm, readers) -> tuple | None:
    """(DepthwiseConv2D, BN or None) when ``tensor`` is [BN](DW(source)), foldable into ``wbmm``'s
    table: stride 1, no dilation, 'same', depth multiplier 1, linear, odd kernel that fits."""
    import keras

    layer = _producer(tensor)
    bn = None
    if layer is not None and _is_channel_batchnorm(layer) and len(readers.get(id(layer), [])) == 1:
        bn, layer = layer, _producer(_single_input(layer))
    if not isinstance(layer, keras.layers.DepthwiseConv2D) or len(readers.get(id(layer), [])) != 1:
        return None
    kh, kw = layer.kernel_size
    fits = kh % 2 == 1 and kw % 2 == 1 and kh <= 2 * wbmm.window[0] - 1 and kw <= 2 * wbmm.window[1] - 1
    if not fits or tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1) \
            or layer.padding != "same" or layer.depth_multiplier != 1 \
            or getattr(layer.activation, "__name__", "") != "linear" \
            or _single_input(layer) is not source:
        return None
    return layer, bn


def _fold_plans(model, fold_batchnorm: bool) -> dict[int, _FoldPlan]:
    """id(WBMM) -> what can be folded into it (top-level layers of a functional model only).

    Branches: an Add of WBMM(x) and [BN](DW_k(x)) terms folds exactly when the map is one window
    (H <= wh, W <= ww): each branch then sees zero padding exactly where WBMM's window does
    (``core.fold_branch``), as in WBMM-P's stage 4 at 224x224. BatchNorm: a BN reading only the
    WBMM (or that Add) output folds always (docs/WBMM.md's reparameterisation).
    """
    import keras

    if not fold_batchnorm:
        return {}
    readers = _readers(model)
    outputs = {id(_producer(o)) for o in model.outputs}
    plans = {}
    for layer in model.layers:
        source = _single_input(layer) if _is_wbmm(layer) else None
        if source is None or id(layer) in outputs:
            continue
        plan = _FoldPlan(end=layer)
        users = readers.get(id(layer), [])
        height, width = source.shape[1], source.shape[2]
        single_window = height is not None and width is not None \
            and height <= layer.window[0] and width <= layer.window[1]
        if single_window and len(users) == 1 and isinstance(users[0], keras.layers.Add) \
                and len(users[0]._inbound_nodes) == 1:
            add = users[0]
            terms = add._inbound_nodes[0].input_tensors
            position = [i for i, t in enumerate(terms) if _producer(t) is layer]
            branches = [_branch(t, source, layer, readers) for i, t in enumerate(terms) if i not in position]
            if len(position) == 1 and branches and all(b is not None for b in branches):
                plan.branches, plan.branch_add, plan.wbmm_position, plan.end = branches, add, position[0], add
                users = readers.get(id(add), [])
        # A BN may be the model's output; what it reads (now folded away) may not.
        if len(users) == 1 and _is_channel_batchnorm(users[0]) and id(plan.end) not in outputs:
            plan.batchnorm, plan.end = users[0], users[0]
        if plan.end is not layer:
            plans[id(layer)] = plan
    return plans


def _bn_params(bn, channels: int) -> core.BatchNormParams:
    gamma = bn.gamma.numpy() if bn.scale else np.ones(channels)
    beta = bn.beta.numpy() if bn.center else np.zeros(channels)
    return core.BatchNormParams(gamma, beta, bn.moving_mean.numpy(), bn.moving_variance.numpy(), float(bn.epsilon))


def _input_shape(layer) -> tuple:
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError):
        shapes = getattr(layer, "_build_shapes_dict", None) or {}
        if shapes:
            return tuple(next(iter(shapes.values())))
        raise UnsupportedLayerError(f"layer {layer.name!r}: its input shape is unknown (build the model first)")


def wbmm_params(model, fold_batchnorm: bool = True, fold_shortcut: bool = True
                ) -> tuple[list[WbmmParams], dict[int, Any], dict[int, Any]]:
    """Deploy parameters of every WBMM layer, with the shortcut and (``fold_batchnorm``) parallel
    depthwise branches and a following BatchNorm folded in where ``_fold_plans`` allows.

    ``fold_shortcut=False`` (int8) keeps the identity out of the table: ``shortcut_scale``
    then carries it (ones, or the folded BatchNorm's per-channel scale).

    Returns (params in model order, id(WBMM) -> params, id(replaced layer) -> its stand-in kind:
    "pass" for a folded BN, ("take", i) for a branch Add that now only forwards input i).
    """
    plans = _fold_plans(model, fold_batchnorm)
    params, by_layer, replaced = [], {}, {}
    for layer in _all_layers(model):
        if not _is_wbmm(layer):
            continue
        table = np.asarray(layer.table.numpy(), np.float64).copy()
        channels = table.shape[0]
        bias = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else np.zeros(channels)
        has_bias = bool(layer.use_bias)
        folded, shortcut_scale = [], None
        if layer.use_shortcut and fold_shortcut:
            table[:, core.center_offset(layer.window)] += 1.0
            folded.append("shortcut")
        elif layer.use_shortcut:
            shortcut_scale = np.ones(channels)
        plan = plans.get(id(layer), _FoldPlan(end=layer))
        for dw, bn in plan.branches:
            kernel = np.asarray(dw.kernel.numpy(), np.float64)[..., 0]          # (kh, kw, C)
            shift = np.asarray(dw.bias.numpy(), np.float64) if dw.use_bias else np.zeros(channels)
            if bn is not None:
                scale, bn_shift = _bn_params(bn, channels).scale_shift()
                kernel, shift = kernel * scale, shift * scale + bn_shift
                replaced[id(bn)] = "pass"
            table = core.fold_branch(table, layer.window, kernel)
            bias, has_bias = bias + shift, True
            folded.append(f"branch {dw.name!r}" + (f" + {bn.name!r}" if bn is not None else ""))
        if plan.branch_add is not None:
            replaced[id(plan.branch_add)] = ("take", plan.wbmm_position)
        if plan.batchnorm is not None:
            bn_params = _bn_params(plan.batchnorm, channels)
            table, bias = core.fold_batchnorm(table, layer.window, bn_params, shortcut=False, bias=bias)
            scale = bn_params.scale_shift()[0]
            shortcut_scale = None if shortcut_scale is None else shortcut_scale * scale
            has_bias = True
            folded.append(f"batchnorm {plan.batchnorm.name!r}")
            replaced[id(plan.batchnorm)] = "pass"
        p = WbmmParams(index=len(params), name=layer.name, window=tuple(layer.window),
                       table=table.astype(np.float32), bias=bias.astype(np.float32) if has_bias else None,
                       input_shape=_input_shape(layer), folded=folded,
                       shortcut_scale=None if shortcut_scale is None else np.asarray(shortcut_scale, np.float32),
                       end_layer=plan.end.name)
        params.append(p)
        by_layer[id(layer)] = p
    return params, by_layer, replaced


# ----------------------------------------------------------------------------- deploy model

def _pass_through(name: str):
    """Stands where a folded BatchNormalization was; takes (and ignores) its call arguments."""
    import keras

    class FoldedAway(keras.layers.Layer):
        def call(self, x, *args, **kwargs):
            return x

        def compute_output_shape(self, input_shape):
            return input_shape

    return FoldedAway(name=name)


def _take_input(name: str, position: int):
    """Stands where a branch Add was: the branches are in the WBMM table now, so it forwards the
    WBMM term (the branch convs are left without readers and the converter drops them)."""
    import keras

    class BranchesFoldedAway(keras.layers.Layer):
        def call(self, inputs, *args, **kwargs):
            return inputs[position]

        def compute_output_shape(self, input_shape):
            return input_shape[position]

    return BranchesFoldedAway(name=name)


@contextlib.contextmanager
def _deploy_model(model, lowering, by_layer: dict[int, WbmmParams], replaced: dict[int, Any], precision: str):
    """The model to hand to the TFLite converter, with WBMM layers lowered."""
    import keras

    top_level = {id(layer) for layer in model.layers}
    nested = [p for key, p in by_layer.items() if key not in top_level]
    if not nested:
        copies = []

        def clone(layer):
            if id(layer) in by_layer:
                return lowering.deploy_layer(by_layer[id(layer)], precision)
            if id(layer) in replaced:
                kind = replaced[id(layer)]
                return _pass_through(layer.name) if kind == "pass" else _take_input(layer.name, kind[1])
            # A copy, not the layer itself: calling the original on the clone's tensors would add
            # nodes to the user's model (and a second conversion would see different graphs).
            try:
                copy = layer.__class__.from_config(layer.get_config())
            except (TypeError, ValueError, NotImplementedError):
                return layer                 # not re-creatable from its config: shared instead
            copies.append((copy, layer))
            return copy
        try:
            cloned = keras.models.clone_model(model, clone_function=clone)
        except ValueError:
            cloned = None                    # a subclassed model: patch below
        if cloned is not None:
            for copy, original in copies:
                copy.set_weights(original.get_weights())
            yield cloned
            return
    # WBMM layers inside custom block layers: swap their call for the conversion only.
    patched = []
    try:
        for layer in _all_layers(model):
            if id(layer) in by_layer:
                deploy = lowering.deploy_layer(by_layer[id(layer)], precision)
                object.__setattr__(layer, "call", deploy.call)
                patched.append(layer)
            elif replaced.get(id(layer)) == "pass":
                object.__setattr__(layer, "call", lambda x, *args, **kwargs: x)
                patched.append(layer)
        yield model
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


@contextlib.contextmanager
def _quiet_native_output():
    """Silence what TensorFlow's converter prints on fds 1 and 2; keep it for error messages."""
    captured = tempfile.TemporaryFile(mode="w+b")
    saved = [os.dup(1), os.dup(2)]
    try:
        for fd in (1, 2):
            os.dup2(captured.fileno(), fd)
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            yield captured
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _captured_text(captured) -> str:
    captured.seek(0)
    lines = [line for line in captured.read().decode(errors="replace").splitlines() if "error" in line.lower()]
    return " ".join(lines[-3:])


def _representative(model, data: np.ndarray | Sequence | None, seed: int, notes: list[str]):
    specs = random_inputs(model, seed)
    if data is None:
        message = (f"int8: no representative data given; calibrating on {REPRESENTATIVE_SAMPLES} seeded uniform "
                   "[-1, 1) samples, which may not match real inputs (pass --representative-data)")
        warnings.warn(message, stacklevel=3)
        notes.append(message)
        samples = [random_inputs(model, seed + 1 + i) for i in range(REPRESENTATIVE_SAMPLES)]
    else:
        array = np.asarray(data, np.float32)
        expected = specs[0].shape[1:]
        if len(specs) != 1 or tuple(array.shape[1:]) != tuple(expected):
            raise UnsupportedModelError(f"representative data of shape {array.shape} does not fit the model input "
                                        f"(N, {', '.join(map(str, expected))})")
        samples = [[array[i:i + 1]] for i in range(array.shape[0])]

    def generator():
        for sample in samples:
            yield [np.asarray(s, np.float32) for s in sample]
    return generator, samples[0]


def to_tflite(model, precision: str = "float32", representative: Callable[[], Iterable] | None = None) -> bytes:
    """The TFLite converter on a Keras model as it is (no WBMM rewrite), without its console output.

    ``precision``: float32, float16 (float16 weights) or int8 (int8 inputs, outputs and ops,
    calibrated on ``representative``, a generator function yielding input lists). Raises
    ConversionError with the converter's reason when it fails.
    """
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and representative is None:
        raise ValueError("int8 conversion needs representative data")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with _quiet_native_output() as captured, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return converter.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types; all mean "could not convert"
            detail = " ".join(str(exc).split())[:300] or _captured_text(captured)
            raise ConversionError(f"the TFLite converter failed at {precision}: {detail}") from exc


# ----------------------------------------------------------------------------- analysis and verification

def model_facts(data: bytes) -> tuple[Counter, int, list[str]]:
    """(op type counts over all subgraphs, max tensor rank, names of tensors of rank > 4)."""
    from converters import tflite_io

    tree = tflite_io.load_model(data)
    counts: Counter = Counter()
    max_rank, high = 0, []
    for index, subgraph in enumerate(tree.subgraphs):
        counts.update(tflite_io.op_names(tree, index))
        for tensor in subgraph.tensors:
            rank = 0 if tensor.shape is None else len(tensor.shape)
            max_rank = max(max_rank, rank)
            if rank > 4:
                high.append(tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name))
    return counts, max_rank, high


def _wbmm_ops(tree, params: list[WbmmParams]) -> list:
    """The file's WBMM custom ops, in the order of ``params`` (the order the lowering wrote them)."""
    from converters import tflite_io
    from converters.custom_ops import WBMM_OP

    ops = [op for op in tree.subgraphs[0].operators if tflite_io.opcode_name(tree, op.opcodeIndex) == WBMM_OP]
    if len(ops) != len(params):
        raise VerificationError(f"the file has {len(ops)} {WBMM_OP} ops for {len(params)} WBMM layers")
    return ops


def _custom_ops_numpy_check(data: bytes, params: list[WbmmParams], keras_layers: dict[str, Any],
                            seed: int, precision: str) -> list[dict]:
    """Check each stored WBMM custom op (table, bias, options) in numpy against its Keras layer.

    An int8 op is read back to real numbers (filter scale per channel, bias at input scale x
    filter scale), fed inputs drawn inside the central half of its input's int8 range, and its
    output quantised with the op's output parameters; the Keras layer's output is clipped to
    that output's range (saturation is the quantised model's, not an error) and the two must
    agree within the int8 policy: two output steps (``verify.tolerance_for``). At int8 the op
    carries no identity (a builtin ADD follows it), so the Keras side is the layer's output less
    ``x * shortcut_scale``.
    """
    from converters import tflite_io
    from converters.custom_ops import WBMM_OP, unpack_options
    from converters.verify import TensorSpec, quantize

    tree = tflite_io.load_model(data)
    subgraph = tree.subgraphs[0]
    ops = _wbmm_ops(tree, params)
    results = []
    rng = np.random.default_rng(seed)
    for op, p in zip(ops, params):
        options = unpack_options(WBMM_OP, bytes(bytearray(op.customOptions)))
        kernel = tflite_io.constant_value(tree, 0, int(op.inputs[1])).astype(np.float64)[0]
        bias = None if int(op.inputs[2]) < 0 else tflite_io.constant_value(tree, 0, int(op.inputs[2]))
        shape = tuple(1 if v is None else int(v) for v in p.input_shape)
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        x_t, out_t = subgraph.tensors[int(op.inputs[0])], subgraph.tensors[int(op.outputs[0])]
        integer = precision == "int8" and x_t.quantization is not None and x_t.quantization.scale is not None
        if integer:
            w_scale = np.asarray(subgraph.tensors[int(op.inputs[1])].quantization.scale, np.float64)
            x_spec = TensorSpec("x", shape, np.dtype(np.int8), float(x_t.quantization.scale[0]),
                                int(x_t.quantization.zeroPoint[0]))
            out_spec = TensorSpec("y", shape, np.dtype(np.int8), float(out_t.quantization.scale[0]),
                                  int(out_t.quantization.zeroPoint[0]))
            low, high = ((np.array([-128, 127]) - x_spec.zero_point) * x_spec.scale) / 2
            x = dequantize(quantize(rng.uniform(low, high, shape), x_spec), x_spec)
            kernel = kernel * w_scale
            bias = None if bias is None else bias * x_spec.scale * w_scale
        table, window = core.kernel_to_table(kernel)
        stored = core.wbmm_forward(x.astype(np.float64), table, (options.window_h, options.window_w),
                                   shortcut=options.shortcut, bias=bias)
        layer = keras_layers[p.name]
        if p.end_layer in (None, p.name):
            reference = np.asarray(layer(x), np.float64)
        else:                       # what the op replaces: the WBMM through its folded branches and BN
            import keras

            span = keras.Model(layer.input, keras_layers[p.end_layer].output)
            reference = np.asarray(span(x, training=False), np.float64)
        tolerance = tolerance_for(precision, out_spec.scale) if integer else tolerance_for(precision)
        if p.shortcut_scale is not None and not options.shortcut:
            # int8: the identity is a builtin ADD after the op (x times a folded BN scale by a MUL)
            reference = reference - np.asarray(x, np.float64) * p.shortcut_scale
        if integer:
            stored = dequantize(quantize(stored, out_spec), out_spec)
            reference = np.clip(reference, *((np.array([-128, 127]) - out_spec.zero_point) * out_spec.scale))
        result = compare([reference], [stored], tolerance, what=f"custom op of layer {p.name!r}")
        results.append({"layer": p.name, "window": list(window), **result.to_dict()})
        if not result.passed:
            raise VerificationError(f"the {WBMM_OP} op stored for layer {p.name!r} disagrees with the Keras layer: "
                                    f"{result.summary()}")
    return results


def verify_against_keras(model, data: bytes, precision: str, seed: int = 0, delegate: Any = None,
                         kernels: str = "xnnpack", inputs: Sequence[np.ndarray] | None = None
                         ) -> VerificationResult:
    """Run ``data`` and the Keras model on the same inputs (seeded random unless given); raise past
    the tolerance. Float inputs for a quantised model are quantised first and Keras sees exactly
    the dequantised values the .tflite sees."""
    from converters.verify import load_interpreter, quantize

    interpreter = load_interpreter(data, kernels=kernels, delegate=delegate)
    specs = input_specs(interpreter)
    if inputs is None:
        inputs = random_inputs(interpreter, seed)
    inputs = [quantize(x, s) if s.quantized and np.issubdtype(np.asarray(x).dtype, np.floating) else x
              for x, s in zip(inputs, specs)]
    keras_inputs = [dequantize(x, s) if s.quantized else x for x, s in zip(inputs, specs)]
    reference = model(keras_inputs if len(keras_inputs) > 1 else keras_inputs[0], training=False)
    reference = [np.asarray(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
    candidate = run_tflite(interpreter, inputs, dequantize_outputs=True)
    tolerances = tolerances_for_model(precision, interpreter)
    return compare(reference, candidate, tolerances, enforce=True, what=f"the {precision} .tflite")


# ----------------------------------------------------------------------------- the entry points

def convert_keras(model, *, precision: str = "float32", lowering: str = DEFAULT_LOWERING,
                  representative_data: np.ndarray | None = None, seed: int = 0, verify: bool = True,
                  fold_batchnorm: bool = True, name: str | None = None, delegate: Any = None) -> ConversionResult:
    """Convert a Keras model (WBMM layers lowered with ``lowering``) to verified .tflite bytes."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    strategy = get_lowering(lowering)
    started = time.perf_counter()
    notes: list[str] = []
    warned: list[str] = []
    params, by_layer, replaced = wbmm_params(model, fold_batchnorm=fold_batchnorm,
                                             fold_shortcut=precision != "int8" or strategy.folds_shortcut_at_int8)
    for p in params:
        reason = strategy.check(p, precision)
        if reason:
            raise UnsupportedLayerError(f"layer {p.name!r} (WBMM {p.window[0]}x{p.window[1]}): "
                                        f"lowering {lowering!r} refused: {reason}")
    representative, int8_check_input = None, None
    if precision == "int8":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            representative, int8_check_input = _representative(model, representative_data, seed, notes)
        for w in caught:
            warned.append(str(w.message))
            warnings.warn(str(w.message), stacklevel=2)
        notes = [n for n in notes if n not in warned]

    with _deploy_model(model, strategy, by_layer, replaced, precision) as deploy:
        data = to_tflite(deploy, precision, representative)

    if params and strategy.edits_flatbuffer:
        from converters import tflite_io

        tree = tflite_io.load_model(data)
        notes += strategy.finalize(tree, params)
        compact(tree)
        data = tflite_io.model_to_bytes(tree)

    counts, max_rank, high_rank = model_facts(data)
    if high_rank:
        raise ConversionError(f"the converted model has tensors of rank > 4 ({', '.join(high_rank[:3])}); "
                              "NNAPI cannot run it")

    verification, note, layer_checks = None, "not verified (verify=False)", {}
    if verify:
        if strategy.needs_delegate and params:
            make_delegate, why = wbmm_delegate_factory(delegate)
            if make_delegate is not None and precision == "int8":
                from converters.quantized import delegate_runs_int8_custom_ops

                runs_int8, int8_why = delegate_runs_int8_custom_ops(make_delegate, op="WBMM")
                if not runs_int8:
                    make_delegate, why = None, int8_why
            if make_delegate is not None:
                # int8: on a calibration sample, as below (the policy measures the conversion, not
                # clipping of values the calibration never saw).
                verification = verify_against_keras(model, data, precision, seed, delegate=make_delegate(),
                                                    inputs=int8_check_input)
                note = "ai-edge-litert + wbmm delegate vs Keras on " + (
                    "the first representative sample" if precision == "int8" else "seeded random inputs")
            else:
                keras_layers = {layer.name: layer for layer in _all_layers(model)}
                for check in _custom_ops_numpy_check(data, params, keras_layers, seed, precision):
                    layer_checks[check["layer"]] = check
                note = (f"the model needs the wbmm delegate to run ({why}); each WBMM custom op was checked in "
                        "numpy against its Keras layer, the rest of the graph was not run")
        elif precision == "int8":
            # Verified on a calibration sample: the policy (two output steps) measures the
            # conversion, not clipping of values the calibration never saw.
            verification = verify_against_keras(model, data, precision, seed, inputs=int8_check_input)
            note = "ai-edge-litert (XNNPACK) vs Keras on the first representative sample (quantised input)"
        else:
            verification = verify_against_keras(model, data, precision, seed)
            note = "ai-edge-litert (XNNPACK) vs Keras on seeded random inputs"

    layers = [LayerReport(name=p.name, op="WBMM", kernel=f"{p.window[0]}x{p.window[1]}",
                          input_shape=[1 if v is None else int(v) for v in p.input_shape], precision=precision,
                          rewritten=True, strategy=lowering, reason=strategy.summary, window=p.window,
                          folded=p.folded, table_bytes=p.table_bytes, dense_bytes=p.dense_bytes,
                          numpy_check=layer_checks.get(p.name))
              for p in params]
    report = ConversionReport(
        model_name=name or getattr(model, "name", "model"), precision=precision, lowering=lowering, layers=layers,
        tflite_bytes=len(data), compact_table_bytes=sum(p.table_bytes for p in params), op_counts=dict(counts),
        max_tensor_rank=max_rank, needs_delegate=bool(strategy.needs_delegate and params),
        verification=verification, verification_note=note, warnings=warned, notes=notes,
        seconds=time.perf_counter() - started)
    return ConversionResult(data, report)


def _large_depthwise_count(data: bytes, min_kernel: int) -> int:
    """Depthwise convs (DEPTHWISE_CONV_2D, and CONV_2D with groups == C as Keras writes ConvNeXt's)
    with a kernel side >= ``min_kernel``, found by the rewriter's own matcher so both agree."""
    from converters import tflite_io
    from converters.rewrites import _depthwise

    tree = tflite_io.load_model(data)
    count = 0
    for g, subgraph in enumerate(tree.subgraphs):
        for op_index in range(len(subgraph.operators or [])):
            layer = _depthwise.match(tree, g, op_index)
            if layer is not None and max(layer.kernel_size) >= min_kernel:
                count += 1
    return count


def _rewrite(data: bytes, name: str, lowering: str, seed: int, min_kernel: int, target: str = "xnnpack"):
    """Exact rewrite of large depthwise convs through ``converters.rewrite`` (issue 3), if present."""
    try:
        from converters.rewrite import RewriteOptions, rewrite_model
    except ImportError as exc:                                    # the rewriter is another area's module
        raise UnsupportedModelError(f"{name}: large depthwise convs need converters.rewrite, "
                                    f"which is not installed ({exc})") from exc
    strategy = "custom" if lowering == "custom" else "auto"
    return rewrite_model(data, RewriteOptions(mode="exact", strategy=strategy, min_kernel=min_kernel, seed=seed,
                                              target=target), name=name)


def convert_file(model_path: str | os.PathLike, out_dir: str | os.PathLike, *, precision: str = "float32",
                 lowering: str = DEFAULT_LOWERING, representative_data: str | os.PathLike | None = None,
                 seed: int = 0, fold_batchnorm: bool = True, min_kernel: int = 7,
                 target: str = "xnnpack") -> ConversionReport:
    """Convert a model file; write ``OUT/<name>.tflite`` and ``OUT/report.json`` only once verified.

    ``target`` (a rewrite target of ``converters.strategy.TARGETS``) steers the rewriter; for the NPU
    targets (qualcomm-htp, ethos-u) the lowered WBMM layers must also compile wholly onto the NPU
    (``converters.npu_placement.check_converted``), else the conversion is refused with the reasons.

    ``.keras`` with WBMM layers: lowered with ``lowering``. ``.keras`` without WBMM layers but with
    depthwise convs of kernel >= ``min_kernel``, and ``.tflite`` files: those convs go through the
    exact rewriter (``converters.rewrite``; ``--lowering custom`` asks it for its custom op).
    """
    from wbmm_mobile.json_output import write_json

    model_path = Path(model_path)
    if not model_path.exists():
        raise ModelNotFoundError(f"{model_path}: no such model file")
    if model_path.is_dir():
        raise CorruptModelError(f"{model_path}: is a directory, not a model file")
    data_array = None
    if representative_data is not None:
        rep_path = Path(representative_data)
        if not rep_path.is_file():
            raise ModelNotFoundError(f"{rep_path}: no such representative data file")
        try:
            data_array = np.load(rep_path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CorruptModelError(f"{rep_path}: not a .npy array ({exc})") from exc

    if model_path.suffix == ".tflite":
        from converters.tflite_io import read_model_bytes

        original = read_model_bytes(model_path)
        if precision != "float32":
            raise UnsupportedModelError(f"{model_path}: a .tflite keeps its own precision; --precision applies "
                                        "to Keras models only")
        rewritten = _rewrite(original, str(model_path), lowering, seed, min_kernel, target)
        counts, max_rank, _ = model_facts(rewritten.model)
        result = ConversionResult(rewritten.model, ConversionReport(
            model_name=model_path.stem, precision="as input", lowering=f"rewrite ({rewritten.report.strategy})",
            layers=[], tflite_bytes=len(rewritten.model), compact_table_bytes=0, op_counts=dict(counts),
            max_tensor_rank=max_rank, needs_delegate="WBMM_DEPTHWISE" in counts or "WBMM" in counts,
            verification=None, verification_note=rewritten.report.verification_note or "verified by the rewriter",
            warnings=list(rewritten.report.warnings), rewrite=rewritten.report.to_dict(),
            rewrite_notes=[f"rewriter: {rewritten.report.rewritten_count} depthwise conv(s) rewritten"]))
    else:
        from converters import npu_placement

        if npu_placement.applies(target) and lowering == "custom":
            raise UnsupportedModelError(f"--lowering custom emits WBMM custom ops, which no NPU compiler takes; "
                                        f"use --lowering bmm for --target {target}")
        model = load_keras_model(model_path)
        result = convert_keras(model, precision=precision, lowering=lowering, representative_data=data_array,
                               seed=seed, fold_batchnorm=fold_batchnorm, name=model_path.stem)
        large = _large_depthwise_count(result.tflite, min_kernel)
        if result.report.layers and large:
            result.report.rewrite_notes.append(
                f"{large} depthwise conv(s) with kernel >= {min_kernel} left as they are (this model has WBMM "
                "layers, which convert lowers; run `wbmm-mobile rewrite` on the output to rewrite them too)")
        if not result.report.layers and large:
            rewritten = _rewrite(result.tflite, str(model_path), lowering, seed, min_kernel, target)
            counts, max_rank, _ = model_facts(rewritten.model)
            result.report.rewrite = rewritten.report.to_dict()
            result.report.rewrite_notes.append(
                f"rewriter: {rewritten.report.rewritten_count} depthwise conv(s) with kernel >= {min_kernel} "
                f"rewritten exactly ({rewritten.report.verification_note})")
            result.report.op_counts, result.report.max_tensor_rank = dict(counts), max_rank
            result.report.tflite_bytes = len(rewritten.model)
            result.report.needs_delegate = "WBMM_DEPTHWISE" in counts
            result = ConversionResult(rewritten.model, result.report)
        if result.report.layers and npu_placement.applies(target):
            result.report.npu_placement = npu_placement.check_converted(result.tflite, target, lowering)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{model_path.stem}.tflite"
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(result.tflite)
    os.replace(partial, target)
    result.report.output_path = str(target)
    write_json(result.report.to_dict(), out_dir / "report.json")
    return result.report


__all__ = ["PRECISIONS", "LOWERING_NAMES", "ConversionReport", "ConversionResult", "LayerReport", "convert_keras",
           "convert_file", "load_keras_model", "model_facts", "verify_against_keras", "wbmm_params"]
