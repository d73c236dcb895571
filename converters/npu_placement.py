"""Rewrites for NPU targets (``qualcomm-htp``, ``ethos-u``): only what the NPU compiler keeps on the NPU.

An NPU runs what its ahead-of-time compiler accepts and hands the rest back to the CPU, so a
rewrite that a CPU runtime likes can push a layer off the NPU. For these targets each large
depthwise conv is therefore decided by compiling, not by rules:

1. match: the layer, cut out of the model as a one-op model with its own tensors (types and
   quantisation kept; a float16 weight keeps its DEQUANTIZE);
2. check, per candidate of ``converters.strategy.pick`` (and keeping the conv): rewrite the
   one-op model with the real rewrite pass, compile it for every NPU target (Qualcomm: SM8650
   and SM8750; Ethos-U: ethos-u55-256; ``converters.npu``) and refuse it, with the reason,
   unless every op lands on the NPU of every target. An int8 layer must stay integer:
   a candidate with float ops (DEQUANTIZE -> float -> QUANTIZE) is refused for both targets,
   because a float island leaves an integer-only NPU (Vela puts every such op on the CPU) and
   turns an int8 model into a mixed one;
3. pick: on Qualcomm's HTP every accepted candidate is taken in the strategy order (no compiler
   here estimates HTP time); on the Ethos-U the cheapest by Vela's cycle estimate, and the
   original conv is kept when it is no dearer (Vela's figures make the plain large depthwise
   conv several times cheaper than the batched-matmul forms, so this keeps many layers).

After the whole model is rewritten, ``confirm`` compiles the original and the result for every
target and records the placement in the report: no op type may have more ops on the CPU than
before, and every rewritten layer's ops are on the NPU.

A float model has no place on the Ethos-U: its layers are left alone with that reason.

Not for: the rewrites themselves (``converters/rewrites/``) or the compilers (``converters.npu``).
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["NPU_TARGETS", "applies", "npu_targets", "new_report", "LayerPlacement", "PlacementReport", "choose",
           "confirm", "layer_model", "check_converted"]

# Backend names (wbmm_mobile.backends) that are decided by compiling.
NPU_TARGETS = ("qualcomm-htp", "ethos-u")


def applies(target: str) -> bool:
    return target in NPU_TARGETS


@dataclass
class Candidate:
    name: str                           # "keep" or a strategy
    placement: dict[str, str] = field(default_factory=dict)     # target -> "ops_npu/ops_total"
    estimate_ms: float | None = None    # Vela's (ethos-u), on the first Ethos-U target
    refusal: str = ""


@dataclass
class LayerPlacement:
    layer: str
    choice: str
    reason: str
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class PlacementReport:
    target: str
    npu_targets: list[str]
    layers: list[LayerPlacement] = field(default_factory=list)
    before: dict[str, dict] = field(default_factory=dict)   # target -> {ops_npu, ops_total, estimate_ms, cpu_by_type}
    after: dict[str, dict] = field(default_factory=dict)
    confirmed: bool | None = None
    summary: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def npu_targets(backend: str) -> list:
    """The compiler targets a backend is checked on (``converters.npu.default_targets``)."""
    from converters import npu

    return npu.default_targets(backend)


def new_report(backend: str) -> PlacementReport:
    return PlacementReport(backend, [str(t) for t in npu_targets(backend)])


# ----------------------------------------------------------------------------- match: one layer as a model

def layer_model(model, g: int, index: int) -> bytes:
    """The op ``index`` of subgraph ``g`` alone in a model: its tensors, constants and quantisation,
    and the DEQUANTIZE of a float16 weight. The graph's inputs are its non-constant inputs."""
    from ai_edge_litert import schema_py_generated as schema

    from converters import tflite_io
    from converters.rewrites._graph import new_model

    graph = model.subgraphs[g]
    op = graph.operators[index]

    def constant(t: int) -> bool:
        buffer = model.buffers[graph.tensors[t].buffer]
        return buffer.data is not None and len(buffer.data) > 0

    ops = [op]
    for t in [int(i) for i in op.inputs if int(i) >= 0]:
        if constant(t):
            continue
        producer = next((o for o in graph.operators if t in [int(i) for i in o.outputs]), None)
        if producer is not None and all(constant(int(i)) for i in producer.inputs if int(i) >= 0):
            ops.insert(0, producer)       # e.g. DEQUANTIZE of a float16 weight: part of the layer

    new = new_model("wbmm-mobile: one layer cut out for an NPU placement check").model
    sub = new.subgraphs[0]
    mapping: dict[int, int] = {}
    codes: dict[int, int] = {}

    def tensor(t: int) -> int:
        if t < 0:
            return t
        if t not in mapping:
            copied = copy.deepcopy(graph.tensors[t])
            if constant(t):
                buffer = schema.BufferT()
                buffer.data = np.asarray(model.buffers[graph.tensors[t].buffer].data, dtype=np.uint8).copy()
                new.buffers.append(buffer)
                copied.buffer = len(new.buffers) - 1
            else:
                copied.buffer = 0
            mapping[t] = len(sub.tensors)
            sub.tensors.append(copied)
        return mapping[t]

    for source in ops:
        if source.opcodeIndex not in codes:
            codes[source.opcodeIndex] = len(new.operatorCodes)
            new.operatorCodes.append(copy.deepcopy(model.operatorCodes[source.opcodeIndex]))
        copied = copy.deepcopy(source)
        copied.opcodeIndex = codes[source.opcodeIndex]
        copied.inputs = np.array([tensor(int(i)) for i in source.inputs], dtype=np.int32)
        copied.outputs = np.array([tensor(int(i)) for i in source.outputs], dtype=np.int32)
        sub.operators.append(copied)
    produced = {int(i) for o in ops for i in o.outputs}
    sub.inputs = np.array([mapping[int(i)] for i in op.inputs if int(i) >= 0 and not constant(int(i))
                           and int(i) not in produced], dtype=np.int32)
    sub.outputs = np.array([mapping[int(i)] for i in op.outputs], dtype=np.int32)
    return tflite_io.model_to_bytes(new)


# ----------------------------------------------------------------------------- check and pick

def _compile(data: bytes, targets, folder: Path, stem: str) -> dict:
    from converters import npu

    path = folder / f"{stem}.tflite"
    path.write_bytes(data)
    return {str(t): npu.check_model(path, t) for t in targets}


def _describe(check) -> str:
    return f"{check.ops_npu}/{check.ops_total}"


def _all_on_npu(checks: dict) -> str:
    """'' when every op of every target is on the NPU, else the first target's reason."""
    for target, check in checks.items():
        if check.status == "not-applicable":
            return f"{target}: {check.note}"
        if not (check.compiled and check.ops_npu == check.ops_total):
            reasons = "; ".join(sorted({f"{c.op}: {c.reason}" for c in check.cpu_ops})[:3]) or check.note
            return f"{target}: {check.ops_npu} of {check.ops_total} ops on the NPU ({reasons})"
    return ""


def _estimate(checks: dict) -> float | None:
    return next((c.estimate_ms for t, c in checks.items() if t.startswith("ethos-u") and c.estimate_ms), None)


def cheaper_than_keeping(kept: Candidate, accepted: list[Candidate]) -> Candidate | None:
    """The Ethos-U rule: the accepted candidate with the lowest Vela estimate, if it beats keeping the
    conv; keeping wins ties. A conv that is not itself wholly on the NPU has an estimate that leaves
    out its CPU ops, so any wholly-NPU candidate beats it."""
    priced = [c for c in accepted if c.estimate_ms is not None]
    if not priced:
        return None
    best = min(priced, key=lambda c: c.estimate_ms)
    if kept.refusal or kept.estimate_ms is None:
        return best
    return best if best.estimate_ms < kept.estimate_ms else None


def choose(model, g: int, index: int, layer, order: tuple[str, ...], why: str, options,
           report: PlacementReport, rewrite_candidate: Callable[[bytes, str], Any]) -> tuple[tuple[str, ...], str]:
    """The strategy to apply for one layer on an NPU target, as ``(order, reason)``: ``(name,)``, or
    ``("keep",)`` with the reason every candidate was refused or why keeping it is cheaper.
    ``rewrite_candidate(one_layer_model, strategy)`` is the rewriter's (handed in, so this module
    never imports the rewriter that calls it) and returns its RewriteResult, unverified."""
    from converters.npu.models import activation_precision

    targets = npu_targets(options.target)
    entry = LayerPlacement(layer.name, "keep", "")
    report.layers.append(entry)
    names = ", ".join(str(t) for t in targets)
    one = layer_model(model, g, index)
    with tempfile.TemporaryDirectory(prefix="wbmm-placement-") as tmp:
        folder = Path(tmp)
        kept_checks = _compile(one, targets, folder, "keep")
        kept = Candidate("keep", {t: _describe(c) for t, c in kept_checks.items()}, _estimate(kept_checks),
                         _all_on_npu(kept_checks))
        entry.candidates.append(kept)
        if options.target == "ethos-u" and activation_precision(one) == "float":
            entry.reason = f"ethos-u runs integer models only and this layer is {layer.precision}"
            return ("keep",), entry.reason
        if all(n == "keep" for n in order):    # the policy offers no rewrite (an int8 layer the NPU runs itself)
            placed = ", ".join(f"{t}: {p}" for t, p in kept.placement.items())
            estimate = f", Vela's estimate {kept.estimate_ms:.3f} ms" if kept.estimate_ms is not None else ""
            entry.reason = f"{why} (the conv: {placed}{estimate})"
            return ("keep",), entry.reason
        integer = layer.precision == "int8"
        for name in [n for n in order if n != "keep"]:
            candidate = Candidate(name)
            entry.candidates.append(candidate)
            try:
                rewritten = rewrite_candidate(one, name)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot be built is refused with the reason
                candidate.refusal = f"the rewrite failed ({type(exc).__name__}: {exc})"[:300]
                continue
            if not rewritten.report.rewritten_count:
                candidate.refusal = rewritten.report.layers[0].reason if rewritten.report.layers else "not rewritten"
                continue
            if integer and activation_precision(rewritten.model) != "integer":
                candidate.refusal = ("it would put float ops (DEQUANTIZE -> float -> QUANTIZE) into an int8 model: "
                                     f"{options.target} is an integer-only target for int8 models")
                continue
            checks = _compile(rewritten.model, targets, folder, name)
            candidate.placement = {t: _describe(c) for t, c in checks.items()}
            candidate.estimate_ms = _estimate(checks)
            candidate.refusal = _all_on_npu(checks)
        accepted = [c for c in entry.candidates[1:] if not c.refusal]
        refused = "; ".join(f"{c.name} refused: {c.refusal}" for c in entry.candidates[1:] if c.refusal)
        if options.target == "ethos-u":
            best = cheaper_than_keeping(kept, accepted)
            if best is None:
                entry.reason = (f"the conv is cheapest on {names} by Vela's estimate "
                                f"({kept.estimate_ms if kept.estimate_ms is not None else float('nan'):.3f} ms"
                                + (f" vs {best.name} {best.estimate_ms:.3f} ms" if best else "") + ")"
                                + (f"; {refused}" if refused else ""))
                return ("keep",), entry.reason
            entry.choice = best.name
            conv = (f"{kept.estimate_ms:.3f} ms for the conv" if not kept.refusal else
                    f"the conv itself is not wholly on the NPU ({kept.refusal})")
            entry.reason = (f"{best.name}: all ops on the NPU of {names}, Vela's estimate {best.estimate_ms:.3f} ms "
                            f"vs {conv}" + (f"; {refused}" if refused else ""))
            return (best.name,), entry.reason
        if not accepted:
            entry.reason = f"no rewrite stays on the NPU ({refused})"
            return ("keep",), entry.reason
        best = accepted[0]
        entry.choice = best.name
        placement = ", ".join(f"{t} {p}" for t, p in best.placement.items())
        entry.reason = (f"{best.name}: all ops on the NPU ({placement}); {why}" + (f"; {refused}" if refused else ""))
        return (best.name,), entry.reason


# ----------------------------------------------------------------------------- confirm on the whole model

def _facts(check) -> dict:
    return {"status": check.status, "note": check.note, "ops_npu": check.ops_npu, "ops_total": check.ops_total,
            "partitions": check.partitions, "estimate_ms": check.estimate_ms,
            "cpu_by_type": {k: v.cpu for k, v in check.per_op.items() if v.cpu}}


def confirm(original: bytes, rewritten: bytes, report: PlacementReport, changed: bool) -> None:
    """Compile both models for every target; record the placement and whether no op left the NPU."""
    targets = npu_targets(report.target)
    with tempfile.TemporaryDirectory(prefix="wbmm-placement-") as tmp:
        folder = Path(tmp)
        after = _compile(rewritten, targets, folder, "after")
        before = _compile(original, targets, folder, "before") if changed else after
    report.before = {t: _facts(c) for t, c in before.items()}
    report.after = {t: _facts(c) for t, c in after.items()}
    worse = []
    for target in report.after:
        b, a = report.before[target]["cpu_by_type"], report.after[target]["cpu_by_type"]
        worse += [f"{target}: {a[k] - b.get(k, 0)} more {k} on the CPU" for k in a if a[k] > b.get(k, 0)]
    report.confirmed = not worse

    def ops(facts: dict) -> str:
        if facts["status"] == "not-applicable":
            return "n/a (float model)"
        if facts["status"] in ("failed", "refused"):
            return f"{facts['status']} ({facts['note'][:120]})"
        return f"{facts['ops_npu']}/{facts['ops_total']}"

    placement = ", ".join(f"{t} {ops(report.before[t])} -> {ops(report.after[t])}"
                          + (f" (Vela {report.before[t]['estimate_ms']:.3f} -> {report.after[t]['estimate_ms']:.3f} ms)"
                             if report.before[t]["estimate_ms"] and report.after[t]["estimate_ms"] else "")
                          for t in report.after)
    report.summary = (f"checked by compiling the rewritten model: {placement}; "
                      + ("no op left the NPU" if not worse else "ops LEFT the NPU: " + "; ".join(worse)))


# ----------------------------------------------------------------------------- convert: a lowering's placement

def check_converted(data: bytes, target: str, lowering: str) -> dict:
    """A converted model's placement on every target of ``target``; UnsupportedModelError naming the
    ops and the compiler's reasons when any op is left off the NPU (a WBMM lowering has no conv to
    fall back to, so a lowering that leaves the NPU is refused as a whole)."""
    from wbmm_mobile.errors import UnsupportedModelError

    with tempfile.TemporaryDirectory(prefix="wbmm-placement-") as tmp:
        checks = _compile(data, npu_targets(target), Path(tmp), "converted")
    refusal = _all_on_npu(checks)
    if refusal:
        raise UnsupportedModelError(f"--lowering {lowering} leaves the NPU for --target {target}: {refusal}"[:400])
    return {t: _facts(c) for t, c in checks.items()}
