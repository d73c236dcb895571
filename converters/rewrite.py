"""Rewrite the large depthwise convolutions of a .tflite model: the library entry point.

``rewrite_model(bytes, RewriteOptions) -> RewriteResult`` (bytes + report) and the
path-based ``rewrite_file``. Each DEPTHWISE_CONV_2D goes through: match
(``rewrites/_depthwise.match``) -> common check (stride, dilation, multiplier,
dynamic shape, type, --min-kernel) -> the strategy order from ``converters.strategy``
-> the first pass of ``PASSES`` in that order whose own check accepts it -> its
rewrite. Every layer left alone is in the report with its reason.

Integer models stay integer: an int8/int16 layer gets only the rewrites that keep its
integer tensors (``builtin_kernel``, the int8 ``custom`` op) unless
``RewriteOptions.allow_float_islands`` (``--allow-float-islands``) lets the other rewrites
run it in float32 between DEQUANTIZE and QUANTIZE; the report then says the model became
mixed precision and how its size changed. Integer-only targets
(``strategy.INTEGER_ONLY_TARGETS``: NPUs) refuse that option.

Before anything is returned the rewritten model is run against the original with
the ai-edge-litert interpreter on seeded inputs (and the user's), through the one
verifier ``converters.verify.compare_models``: exact mode fails past 1e-4 relative
(float32 and float16 weights, whose numbers are kept) or one quantisation step
(integer outputs, compared as integers). Windowed mode changes the function: it is
measured and reported, not enforced. Models with custom ops are verified only when
the wbmm delegate can be loaded (and, for int8 custom ops, runs them).

Not for: file format details (``converters/tflite_io.py``) or Keras conversion.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from converters import npu_placement
from converters import strategy as strategy_mod
from converters import strategy_measure, tflite_io
from converters.layer_models import single_layer_model
from converters.rewrites import (_depthwise, depthwise_builtin_kernel, depthwise_custom, depthwise_dilated,
                                depthwise_halo, depthwise_split, depthwise_windowed, integer_negation, static_shapes)
from converters.reports import LayerReport
from converters.rewrites._graph import GraphEditor, TensorType, prune_unused
from wbmm_mobile.errors import CorruptModelError, IncompatibleOptionsError, UnsupportedModelError, \
    VerificationError, WbmmError
from wbmm_mobile.progress import ProgressBar as _ProgressBar

MODES = ("exact", "windowed")


@dataclass(frozen=True)
class Pass:
    """One rewrite: its name, the mode it belongs to and its module (check + rewrite)."""
    name: str
    mode: str
    module: ModuleType


# The one ordered list of passes. In exact mode the strategy picker orders the exact
# passes per layer; this order lists what exists. Adding a rewrite: its module in
# converters/rewrites/ (NAME, check, rewrite), one line here, its name in
# converters.strategy.STRATEGIES (the CLI's --strategy choices come from there), and,
# for `auto` to consider it, a column in benchmarks/large_kernels.py's strategy table.
# Before them, once per model, the graph pass `rewrites/static_shapes.py` (RewriteOptions.
# static_shapes) turns RESHAPE targets computed at run time into constants, so the layers
# and everything around them have static shapes XNNPACK can take in one partition. For
# integer-only targets, `rewrites/integer_negation.py` then turns the converter's float NEG
# islands (int8 LayerNorm) into int8 MULs, so that the model can be integer-only at all.
PASSES: tuple[Pass, ...] = (
    Pass("windowed", "windowed", depthwise_windowed),
    Pass("custom", "exact", depthwise_custom),
    Pass("halo", "exact", depthwise_halo),
    Pass("split", "exact", depthwise_split),
    Pass("dilated", "exact", depthwise_dilated),
    Pass("builtin_kernel", "exact", depthwise_builtin_kernel),
)

_MALFORMED = (ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError, struct.error)

EXACT_RELATIVE = 1e-4
INTEGER_STEPS = 1   # integer outputs: at most one quantisation step from the original, compared as integers


@dataclass
class RewriteOptions:
    mode: str = "exact"
    strategy: str = "auto"
    target: str = "xnnpack"
    min_kernel: int = 7
    measure: bool = False
    strategy_table: Any = None     # what answers `auto`'s measured choices (converters.strategy_table.load_for); None: shipped
    verify: bool = True
    inputs: Sequence[np.ndarray] | str | os.PathLike | None = None   # arrays, or an .npz path
    seed: int = 0
    delegate: Any = None           # a loaded delegate or a path; None tries delegates.load() for custom ops
    progress: bool = False
    static_shapes: bool = True     # run the static_shapes graph pass first
    allow_float_islands: bool = False   # integer layers may be run in float32 (DEQUANTIZE -> ... -> QUANTIZE)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.strategy not in strategy_mod.STRATEGIES:
            raise ValueError(f"strategy must be one of {strategy_mod.STRATEGIES}, got {self.strategy!r}")
        if self.target not in strategy_mod.TARGETS:
            raise ValueError(f"target must be one of {strategy_mod.TARGETS}, got {self.target!r}")
        if self.min_kernel < 1:
            raise ValueError(f"min_kernel must be >= 1, got {self.min_kernel}")
        if self.allow_float_islands and strategy_mod.integer_only(self.target):
            raise IncompatibleOptionsError(
                f"--allow-float-islands with --target {self.target}: {self.target} is an integer-only target "
                "(NPU-class); a float island would leave the NPU, so integer layers are never run in float there")


@dataclass
class RewriteReport:
    mode: str
    target: str
    strategy: str
    min_kernel: int
    layers: list[LayerReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verification: dict | None = None
    verification_note: str = ""
    bytes_before: int = 0
    bytes_after: int = 0
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    static_shapes: static_shapes.StaticShapesReport | None = None
    strategy_table: str | None = None   # the table (and device) `auto` picked from, when not the shipped one
    mixed_precision: bool = False        # integer layers now run in float32 (--allow-float-islands)
    precision_note: str = ""
    float_tensors_before: int = 0
    float_tensors_after: int = 0
    float_negations_made_integer: int = 0   # integer_negation pass (integer-only targets)
    notes: list[str] = field(default_factory=list)
    npu_placement: npu_placement.PlacementReport | None = None    # NPU targets: what the compilers placed

    @property
    def rewritten_count(self) -> int:
        return sum(layer.rewritten for layer in self.layers)

    @property
    def changed(self) -> bool:
        return bool(self.rewritten_count or (self.static_shapes and self.static_shapes.folded)
                    or self.float_negations_made_integer)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rewritten_count"] = self.rewritten_count
        return data


@dataclass
class RewriteResult:
    model: bytes
    report: RewriteReport


def rewrite_model(data: bytes, options: RewriteOptions | None = None, name: str = "<bytes>") -> RewriteResult:
    """Rewrite ``data`` (.tflite bytes); verification failures raise VerificationError."""
    options = options or RewriteOptions()
    options.validate()
    model = tflite_io.load_model(data, name)
    if isinstance(options.inputs, (str, os.PathLike)):
        options.inputs = load_inputs_npz(options.inputs, bytes(data))
    report = RewriteReport(options.mode, options.target, options.strategy, options.min_kernel,
                           bytes_before=len(data), ops_before=_op_counts(model),
                           float_tensors_before=_float_tensor_count(model))
    timings = _timing_source(options)
    report.strategy_table = getattr(timings, "description", None)
    if options.mode == "windowed":
        report.warnings.append("windowed mode changes the function: each KxK conv becomes WBMM with window "
                               "(K+1)/2 and sees zeros across window borders (see the measured deviation)")

    custom_layers: list = []
    if npu_placement.applies(options.target):
        report.npu_placement = npu_placement.new_report(options.target)
    with _ProgressBar(options.progress, report.ops_before.get("DEPTHWISE_CONV_2D", 0)
                      + report.ops_before.get("CONV_2D", 0) + (1 if options.verify else 0)) as bar:
        try:
            if options.static_shapes:
                bar.describe("folding run-time shapes")
                report.static_shapes = static_shapes.rewrite(model, bytes(data))
                bar.describe("rewriting layers")
            if strategy_mod.integer_only(options.target):
                report.float_negations_made_integer = sum(integer_negation.rewrite(model, g)
                                                          for g in range(len(model.subgraphs)))
                if report.float_negations_made_integer:
                    report.notes.append(
                        f"{report.float_negations_made_integer} float NEG island(s) the TFLite converter left in the "
                        f"integer model (DEQUANTIZE -> NEG -> QUANTIZE, LayerNorm) became int8 MULs by -1, so "
                        f"{options.target} can take them")
            for g in range(len(model.subgraphs)):
                _rewrite_subgraph(model, g, options, report, custom_layers, bar.advance, timings)
            # Nothing changed: hand back the input bytes untouched rather than a re-serialisation.
            out = tflite_io.model_to_bytes(model) if report.changed else bytes(data)
        except WbmmError:
            raise
        except _MALFORMED as exc:
            # A file that parses but whose ops do not fit together (wrong option tables, shapes
            # that disagree with their data, out-of-range values) is corrupt, not a crash.
            raise CorruptModelError(f"{name}: malformed model ({type(exc).__name__}: {exc})"[:300]) from exc
        report.bytes_after = len(out)
        rewritten_tree = tflite_io.load_model(out, "the rewritten model")
        report.ops_after = _op_counts(rewritten_tree)
        report.float_tensors_after = _float_tensor_count(rewritten_tree)
        _note_precision(report)
        if report.npu_placement is not None:
            bar.describe("compiling for the NPU targets")
            npu_placement.confirm(bytes(data), out, report.npu_placement, report.changed)
        if options.verify:
            bar.describe("verifying against the original")
            try:
                _verify(data, out, model, options, report, custom_layers)
            except VerificationError as exc:
                exc.report = report          # so callers can still write what was decided and measured
                raise
            bar.advance()
    return RewriteResult(out, report)


def _timing_source(options: RewriteOptions):
    """What answers `auto`'s measured choices: the given table, timings made now (--measure), or None
    (``converters.strategy`` then reads the shipped table)."""
    if options.strategy_table is not None:
        return options.strategy_table
    if options.measure:
        return strategy_measure.MeasuredHere(rewrite_one_strategy)
    return None


def _npu_candidate(one_layer: bytes, strategy: str) -> RewriteResult:
    """One NPU candidate: the one-layer model rewritten by ``strategy`` (``windowed``: WBMM), unverified;
    converters.npu_placement compiles it."""
    windowed = strategy == "windowed"
    return rewrite_model(one_layer, RewriteOptions(mode="windowed" if windowed else "exact",
                                                   strategy="auto" if windowed else strategy, target="xnnpack",
                                                   min_kernel=1, verify=False, static_shapes=False))


def rewrite_one_strategy(data: bytes, strategy: str, target: str) -> bytes | None:
    """``data`` with every depthwise conv rewritten by ``strategy`` (unverified; any kernel size), or None
    when the strategy refuses them all: the one-layer candidates that ``--measure`` times."""
    result = rewrite_model(data, RewriteOptions(strategy=strategy, target=target, min_kernel=1, verify=False))
    return result.model if any(layer.rewritten for layer in result.report.layers) else None


def rewrite_file(input_path: str | os.PathLike, output_path: str | os.PathLike,
                 options: RewriteOptions | None = None, report_path: str | os.PathLike | None = None) -> RewriteResult:
    """Read, rewrite, verify, then write the model (and the JSON report if asked)."""
    input_path = Path(input_path)
    data = tflite_io.load_model(input_path)   # clear errors first; the bytes are read again below
    del data
    try:
        result = rewrite_model(input_path.read_bytes(), options, name=str(input_path))
    except VerificationError as exc:
        if report_path is not None and getattr(exc, "report", None) is not None:
            _write_report(exc.report, report_path, failure=str(exc))
        raise
    tflite_io.write_bytes_atomically(output_path, result.model)
    if report_path is not None:
        _write_report(result.report, report_path)
    return result


def _write_report(report: RewriteReport, path: str | os.PathLike, failure: str | None = None) -> None:
    import json

    data = report.to_dict()
    if failure:
        data["failure"] = failure
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def load_inputs_npz(path: str | os.PathLike, model: bytes) -> list[np.ndarray]:
    """Arrays from an .npz, matched to the model's inputs by name, else taken in file order."""
    from converters.verify import input_specs

    path = Path(path)
    if not path.exists():
        from wbmm_mobile.errors import ModelNotFoundError
        raise ModelNotFoundError(f"{path}: no such inputs file")
    try:
        archive = np.load(path)
        arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # noqa: BLE001 - any npz failure is the user's file
        raise UnsupportedModelError(f"{path}: cannot read as .npz ({exc})") from None
    specs = input_specs(model)
    if all(spec.name in arrays for spec in specs):
        chosen = [arrays[spec.name] for spec in specs]
    elif len(arrays) == len(specs):
        chosen = list(arrays.values())
    else:
        raise UnsupportedModelError(f"{path}: {len(arrays)} arrays for a model with {len(specs)} inputs "
                                    f"({', '.join(s.name for s in specs)})")
    for spec, value in zip(specs, chosen):
        if tuple(value.shape)[1:] != tuple(spec.shape)[1:]:
            raise UnsupportedModelError(f"{path}: input {spec.name!r} has shape {value.shape}, model wants {spec.shape}")
    return chosen


# --------------------------------------------------------------------------- the loop

def _rewrite_subgraph(model, g: int, options: RewriteOptions, report: RewriteReport, custom_layers: list,
                      advance=lambda: None, timings=None) -> None:
    graph = model.subgraphs[g]
    if not graph.operators:
        return
    originals = list(graph.operators)
    replacements: dict[int, list] = {}
    passes = {p.name: p for p in PASSES if p.mode == options.mode}
    for index in range(len(originals)):
        try:
            layer = _depthwise.match(model, g, index)
        except _MALFORMED as exc:
            # An op whose tables do not parse (missing or foreign options) may still load in
            # LiteRT with its defaults: leave it as it is, say so, go on with the others.
            report.warnings.append(f"subgraph {g} op {index}: left alone, its tables do not parse "
                                   f"({type(exc).__name__}: {exc})"[:300])
            continue
        if layer is None:
            continue
        advance()
        entry = LayerReport(name=layer.name, op=layer.op, kernel=f"{layer.kernel_size[0]}x{layer.kernel_size[1]}",
                            input_shape=list(layer.x.shape), precision=layer.precision, subgraph=g, op_index=index,
                            padding=layer.padding_name)
        report.layers.append(entry)
        reason = _depthwise.check_common(layer, options.min_kernel)
        if reason:
            entry.reason = reason
            continue
        if options.mode == "windowed":
            order, why = ("windowed",), "windowed mode"
        else:
            chosen = strategy_mod.pick(strategy_mod.LayerShape(layer.x.shape[1], layer.x.shape[2], layer.channels,
                                                               max(layer.kernel_size), layer.padding_name),
                                       options.target, options.strategy, options.measure, table=timings,
                                       precision=layer.precision, allow_float_islands=options.allow_float_islands)
            order, why = chosen.order, chosen.reason
        if report.npu_placement is not None:      # NPU targets: decided by compiling each candidate
            order, why = npu_placement.choose(model, g, index, layer, order, why, options, report.npu_placement,
                                              _npu_candidate)
        if order == ("keep",):
            entry.reason = f"kept: {why}"
            continue
        refusals = []
        for name in order:
            rewrite_pass = passes[name]
            refusal = _integer_refusal(name, rewrite_pass, layer, options)
            if refusal:
                refusals.append(refusal)
                continue
            refusal = rewrite_pass.module.check(layer)
            if refusal:
                refusals.append(f"{name}: {refusal}")
                continue
            editor = GraphEditor(model, g, dynamic_batch=layer.dynamic_batch)
            if name == "windowed":
                rewrite_pass.module.rewrite(editor, layer, use_custom_op=options.strategy == "custom")
            else:
                rewrite_pass.module.rewrite(editor, layer)
            replacements[index] = editor.ops
            if name == "custom":
                custom_layers.append(layer)
            entry.rewritten, entry.strategy, entry.ops_added = True, name, len(editor.ops)
            entry.float_island = layer.integer and getattr(rewrite_pass.module, "NO_INTEGER_FORM", None) is not None
            island = [f"a float island: DEQUANTIZE -> float32 ops -> QUANTIZE around the {layer.precision} layer "
                      "(--allow-float-islands)"] if entry.float_island else []
            entry.reason = "; ".join([why] + refusals + island)
            break
        else:
            entry.reason = "; ".join(refusals) or "no pass accepted it"
    if replacements:
        new_ops = []
        for index, op in enumerate(originals):
            new_ops.extend(replacements.get(index, [op]))
        graph.operators = new_ops
        prune_unused(model, g)


def _integer_refusal(name: str, rewrite_pass: Pass, layer, options: RewriteOptions) -> str | None:
    """Why ``rewrite_pass`` may not touch the integer ``layer`` (None: it may): a pass without an
    integer form would add a float island, which needs allow_float_islands and a target that
    is not integer-only."""
    why = getattr(rewrite_pass.module, "NO_INTEGER_FORM", None)
    if not layer.integer or why is None:
        return None
    if strategy_mod.integer_only(options.target):
        return (f"{name}: no {layer.precision} form ({why}); a float island (DEQUANTIZE -> float32 -> QUANTIZE) "
                f"is never added for {options.target}, an integer-only target")
    if not options.allow_float_islands:
        return (f"{name}: no {layer.precision} form ({why}); it would run the layer in float32 between DEQUANTIZE "
                "and QUANTIZE, which only --allow-float-islands permits (the model would become mixed precision)")
    return None


def _float_tensor_count(model) -> int:
    floats = (TensorType.FLOAT32, TensorType.FLOAT16)
    return sum(1 for graph in model.subgraphs for t in graph.tensors or [] if t.type in floats)


def _note_precision(report: RewriteReport) -> None:
    """Say so, loudly, when integer layers now run in float: the model is mixed precision."""
    islands = [layer for layer in report.layers if layer.float_island]
    if not islands:
        return
    change = report.bytes_after - report.bytes_before
    report.mixed_precision = True
    report.precision_note = (
        f"the model became mixed precision: {len(islands)} integer layer(s) now run in float32 between DEQUANTIZE "
        f"and QUANTIZE (--allow-float-islands), {report.float_tensors_before} -> {report.float_tensors_after} "
        f"float tensors; size {report.bytes_before:,} -> {report.bytes_after:,} bytes "
        f"({change:+,} bytes, {100.0 * change / max(report.bytes_before, 1):+.1f}%); integer-only hardware "
        "(NPUs) will not run those layers")
    report.warnings.append(report.precision_note)


def _op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for g in range(len(model.subgraphs)):
        for name in tflite_io.op_names(model, g):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- verification

def _check_custom_layers(layers: list, make_delegate, seed: int) -> str:
    """Each WBMM_DEPTHWISE layer, alone in a one-op model run by the delegate, against
    ``wbmm_mobile.core.depthwise_conv2d`` in float64; raises VerificationError past 1e-4."""
    from converters import verify
    from wbmm_mobile import core

    rng = np.random.default_rng(seed)
    worst = 0.0
    layers = [layer for layer in layers if not layer.integer]   # int8 ops: checked in steps with the model
    if not layers:
        return ""
    for layer in layers:
        kernel = layer.kernel.astype(np.float16 if layer.weights_float16 else np.float32)
        model = single_layer_model(layer.x.shape, kernel, layer.bias, layer.padding_name, layer.activation)
        custom = rewrite_model(model, RewriteOptions(strategy="custom", min_kernel=1, verify=False)).model
        x = rng.uniform(-1, 1, size=layer.x.shape).astype(np.float32)
        got = verify.run_tflite(custom, [x], delegate=make_delegate())[0]
        expected = core.depthwise_conv2d(x.astype(np.float64), kernel.astype(np.float64), layer.padding_name.lower(),
                                         layer.bias)
        if layer.activation in (1, 3):
            expected = np.maximum(expected, 0)
        if layer.activation == 3:
            expected = np.minimum(expected, 6)
        rel = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))
        if rel > EXACT_RELATIVE:
            raise VerificationError(f"WBMM_DEPTHWISE for {layer.name} disagrees with the numpy reference: "
                                    f"max rel {rel:.3g} > {EXACT_RELATIVE:g}")
        worst = max(worst, rel)
    return f"{len(layers)} custom layer(s) match the numpy reference, max rel {worst:.3g}"


def _verify(original: bytes, rewritten: bytes, model, options: RewriteOptions, report: RewriteReport,
            custom_layers: list) -> None:
    from converters import verify

    has_custom = any(layer.strategy == "custom" for layer in report.layers if layer.rewritten)
    if not report.changed:
        report.verification_note = "nothing was rewritten; nothing to verify"
        return
    make_delegate, where = None, ""
    custom_check = ""
    if has_custom:
        make_delegate, where = verify.wbmm_delegate_factory(options.delegate)
        if make_delegate is not None and any(layer.integer for layer in custom_layers):
            from converters.quantized import delegate_runs_int8_custom_ops

            runs_int8, why = delegate_runs_int8_custom_ops(make_delegate)
            if not runs_int8:
                make_delegate, where = None, why
        if make_delegate is None:
            report.verification_note = (f"NOT verified: the model has wbmm custom ops and {where}; "
                                        "run it where the delegate is built to check it")
            report.warnings.append(report.verification_note)
            return
        custom_check = _check_custom_layers(custom_layers, make_delegate, options.seed)
    kernels = "cpu" if options.target == "cpu" else "xnnpack"
    input_sets = [verify.random_inputs(original, options.seed), verify.random_inputs(original, options.seed + 1)]
    if options.inputs is not None:
        input_sets.append(list(options.inputs))
    precisions = {layer.precision for layer in report.layers if layer.rewritten}
    worst = verify.compare_models(original, rewritten, input_sets, kernels=kernels, make_delegate=make_delegate,
                                  relative=EXACT_RELATIVE, steps=INTEGER_STEPS, enforce=options.mode == "exact")
    report.verification = worst.to_dict()
    report.verification["inputs"] = f"{len(input_sets)} sets (seeds {options.seed}, {options.seed + 1}" + \
        (", and the user's)" if options.inputs is not None else ")")
    report.verification["kernels"] = kernels
    report.verification["precisions"] = sorted(precisions)
    if options.mode == "windowed":
        report.verification_note = (f"windowed mode: measured deviation from the original on seeded inputs: "
                                    f"{_deviation(worst)} (not an error)")
        report.warnings.append(report.verification_note)
    else:
        report.verification_note = f"verified with {kernels} kernels" + \
            (f" and {where}" + (f" ({custom_check})" if custom_check else "") if has_custom else "") + \
            f": {worst.summary()}"


def _deviation(result) -> str:
    if result.max_steps is not None:
        return f"max {result.max_steps:g} step(s), {result.fraction_differing:.2%} of outputs differ"
    return f"max abs {result.max_abs:.3g}, max rel {result.max_rel:.3g}"
