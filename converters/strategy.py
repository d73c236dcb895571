"""The ``auto`` strategy: which exact rewrite (split, dilated, halo, custom, builtin_kernel) each layer gets.

Rules that come from what a runtime accepts are fixed (WBMM.md): the ``wbmm``
target runs the ``WBMM_DEPTHWISE`` custom op; NNAPI takes BATCH_MATMUL only from
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
         table_path: Path | None = None, table: TimingSource | None = None) -> Pick:
    """The strategies to try for one layer. ``table`` answers the measured choices (a device's
    table from ``converters.strategy_table``, or ``converters.strategy_measure.MeasuredHere``
    for ``measure``); by default the shipped table at ``table_path`` (``TABLE_PATH``)."""
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
    if measure and table is None:
        raise ValueError("measure=True times the candidates: pass table=converters.strategy_measure.MeasuredHere(...)")
    answer = (table or ShippedTable(table_path)).lookup(shape, kernels)
    if answer.times is None:
        return Pick(("split", "halo"), f"{kernels}: no {answer.source}; split is the safe default")
    return _pick_from_times(answer.times, kernels, answer.source)


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
    """Anything that answers ``pick`` with timings per strategy: ShippedTable, a device table, MeasuredHere."""

    def lookup(self, shape: LayerShape, kernels: str) -> TableAnswer: ...


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
    """``strategy_measurements.json`` (or another file of its layout): one machine's timings per shape."""
    path: Path | None = None

    def lookup(self, shape: LayerShape, kernels: str) -> TableAnswer:
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
