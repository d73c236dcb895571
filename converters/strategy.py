"""The ``auto`` strategy: which exact rewrite (split, dilated, halo, custom, builtin_kernel) each layer gets.

For ``qualcomm-htp`` and ``ethos-u`` the pick is only a list of candidates: each is compiled by
the NPU's own compiler (``converters/npu_placement.py``), which refuses what leaves the NPU.
Rules that come from what a runtime accepts are fixed (docs/WBMM.md): the ``wbmm``
target runs the ``WBMM_DEPTHWISE`` custom op unless a device's table measured by
``wbmm-mobile tune --target wbmm`` says otherwise (there the candidates are the custom op,
the kept conv claimed by the delegate (``claim_depthwise:1``, ``CLAIMED``), the kept conv
left to XNNPACK beside it, and the exact builtin rewrites; ``custom`` is the baseline the
others must beat by the margins below); NNAPI takes BATCH_MATMUL only from
feature level 6 (Android 12), so ``split`` is the one safe choice there; the TFLite
GPU delegate has rejected batched BATCH_MATMUL with a constant operand, so ``split``.
For ``xnnpack`` and ``cpu`` the choice between ``split``, ``dilated``, ``halo``, ``builtin_kernel``
(XNNPACK only) and keeping the layer is a measurement: either the shipped table
``strategy_measurements.json`` (made by ``benchmarks/large_kernels.py
--write-strategy-table`` on the machine it names, nearest shape in log space), a device's
table measured by ``wbmm-mobile tune`` (``converters.strategy_table``), or, with
``measure=True``, timings of the candidates on a one-layer model of the layer's exact
shape on this machine (``converters.strategy_measure.MeasuredHere``). Whatever answers is
passed as ``table``: this module holds the policy only and times nothing. Anything but ``split`` must take at most ``REWRITE_MARGIN`` (or, to
keep the stock conv, ``KEEP_MARGIN``) times split's time to be picked, so timing noise
never trades a measured ``split`` for a slower choice. On builtin kernels the stock
depthwise kernel usually wins, and ``auto`` then keeps the layer and says so.

Integer layers (int8, int16) stay integer (``pick_integer``): ``wbmm`` gets the delegate's
int8 ``WBMM_DEPTHWISE``; ``xnnpack`` gets ``builtin_kernel`` (TFLite's own int8 kernel,
integer-only and identical to it) where that is faster than XNNPACK's int8 conv, measured
with ``measure=True`` or else from the shipped int8 table ``strategy_measurements_int8.json``
(made by ``benchmarks/int8_rewrite.py --write-strategy-table``; nearest shape as for float;
without it the rule "from 7x7 up", ``INT8_BUILTIN_KERNEL_FROM``); every other target keeps
the layer. XNNPACK's int8 depthwise collapses above 25 taps even harder than its float one:
at 56x56x96, 1 thread, it beats the builtin int8 kernel at 5x5 (about 0.4 against 1.5 ms)
and loses from 7x7 on, by 5x on one of this project's machines and by about 20x on another.
A device's table answers integer layers with its rows of the layer's own dtype only (an int8
layer never takes float timings from it, nor a float layer int8 ones); it is read before the
shipped int8 table, and offers ``builtin_kernel``, ``custom`` (wbmm) or keeping the layer, and
the float islands ``split``, ``dilated``, ``halo`` only with ``allow_float_islands``.
Only with ``allow_float_islands`` does an integer layer fall back to the float choices above,
run between DEQUANTIZE and QUANTIZE, and never on an integer-only target
(``INTEGER_ONLY_TARGETS``: NPU-class backends, which run integer models only and place none
of a float island on the NPU).

Not for: building the rewrites (``converters/rewrites/``), the rewrite loop, one-layer models
(``converters.layer_models``) or timing (``converters.strategy_measure``, ``android_harness.tune``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from wbmm_mobile import backends

TARGETS = ("xnnpack", "cpu", "nnapi", "gpu", "wbmm", "qualcomm-htp", "ethos-u")   # names from wbmm_mobile.backends
STRATEGIES = ("auto", "split", "dilated", "halo", "custom", "builtin_kernel")
TABLE_PATH = Path(__file__).with_name("strategy_measurements.json")
INT8_TABLE_PATH = Path(__file__).with_name("strategy_measurements_int8.json")
REWRITE_MARGIN = 0.9   # dilated, halo or builtin_kernel is picked only when it takes <= 90% of split's time
KEEP_MARGIN = 0.9   # the stock conv is kept only when it takes <= 90% of split's time


# NPU-class targets: integer models must stay integer there, float islands are refused
# even when allowed. Names from wbmm_mobile.backends; a new NPU target joins this set.
INTEGER_ONLY_TARGETS = frozenset({"nnapi", "qualcomm-htp", "ethos-u"})
INTEGER_PRECISIONS = ("int8", "int16")
# Strategies with an exact integer form: the others are float islands on an integer layer.
INTEGER_FORMS = ("builtin_kernel", "custom")
KEPT = "depthwise"                 # a table's name for the layer kept as it is (the stock conv)
CLAIMED = "claim_depthwise"        # wbmm tables: the kept conv run by the delegate (claim_depthwise:1)
# Kernel size from which TFLite's builtin int8 depthwise kernel beats XNNPACK's int8 one, on
# every machine measured (the module doc): the rule when no int8 table ships.
INT8_BUILTIN_KERNEL_FROM = 7


def integer_only(target: str) -> bool:
    """True for targets that run integer models only (no float island may be added)."""
    return target in INTEGER_ONLY_TARGETS


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
         table_path: Path | None = None, table: TimingSource | None = None, precision: str = "float32",
         allow_float_islands: bool = False) -> Pick:
    """The strategies to try for one layer. ``table`` answers the measured choices (a device's
    table from ``converters.strategy_table``, or ``converters.strategy_measure.MeasuredHere``
    for ``measure``); by default the shipped table at ``table_path`` (``TABLE_PATH``)."""
    target = backends.canonical(target, TARGETS, what="target")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return Pick((strategy,), f"--strategy {strategy} asked for")
    if precision in INTEGER_PRECISIONS:
        return pick_integer(shape, target, precision, measure, table=table,
                            allow_float_islands=allow_float_islands, table_path=table_path)
    if target == "wbmm":
        answer = table.lookup(shape, target) if table is not None else None
        if answer is None or answer.times is None:
            return Pick(("custom", "split"), "wbmm target: the wbmm delegate runs WBMM_DEPTHWISE"
                        + (f" (no {answer.source})" if answer is not None else ""))
        return _pick_wbmm_from_times(answer.times, answer.source)
    if target == "nnapi":
        return Pick(("split",), "nnapi: BATCH_MATMUL needs NNAPI feature level 6 (Android 12); split uses "
                                "DEPTHWISE_CONV_2D/ADD/PAD/STRIDED_SLICE only")
    # The NPU targets give candidates; converters/npu_placement.py compiles each and keeps only
    # what stays on the NPU (and, for the Ethos-U, what Vela estimates cheaper than the conv).
    if target == "qualcomm-htp":
        return Pick(("split", "dilated", "halo"), "qualcomm-htp: no compiler here estimates HTP time, so the "
                                                  "order is nnapi's (split: depthwise convs, ADD, PAD, STRIDED_SLICE)")
    if target == "ethos-u":
        return Pick(("keep", "dilated", "split", "halo"), "ethos-u: the cheapest by Vela's estimate")
    if target == "gpu":
        return Pick(("split",), "gpu: the TFLite GPU delegate rejects batched BATCH_MATMUL with a constant "
                                "operand; split keeps to depthwise convs")
    kernels = target
    if measure and table is None:
        raise ValueError("measure=True times the candidates: pass table=converters.strategy_measure.MeasuredHere(...)")
    answer = (table or ShippedTable(table_path)).lookup(shape, kernels)
    if answer.times is None:
        return Pick(("split", "halo"), f"{kernels}: no {answer.source}; split is the safe default")
    return _pick_from_times(answer.times, kernels, answer.source)


def pick_integer(shape: LayerShape, target: str, precision: str = "int8", measure: bool = False,
                 table: TimingSource | None = None, allow_float_islands: bool = False,
                 table_path: Path | None = None) -> Pick:
    """The integer choice for an int8/int16 layer on ``target`` (see the module doc): a device's
    ``table`` row of this dtype first, then the fixed rules and the shipped int8 table; with
    ``allow_float_islands`` (never on an integer-only target) a kept layer may become a float island."""
    islands = allow_float_islands and not integer_only(target)
    unanswered = ""
    if table is not None and not measure:
        answer = table.lookup(shape, target, dtype=precision)
        if answer.times is not None:
            return _pick_integer_from_times(answer.times, target, precision, answer.source, islands)
        unanswered = f" (no {answer.source})"
    chosen = _integer_rule(shape, target, precision, measure, table if measure else None)
    if unanswered:
        chosen = Pick(chosen.order, chosen.reason + unanswered)
    if chosen.order != ("keep",) or not islands:
        return chosen
    # The float choice for the island: from the shipped table or timings made now, never from a
    # device table's float rows (float timings do not answer for an integer layer's entry).
    fallback = pick(shape, target, "auto", measure, table_path, table if measure else None)
    return Pick(fallback.order, f"{chosen.reason}; --allow-float-islands: {fallback.reason}")


def _integer_rule(shape: LayerShape, target: str, precision: str, measure: bool,
                  table: TimingSource | None = None) -> Pick:
    """The integer choice without a device table: fixed rules, timings made now or the shipped int8 table."""
    if precision == "int8" and target == "wbmm":
        return Pick(("custom", "builtin_kernel"), "wbmm target: the delegate's int8 WBMM_DEPTHWISE (integer)")
    if target != "xnnpack":
        why = {"cpu": "TFLite's builtin integer kernel already runs it",
               "gpu": "the GPU delegate computes in float whatever the rewrite; no integer rewrite helps it"}.get(
            target, f"{target} runs the integer conv itself and takes integer models only")
        return Pick(("keep",), f"{target}, {precision}: {why}")
    if precision != "int8":
        return Pick(("keep",), f"xnnpack, {precision}: XNNPACK runs no {precision} conv, so TFLite's builtin "
                               "kernel already runs it")
    times, source = None, ""
    if measure:
        if table is None:
            raise ValueError("measure=True times the candidates: pass table=converters.strategy_measure.MeasuredHere(...)")
        answer = table.lookup(shape, "xnnpack", dtype="int8")
        times, source = answer.times, answer.source
    else:
        answer = ShippedTable(INT8_TABLE_PATH, dtype="int8").lookup(shape, "xnnpack", dtype="int8")
        times, source = answer.times, answer.source.replace("shipped table", "shipped int8 table", 1)
    if times is not None:
        timings = f"XNNPACK int8 {times['depthwise']:.2f} ms, builtin_kernel {times['builtin_kernel']:.2f} ms"
        if times["builtin_kernel"] <= REWRITE_MARGIN * times["depthwise"]:
            return Pick(("builtin_kernel",), f"xnnpack, int8: builtin_kernel (TFLite's int8 kernel, integer-only) "
                                             f"is faster ({timings}; {source})")
        return Pick(("keep",), f"xnnpack, int8: XNNPACK's own int8 conv is fastest ({timings}; {source})")
    if shape.kernel >= INT8_BUILTIN_KERNEL_FROM:
        return Pick(("builtin_kernel",), f"xnnpack, int8: builtin_kernel (TFLite's int8 kernel, integer-only) is "
                                         f"faster than XNNPACK's int8 conv from {INT8_BUILTIN_KERNEL_FROM}x"
                                         f"{INT8_BUILTIN_KERNEL_FROM} (no int8 table; the rule measured on every "
                                         "machine so far)")
    return Pick(("keep",), f"xnnpack, int8: XNNPACK's int8 conv is fastest below {INT8_BUILTIN_KERNEL_FROM}x"
                           f"{INT8_BUILTIN_KERNEL_FROM} (no int8 table; the rule measured on every machine so "
                           "far)")


def _timings_words(times: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.2f} ms" for name, ms in sorted(times.items(), key=lambda kv: kv[1]))


def _fastest_within_margins(times: dict[str, float], baseline: str) -> str:
    """``baseline`` unless another candidate takes <= its margin x the baseline's time; the fastest such wins."""
    limit = times[baseline]
    winners = [(ms, name) for name, ms in times.items()
               if name != baseline and ms <= (KEEP_MARGIN if name in (KEPT, CLAIMED) else REWRITE_MARGIN) * limit]
    return min(winners)[1] if winners else baseline


def _pick_integer_from_times(times: dict[str, float], target: str, precision: str, source: str,
                             islands: bool) -> Pick:
    """An integer layer's choice from a device table's row of its dtype: the integer forms and keeping the
    layer, plus the float islands only when ``islands``; today's rule's choice is the baseline."""
    offered = {name: ms for name, ms in times.items() if name == KEPT or name in INTEGER_FORMS
               or (islands and name in ("split", "dilated", "halo"))}
    ignored = sorted(set(times) - set(offered) - {CLAIMED})
    note = (f"; float islands {', '.join(ignored)} not offered (integer-only target or no --allow-float-islands)"
            if ignored else "")
    words = f"{_timings_words(offered)}; {source}{note}"
    baseline = next((name for name in (("custom", KEPT) if target == "wbmm" else (KEPT,)) if name in offered), None)
    if baseline is None:
        return Pick(("keep",), f"{target}, {precision}: the kept layer was not measured ({words})")
    best = _fastest_within_margins(offered, baseline)
    if best == KEPT:
        return Pick(("keep",), f"{target}, {precision}: the stock integer conv is fastest ({words})")
    if best == "custom":
        return Pick(("custom", "builtin_kernel"), f"{target}, {precision}: the delegate's int8 WBMM_DEPTHWISE is "
                                                  f"fastest ({words})")
    if best == "builtin_kernel":
        return Pick(("builtin_kernel",), f"{target}, {precision}: builtin_kernel (TFLite's integer kernel, "
                                         f"integer-only) is fastest ({words})")
    return Pick((best,), f"{target}, {precision}: {best} as a float island is fastest ({words})")


def _pick_wbmm_from_times(times: dict[str, float], source: str) -> Pick:
    """wbmm from a device's table: the custom op (today's rule) unless another candidate beats it by its
    margin; without a custom timing, split is the baseline."""
    words = f"{_timings_words(times)}; {source}"
    baseline = next((name for name in ("custom", "split") if name in times), None)
    if baseline is None:
        return Pick(("custom", "split"), f"wbmm: neither custom nor split measured ({words}); the delegate runs "
                                         "WBMM_DEPTHWISE")
    best = _fastest_within_margins(times, baseline)
    if best == KEPT:
        return Pick(("keep",), f"wbmm: the stock conv left to XNNPACK beside the delegate is fastest ({words})")
    if best == CLAIMED:
        return Pick(("keep",), f"wbmm: the stock conv claimed by the delegate is fastest: run the delegate with "
                               f"claim_depthwise:1 ({words})")
    if best == "custom":
        return Pick(("custom", "split"), f"wbmm: the delegate's WBMM_DEPTHWISE is fastest ({words})")
    return Pick((best, "custom", "split"), f"wbmm: {best} (builtin ops, XNNPACK beside the delegate) is fastest "
                                           f"({words})")


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


@dataclass(frozen=True)
class TableAnswer:
    """What a strategy table says for one layer: the shape whose timings it gives, {strategy: ms}
    (None: no timings for these kernels; ``source`` then says what is missing), and where they come from."""
    nearest: LayerShape
    times: dict[str, float] | None
    source: str


class TimingSource(Protocol):
    """Anything that answers ``pick`` with timings per strategy: ShippedTable, a device table, MeasuredHere.
    ``dtype`` is the layer's: a source answers only with timings of that dtype (float32 and float16
    weights count as one), else with ``times`` None."""

    def lookup(self, shape: LayerShape, kernels: str, dtype: str = "float32") -> TableAnswer: ...


def dtype_family(dtype: str) -> str:
    """Which timings answer a layer of ``dtype``: float16 weights compute in float32, so they share them."""
    return "float" if dtype in ("float32", "float16") else dtype


def nearest_row(rows: list[dict], shape: LayerShape) -> tuple[dict, float]:
    """The measured row nearest to ``shape`` (log-space; the kernel counts twice) and its distance (0: same shape)."""
    def distance(row) -> float:
        return (abs(math.log(row["height"] * row["width"] / (shape.height * shape.width)))
                + abs(math.log(row["channels"] / shape.channels)) + 2 * abs(math.log(row["kernel"] / shape.kernel)))

    best = min(rows, key=distance)
    return best, distance(best)


def shape_words(row: dict, distance: float) -> str:
    """How a table's timings relate to the layer: its own shape, or the nearest one and how far."""
    measured = f"{row['height']}x{row['width']}x{row['channels']} K={row['kernel']}"
    if distance == 0:
        return f"measured shape {measured} (this layer's)"
    return f"nearest measured shape {measured} (log-distance {distance:.2f})"


@dataclass(frozen=True)
class ShippedTable:
    """``strategy_measurements.json`` (or another file of its layout): one machine's timings per shape,
    all of one ``dtype`` (the int8 file is ``ShippedTable(INT8_TABLE_PATH, dtype="int8")``)."""
    path: Path | None = None
    dtype: str = "float32"

    def lookup(self, shape: LayerShape, kernels: str, dtype: str = "float32") -> TableAnswer:
        if dtype_family(dtype) != dtype_family(self.dtype):
            return TableAnswer(shape, None, f"{dtype} measurement in the shipped {self.dtype} table")
        table = _load_table(str(self.path or TABLE_PATH))
        # Tables written before the rename say "builtin" for "cpu".
        rows = [r for r in table.get("layers", [])
                if backends.ALIASES.get(r.get("kernels"), r.get("kernels")) == kernels]
        if not rows:
            return TableAnswer(shape, None, "shipped measurement")
        best, distance = nearest_row(rows, shape)
        nearest = LayerShape(best["height"], best["width"], best["channels"], best["kernel"])
        return TableAnswer(nearest, best["median_ms"], f"shipped table, {shape_words(best, distance)}, "
                                                       f"{table.get('machine', 'machine unknown')}")
