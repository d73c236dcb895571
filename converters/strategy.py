"""The ``auto`` strategy: which exact rewrite (split, dilated, halo, custom, builtin_kernel) each layer gets.

Rules that come from what a runtime accepts are fixed (docs/WBMM.md): the ``wbmm``
target runs the ``WBMM_DEPTHWISE`` custom op; NNAPI takes BATCH_MATMUL only from
feature level 6 (Android 12), so ``split`` is the one safe choice there; the TFLite
GPU delegate has rejected batched BATCH_MATMUL with a constant operand, so ``split``.
For ``xnnpack`` and ``cpu`` the choice between ``split``, ``dilated``, ``halo``, ``builtin_kernel``
(XNNPACK only) and keeping the layer is a measurement: either the shipped table
``strategy_measurements.json`` (made by ``benchmarks/large_kernels.py
--write-strategy-table`` on the machine it names, nearest shape in log space), or, with
``measure=True``, timings of the candidates on a one-layer model of the layer's exact
shape on this machine. Anything but ``split`` must take at most ``REWRITE_MARGIN`` (or, to
keep the stock conv, ``KEEP_MARGIN``) times split's time to be picked, so timing noise
never trades a measured ``split`` for a slower choice. On builtin kernels the stock
depthwise kernel usually wins, and ``auto`` then keeps the layer and says so.

Not for: building the rewrites (``converters/rewrites/``) or the rewrite loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from wbmm_mobile import backends

TARGETS = ("xnnpack", "cpu", "nnapi", "gpu", "wbmm")   # names from wbmm_mobile.backends
STRATEGIES = ("auto", "split", "dilated", "halo", "custom", "builtin_kernel")
TABLE_PATH = Path(__file__).with_name("strategy_measurements.json")
REWRITE_MARGIN = 0.9   # dilated, halo or builtin_kernel is picked only when it takes <= 90% of split's time
KEEP_MARGIN = 0.9   # the stock conv is kept only when it takes <= 90% of split's time


@dataclass(frozen=True)
class Pick:
    """The strategies to try in order for one layer, and why."""
    order: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class LayerShape:
    height: int
    width: int
    channels: int
    kernel: int
    padding: str = "SAME"


def pick(shape: LayerShape, target: str, strategy: str = "auto", measure: bool = False,
         table_path: Path | None = None) -> Pick:
    target = backends.canonical(target, TARGETS, what="target")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return Pick((strategy,), f"--strategy {strategy} asked for")
    if target == "wbmm":
        return Pick(("custom", "split"), "wbmm target: the wbmm delegate runs WBMM_DEPTHWISE")
    if target == "nnapi":
        return Pick(("split",), "nnapi: BATCH_MATMUL needs NNAPI feature level 6 (Android 12); split uses "
                                "DEPTHWISE_CONV_2D/ADD/PAD/STRIDED_SLICE only")
    if target == "gpu":
        return Pick(("split",), "gpu: the TFLite GPU delegate rejects batched BATCH_MATMUL with a constant "
                                "operand; split keeps to depthwise convs")
    kernels = target
    if measure:
        times = measure_strategies(shape, kernels,
                                   strategies=("split", "dilated", "halo", "builtin_kernel") if kernels == "xnnpack"
                                   else ("split", "dilated", "halo"))
        source = "measured now on this machine"
    else:
        nearest, times, machine = lookup(shape, kernels, table_path)
        if times is None:
            return Pick(("split", "halo"), f"{kernels}: no shipped measurement; split is the safe default")
        source = f"shipped table, nearest measured shape {nearest.height}x{nearest.width}x{nearest.channels} " \
                 f"K={nearest.kernel}, {machine}"
    return _pick_from_times(times, kernels, source)


def _pick_from_times(times: dict[str, float], kernels: str, source: str) -> Pick:
    """split unless another choice takes <= its margin x split's time; the fastest such wins."""
    split_ms = times.get("split")
    timings = ", ".join(f"{name} {ms:.2f} ms" for name, ms in sorted(times.items(), key=lambda kv: kv[1]))
    if split_ms is None:
        return Pick(("split", "halo"), f"{kernels}: split (not measured; {timings}; {source})")
    # "depthwise" is the stock conv on these kernels: keeping the layer is a choice too
    # (TFLite's builtin kernel at large K beats every rewrite run on builtin kernels).
    margins = {"dilated": REWRITE_MARGIN, "halo": REWRITE_MARGIN, "builtin_kernel": REWRITE_MARGIN, "depthwise": KEEP_MARGIN}
    winners = [(times[name], name) for name in margins if name in times and times[name] <= margins[name] * split_ms]
    if kernels != "xnnpack":
        winners = [w for w in winners if w[1] != "builtin_kernel"]   # the same kernel as keeping it
    if not winners:
        return Pick(("split", "halo"), f"{kernels}: split is fastest within margins ({timings}; {source})")
    best = min(winners)[1]
    if best == "depthwise":
        return Pick(("keep",), f"{kernels}: the stock conv is fastest ({timings}; {source})")
    return Pick((best, "split"), f"{kernels}: {best} is fastest ({timings}; {source})")


@lru_cache(maxsize=4)
def _load_table(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def lookup(shape: LayerShape, kernels: str, table_path: Path | None = None):
    """(nearest measured shape, {strategy: ms}, machine) from the table, nearest in log-space."""
    table = _load_table(str(table_path or TABLE_PATH))
    # Tables written before the rename say "builtin" for "cpu".
    rows = [r for r in table.get("layers", []) if backends.ALIASES.get(r.get("kernels"), r.get("kernels")) == kernels]
    if not rows:
        return shape, None, None

    def distance(row) -> float:
        return (abs(math.log(row["height"] * row["width"] / (shape.height * shape.width)))
                + abs(math.log(row["channels"] / shape.channels)) + 2 * abs(math.log(row["kernel"] / shape.kernel)))

    best = min(rows, key=distance)
    nearest = LayerShape(best["height"], best["width"], best["channels"], best["kernel"])
    return nearest, best["median_ms"], table.get("machine", "machine unknown")


def depthwise_model(shape: LayerShape, seed: int = 0, bias: bool = True) -> bytes:
    """A one-layer .tflite (1xHxWxC float32 -> DEPTHWISE_CONV_2D KxK, seeded weights) built
    directly with the schema, for timing rewrites of one layer without the TensorFlow converter."""
    rng = np.random.default_rng(seed)
    k = shape.kernel
    kernel = (rng.standard_normal((k, k, shape.channels)) / k).astype(np.float32)
    b = rng.standard_normal(shape.channels).astype(np.float32) if bias else None
    return single_layer_model((1, shape.height, shape.width, shape.channels), kernel, b, shape.padding)


def single_layer_model(x_shape: tuple[int, ...], kernel: np.ndarray, bias: np.ndarray | None = None,
                       padding: str = "SAME", activation: int = 0) -> bytes:
    """A .tflite holding one DEPTHWISE_CONV_2D with this (kh, kw, C) kernel; a float16 kernel is
    stored as float16 behind a DEQUANTIZE, the converter's float16 layout."""
    from ai_edge_litert import schema_py_generated as schema

    from converters import tflite_io
    from converters.rewrites._graph import Builtin, GraphEditor, Options

    model = schema.ModelT()
    model.version = 3
    model.description = b"wbmm-mobile one-layer depthwise model"
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [], []
    model.subgraphs = [graph]
    editor = GraphEditor(model, 0)
    kh, kw, channels = kernel.shape
    x = editor.tensor("input", tuple(x_shape))
    w = editor.weight("kernel", kernel.reshape(1, kh, kw, channels), store_float16=kernel.dtype == np.float16)
    b = editor.constant("bias", np.asarray(bias, dtype=np.float32)) if bias is not None else \
        editor.constant("bias", np.zeros(channels, dtype=np.float32))
    valid = padding.upper() == "VALID"
    out_hw = (x_shape[1] - kh + 1, x_shape[2] - kw + 1) if valid else tuple(x_shape[1:3])
    out = editor.tensor("output", (x_shape[0], *out_hw, channels))
    options = schema.DepthwiseConv2DOptionsT()
    options.padding = schema.Padding.VALID if valid else schema.Padding.SAME
    options.strideH = options.strideW = options.depthMultiplier = 1
    options.dilationHFactor = options.dilationWFactor = 1
    options.fusedActivationFunction = activation
    editor.op(Builtin.DEPTHWISE_CONV_2D, [x, w, b], [out], Options.DepthwiseConv2DOptions, options)
    graph.operators = editor.ops
    graph.inputs = np.array([x.index], dtype=np.int32)
    graph.outputs = np.array([out.index], dtype=np.int32)
    signature = schema.SignatureDefT()
    signature.signatureKey = b"serving_default"
    signature.subgraphIndex = 0
    for label, tensor, target in (("input", x, "inputs"), ("output", out, "outputs")):
        entry = schema.TensorMapT()
        entry.name = label.encode()
        entry.tensorIndex = tensor.index
        setattr(signature, target, [entry])
    model.signatureDefs = [signature]
    return tflite_io.model_to_bytes(model)


@lru_cache(maxsize=64)
def measure_strategies(shape: LayerShape, kernels: str, threads: int = 1, runs: int = 20,
                       strategies: tuple[str, ...] = ("split", "halo")) -> dict[str, float]:
    """Median ms of each exact rewrite of a one-layer model of ``shape`` (plus the stock conv)."""
    from converters.rewrite import RewriteOptions, rewrite_model
    from converters.hostbench import time_model

    stock = depthwise_model(shape)
    times = {"depthwise": time_model(stock, threads=threads, runs=runs, warmup=3, kernels=kernels,
                                     progress=False).median_ms}
    for name in strategies:
        options = RewriteOptions(strategy=name, target=kernels, min_kernel=1, verify=False)
        result = rewrite_model(stock, options)
        if not any(layer.rewritten for layer in result.report.layers):
            continue
        times[name] = time_model(result.model, threads=threads, runs=runs, warmup=3, kernels=kernels,
                                 progress=False).median_ms
    return times
