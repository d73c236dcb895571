"""Timings of each exact rewrite of one layer on this machine: what ``rewrite --measure`` asks for.

``measure_strategies(shape, kernels, ..., rewrite_with=...)`` times the stock conv and each
strategy's rewrite of a one-layer model of ``shape`` with the project's timing loop
(``converters.hostbench``). ``MeasuredHere`` wraps it as a strategy table: ``pick`` asks it
for timings exactly as it asks a measured table, and it answers with timings made now.

The one-layer rewrite is handed in (``rewrite_with``, ``converters.rewrite`` passes its
``rewrite_one_strategy``), so this module never imports the rewriter: the imports point
one way, rewrite -> strategy_measure -> strategy.

Not for: the choice itself (``converters.strategy``) or timings on a phone
(``android_harness.tune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from converters.layer_models import depthwise_model
from converters.strategy import LayerShape, TableAnswer, dtype_family

# (one-layer model bytes, strategy, kernels) -> the rewritten bytes, or None when the strategy refuses the layer
RewriteWith = Callable[[bytes, str, str], "bytes | None"]


@lru_cache(maxsize=64)
def measure_strategies(shape: LayerShape, kernels: str, threads: int = 1, runs: int = 20,
                       strategies: tuple[str, ...] = ("split", "halo"),
                       rewrite_with: RewriteWith | None = None) -> dict[str, float]:
    """Median ms of each exact rewrite of a one-layer model of ``shape`` (plus the stock conv)."""
    from converters.hostbench import time_model

    if rewrite_with is None:
        raise ValueError("measure_strategies needs rewrite_with (converters.rewrite.rewrite_one_strategy)")
    stock = depthwise_model(shape)
    times = {"depthwise": time_model(stock, threads=threads, runs=runs, warmup=3, kernels=kernels,
                                     progress=False).median_ms}
    for name in strategies:
        rewritten = rewrite_with(stock, name, kernels)
        if rewritten is None:
            continue
        times[name] = time_model(rewritten, threads=threads, runs=runs, warmup=3, kernels=kernels,
                                 progress=False).median_ms
    return times


@dataclass(frozen=True)
class MeasuredHere:
    """A strategy table whose every answer is timed now, on this machine, at the layer's own shape."""

    rewrite_with: RewriteWith
    threads: int = 1

    def lookup(self, shape: LayerShape, kernels: str, dtype: str = "float32") -> TableAnswer:
        if dtype_family(dtype) != "float" or kernels not in ("xnnpack", "cpu"):
            # Integer layers are timed by converters.quantized (pick with measure=True); wbmm needs a device table.
            return TableAnswer(shape, None, f"{dtype} {kernels} timing made here (float xnnpack and cpu only)")
        strategies = ("split", "dilated", "halo", "builtin_kernel") if kernels == "xnnpack" \
            else ("split", "dilated", "halo")
        times = measure_strategies(shape, kernels, threads=self.threads, strategies=strategies,
                                   rewrite_with=self.rewrite_with)
        return TableAnswer(shape, times, "measured now on this machine")
