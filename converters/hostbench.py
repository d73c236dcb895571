"""Latency of .tflite models on this machine, with the same ai-edge-litert runtime users ship.

``time_model`` loads a model (XNNPACK by default, or TFLite's builtin kernels, plus an
optional external delegate such as the project's C++ one), feeds it seeded random
inputs, times interpreter creation, the first invoke, a warm-up, then at least
``runs`` timed invokes, and returns every per-run figure in a :class:`LatencyStats`.
``compare_models`` times several models side by side (interleaved invoke by invoke)
and reports speedups against the first. Not a phone benchmark: ``android_harness`` runs ``benchmark_model`` on
devices; this is the host-side yardstick and the base of its Linux runner.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from converters.tflite_io import read_model_bytes
from converters.verify import load_interpreter, random_inputs
from wbmm_mobile.progress import ProgressBar

ModelLike = Union[bytes, bytearray, str, os.PathLike]


@dataclass
class LatencyStats:
    """Timings in milliseconds of one model under one configuration."""
    model: str
    model_bytes: int
    model_sha256: str
    kernels: str
    threads: int
    delegate: str | None
    runs_ms: list[float]
    median_ms: float
    p5_ms: float
    p95_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    init_ms: float
    first_ms: float
    warmup_mean_ms: float
    warmup: int

    @property
    def runs(self) -> int:
        return len(self.runs_ms)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["runs"] = self.runs
        return data


def _describe_delegate(delegate: Any) -> str | None:
    if delegate is None:
        return None
    if isinstance(delegate, (str, os.PathLike)):
        return str(delegate)
    return type(delegate).__name__


def summarize(runs_ms: Sequence[float]) -> dict[str, float]:
    """median, p5, p95 (linear interpolation), mean, std, min, max of a list of timings."""
    values = np.asarray(runs_ms, dtype=np.float64)
    return {"median_ms": float(np.median(values)), "p5_ms": float(np.percentile(values, 5)),
            "p95_ms": float(np.percentile(values, 95)), "mean_ms": float(values.mean()),
            "std_ms": float(values.std()), "min_ms": float(values.min()), "max_ms": float(values.max())}


def time_model(model: ModelLike, *, threads: int = 1, runs: int = 50, warmup: int = 5, kernels: str = "xnnpack",
               delegate: Any = None, min_secs: float = 0.0, progress: bool | Callable[[int, int], None] = True,
               seed: int = 0, inputs: Sequence[np.ndarray] | None = None, name: str | None = None) -> LatencyStats:
    """Time ``model`` (bytes or path) with the ai-edge-litert interpreter.

    Sequence: create + allocate the interpreter (``init_ms``), one first invoke
    (``first_ms``, includes lazy packing of weights by XNNPACK), ``warmup`` untimed-in-stats
    invokes (``warmup_mean_ms``), then timed invokes until both ``runs`` invokes and
    ``min_secs`` seconds are done. Inputs are set once (seeded random unless given).
    """
    data = read_model_bytes(model)
    label = name or ("<bytes>" if isinstance(model, (bytes, bytearray, memoryview)) else str(model))
    return _time_side_by_side([data], [label], threads=threads, runs=runs, warmup=warmup, kernels=kernels,
                              delegates=[delegate], min_secs=min_secs, progress=progress, seed=seed, inputs=inputs,
                              description=f"{Path(label).name} ({kernels}, {threads}t)")[0]


def invoke_ms(interpreter) -> float:
    """One invoke, in milliseconds of wall time."""
    start = time.perf_counter()
    interpreter.invoke()
    return (time.perf_counter() - start) * 1e3


def time_round_robin(interpreters: dict[str, Any], runs: int, min_secs: float = 0.0,
                     advance: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Per-invoke milliseconds of already warmed-up interpreters, timed round-robin.

    Each round invokes every interpreter once, starting one further along each round, so a
    change of load on a shared machine hits all of them alike and none always runs right
    after the same neighbour: the side-by-side measurement every ratio here is taken from.
    Rounds go on until ``runs`` rounds and ``min_secs`` seconds are both done.
    """
    names = list(interpreters)
    samples: dict[str, list[float]] = {name: [] for name in names}
    began = time.perf_counter()
    round_index = 0
    while round_index < runs or time.perf_counter() - began < min_secs:
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(invoke_ms(interpreters[name]))
            if advance is not None:
                advance()
        round_index += 1
    return samples


@dataclass
class BenchComparison:
    """Several models timed under one configuration; speedups are against the first model's median."""
    stats: list[LatencyStats]
    speedups: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"models": [s.to_dict() for s in self.stats], "speedups_vs_first": self.speedups}


def compare_models(models: Sequence[ModelLike], *, threads: int = 1, runs: int = 50, warmup: int = 5,
                   kernels: str = "xnnpack", delegate: Any = None, min_secs: float = 0.0,
                   progress: bool | Callable[[int, int], None] = True, seed: int = 0,
                   interleave: bool = True, also_without_delegate: bool = False) -> BenchComparison:
    """Time several models under one configuration; speedup_i = median_0 / median_i.

    With ``interleave`` (the default) every model is loaded and warmed up first, then the timed
    invokes go round-robin (:func:`time_round_robin`), so load changes on a shared machine hit
    all models alike (what a side-by-side ratio needs). ``min_secs`` then bounds the whole timed
    phase. Without it, ``time_model`` runs on each model in turn. ``also_without_delegate``
    times each model twice, without and then with ``delegate`` (e.g. a stock model on
    XNNPACK alone against XNNPACK plus the WBMM delegate with ``claim_depthwise``).
    """
    if not models:
        raise ValueError("no model to benchmark")
    if also_without_delegate and delegate is None:
        raise ValueError("also_without_delegate needs a delegate")
    # Read every file first so a missing or corrupt one fails before minutes of timing.
    blobs = [read_model_bytes(model) for model in models]
    labels = ["<bytes>" if isinstance(m, (bytes, bytearray, memoryview)) else str(m) for m in models]
    entries = [(m, data, label, d) for m, data, label in zip(models, blobs, labels)
               for d in ((None, delegate) if also_without_delegate else (delegate,))]
    if not interleave or len(entries) == 1:
        stats = [time_model(m, threads=threads, runs=runs, warmup=warmup, kernels=kernels, delegate=d,
                            min_secs=min_secs, progress=progress, seed=seed) for m, _, _, d in entries]
    else:
        stats = _time_side_by_side([data for _, data, _, _ in entries], [label for _, _, label, _ in entries],
                                   threads=threads, runs=runs, warmup=warmup, kernels=kernels,
                                   delegates=[d for _, _, _, d in entries], min_secs=min_secs,
                                   progress=progress, seed=seed)
    base = stats[0].median_ms
    return BenchComparison(stats, [base / s.median_ms if s.median_ms > 0 else float("inf") for s in stats])


def _time_side_by_side(blobs: list[bytes], labels: list[str], *, threads: int, runs: int, warmup: int,
                       kernels: str, delegates: Sequence[Any], min_secs: float, progress, seed: int,
                       inputs: Sequence[np.ndarray] | None = None, description: str | None = None) -> list[LatencyStats]:
    """``delegates[i]`` (or None) is applied to ``blobs[i]``."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    interpreters, init_ms, first_ms, warm = {}, {}, {}, {}
    bar = ProgressBar(progress is True, len(blobs) * (1 + warmup + runs),
                      description or f"{len(blobs)} models interleaved ({kernels}, {threads}t)",
                      callback=(lambda done, total, _label: progress(done, total)) if callable(progress) else None)
    try:
        for index, data in enumerate(blobs):
            start = time.perf_counter()
            interpreter = load_interpreter(data, threads=threads, kernels=kernels, delegate=delegates[index])
            init_ms[index] = (time.perf_counter() - start) * 1e3
            values = list(inputs) if inputs is not None else random_inputs(interpreter, seed)
            for detail, value in zip(interpreter.get_input_details(), values):
                interpreter.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]))
            first_ms[index] = invoke_ms(interpreter)
            bar.advance()
            warm[index] = []
            for _ in range(warmup):
                warm[index].append(invoke_ms(interpreter))
                bar.advance()
            interpreters[index] = interpreter
        timed = time_round_robin(interpreters, runs, min_secs=min_secs, advance=bar.advance)
    finally:
        bar.close()
    return [LatencyStats(model=label, model_bytes=len(data), model_sha256=hashlib.sha256(data).hexdigest(),
                         kernels=kernels, threads=threads, delegate=_describe_delegate(delegates[index]),
                         runs_ms=timed[index], init_ms=init_ms[index], first_ms=first_ms[index],
                         warmup_mean_ms=float(np.mean(warm[index])) if warm[index] else float("nan"),
                         warmup=warmup, **summarize(timed[index]))
            for index, (label, data) in enumerate(zip(labels, blobs))]
