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
        if dtype == "int8" and kernels == "xnnpack":
            times = measure_int8_depthwise(shape, threads=self.threads, rewrite_with=self.rewrite_with)
            return TableAnswer(shape, times, "measured now on this machine")
        if dtype_family(dtype) != "float" or kernels not in ("xnnpack", "cpu"):
            # wbmm (and every other integer case) needs a device table: nothing to time here.
            return TableAnswer(shape, None, f"{dtype} {kernels} timing made here (float xnnpack and cpu, "
                                            "int8 xnnpack only)")
        strategies = ("split", "dilated", "halo", "builtin_kernel") if kernels == "xnnpack" \
            else ("split", "dilated", "halo")
        times = measure_strategies(shape, kernels, threads=self.threads, strategies=strategies,
                                   rewrite_with=self.rewrite_with)
        return TableAnswer(shape, times, "measured now on this machine")


@lru_cache(maxsize=32)
def measure_int8_depthwise(shape: LayerShape, threads: int = 1, runs: int = 20,
                           rewrite_with: RewriteWith | None = None) -> dict[str, float]:
    """Median ms of the int8 conv of ``shape`` on XNNPACK (``depthwise``) and of its
    ``builtin_kernel`` rewrite (TFLite's own int8 kernel), timed interleaved."""
    from converters.hostbench import compare_models
    from converters.quantized import int8_depthwise_model

    if rewrite_with is None:
        raise ValueError("measure_int8_depthwise needs rewrite_with (converters.rewrite.rewrite_one_strategy)")
    stock = int8_depthwise_model(shape.height, shape.width, shape.channels, shape.kernel, padding=shape.padding)
    rewritten = rewrite_with(stock, "builtin_kernel", "xnnpack")
    if rewritten is None:
        raise ValueError(f"builtin_kernel refused the int8 {shape.kernel}x{shape.kernel} layer it was asked to time")
    stats = compare_models([stock, rewritten], threads=threads, runs=runs, warmup=3, progress=False).stats
    return {"depthwise": stats[0].median_ms, "builtin_kernel": stats[1].median_ms}
