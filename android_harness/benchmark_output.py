"""Read (and write) what TFLite's ``benchmark_model`` prints, across its versions.

One module owns the text format both ways: ``parse_benchmark_output`` turns a
run's stdout+stderr into a ``BenchmarkOutput`` dataclass, and the ``format_*``
functions print the same lines, so ``wbmm-mobile-benchmark`` (the Linux runner)
is read by the very parser that reads a phone. It is not a runner and knows
nothing about devices.

Formats handled (the facts come from the published tool; the code is ours):
- summary, TF >= 2.3: ``Inference timings in us: Init: I, First inference: F,
  Warmup (avg): W, Inference (avg): A``;
- summary, TF 1.13-2.2: ``Average inference timings in us: Warmup: W, Init: I,
  Inference: A`` and the older ``..., no stats: A``;
- stats lines ``count=N first= curr= min= max= avg= std=`` with or without
  ``p5= median= p95=`` (StatWithPercentiles, newer builds), ``count=N curr=X``
  plus ``(all same)`` when every run took the same time, and ``count=0``;
- memory: ``Memory footprint delta from the start of the tool (MB): init= overall=``,
  the older ``Peak memory footprint (MB): init= overall=`` and
  ``Overall peak memory footprint (MB) via periodic monitoring: P``;
- delegate coverage: ``Explicitly applied X delegate, and the model graph will be
  completely executed`` / ``partially executed by the delegate w/ K delegate
  kernels`` / ``Though X delegate is explicitly applied, ... will not be executed``,
  and ``Replacing N out of M node(s) with delegate (K)``;
- op profiling with ``--op_profiling_output_mode=csv`` (with and without the
  ``start`` column of newer builds).

Two outputs are errors even though the tool may print timings:
``Benchmarking failed.`` (the run did not finish) and ``Unconsumed cmdline
flags`` -- benchmark_model only warns, but a binary that ignored
``--use_xnnpack`` or ``--external_delegate_path`` measured a different
configuration than the one we would label the numbers with.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from wbmm_mobile.errors import (
    BenchmarkFailedError,
    BenchmarkFlagsIgnoredError,
    BenchmarkOutputError,
)

__all__ = [
    "RunStats",
    "DelegateApplication",
    "NodeReplacement",
    "MemoryFootprint",
    "OpProfileRow",
    "OpTypeSummary",
    "BenchmarkOutput",
    "parse_benchmark_output",
    "parse_stats_line",
    "stats_from_samples",
    "tflite_percentile",
    "format_number",
    "format_stats_line",
    "format_summary_line",
    "format_delegate_line",
]

# benchmark_model prefixes lines with its log level ("INFO: ") in newer builds,
# with nothing in older ones, and adb/logcat may add a tag: strip any of these.
_LEVEL_PREFIX = re.compile(r"^\s*(?:(?:INFO|WARN|WARNING|ERROR|VERBOSE|DEBUG)\s*:\s*)?")
_NUMBER = r"[-+]?(?:nan|inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"

_CURRENT_SUMMARY = re.compile(
    rf"Inference timings in us:\s*Init:\s*(?P<init>{_NUMBER}),\s*First inference:\s*(?P<first>{_NUMBER}),"
    rf"\s*Warmup \(avg\):\s*(?P<warmup>{_NUMBER}),\s*Inference \(avg\):\s*(?P<inference>{_NUMBER})",
    re.IGNORECASE)
_AVERAGE_SUMMARY = re.compile(
    rf"Average inference timings in us:\s*Warmup:\s*(?P<warmup>{_NUMBER}),\s*Init:\s*(?P<init>{_NUMBER}),"
    rf"\s*(?P<label>Inference|no stats):\s*(?P<inference>{_NUMBER})",
    re.IGNORECASE)
_STATS_LINE = re.compile(r"^count=(?P<count>\d+)(?P<rest>.*)$")
_STATS_FIELD = re.compile(rf"(?P<key>first|curr|min|max|avg|std|p5|median|p95)=(?P<value>{_NUMBER})", re.IGNORECASE)
_RUNNING = re.compile(r"^Running benchmark for (?:at least )?\d+ iterations")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\):\s*(?P<mb>{_NUMBER})")
_MEMORY_DELTA = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\):\s*init=(?P<init>{_NUMBER})\s+overall=(?P<overall>{_NUMBER})")
_MEMORY_PEAK_OLD = re.compile(
    rf"^Peak memory footprint \(MB\):\s*init=(?P<init>{_NUMBER})\s+overall=(?P<overall>{_NUMBER})")
_MEMORY_PEAK_MONITOR = re.compile(
    rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*(?P<peak>{_NUMBER})")
_DELEGATE_FULL = re.compile(
    r"Explicitly applied (?P<name>\S+) delegate, and the model graph will be completely executed")
_DELEGATE_PARTIAL = re.compile(
    r"Explicitly applied (?P<name>\S+) delegate, and the model graph will be partially executed"
    r" by the delegate w/ (?P<kernels>\d+) delegate kernels")
_DELEGATE_NONE = re.compile(
    r"Though (?P<name>\S+) delegate is explicitly applied, the model graph will not be executed")
_REPLACING = re.compile(
    r"Replacing (?P<replaced>\d+) out of (?P<total>\d+) node\(s\) with delegate \((?P<kernel>[^)]*)\) node"
    r"(?:, yielding (?P<partitions>\d+) partitions)?")
_UNCONSUMED = re.compile(r"Unconsumed cmdline flags:\s*(?P<flags>.*\S)")
_FAILED = re.compile(r"Benchmarking failed\.")
_PROFILE_SECTION = re.compile(
    r"^(?:(?P<regular>Operator-wise Profiling Info for Regular Benchmark Runs)"
    r"|(?P<init>Profiling Info for Benchmark Initialization))\s*:")
_TABLE_TITLE = re.compile(r"^=+ (?P<title>.+?) =+$")


@dataclass(frozen=True)
class RunStats:
    """One ``count=...`` line: the tool's statistics of a set of runs, in microseconds.

    ``median_us``/``p5_us``/``p95_us`` are None when the build does not print
    percentiles; every field but ``count`` is None for ``count=0``.
    """

    count: int
    first_us: float | None = None
    last_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False

    @property
    def has_percentiles(self) -> bool:
        return self.median_us is not None


@dataclass(frozen=True)
class DelegateApplication:
    """What the tool said about one delegate it was asked to apply."""

    delegate: str          # the tool's name for it: XNNPACK, GPU, NNAPI, EXTERNAL, ...
    coverage: str          # "full", "partial" or "none"
    kernels: int | None = None  # delegate kernels (partitions) when partial


@dataclass(frozen=True)
class NodeReplacement:
    """``Replacing N out of M node(s) with delegate (K) node``: the runtime's own count."""

    delegate_kernel: str
    replaced: int
    total: int
    partitions: int | None = None


@dataclass(frozen=True)
class MemoryFootprint:
    """Memory lines. ``kind`` says which line the numbers came from: "delta"
    (footprint delta since the tool started, newer builds) or "peak_rss" (older
    builds' max RSS)."""

    init_mb: float
    overall_mb: float
    kind: str
    peak_mb: float | None = None


@dataclass(frozen=True)
class OpProfileRow:
    """One operator row of a CSV op-profiling table."""

    section: str      # "init" or "regular"
    table: str        # "Run Order", "Top by Computation Time", ...
    node_type: str
    start_ms: float | None
    first_ms: float
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int
    name: str


@dataclass(frozen=True)
class OpTypeSummary:
    """One row of the CSV ``Summary by node type`` table."""

    section: str
    node_type: str
    count: int
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int


@dataclass(frozen=True)
class BenchmarkOutput:
    """Everything one ``benchmark_model`` run printed that we use."""

    summary_format: str               # "current", "average" or "average_no_stats"
    init_us: float
    inference_avg_us: float
    warmup_avg_us: float | None
    first_inference_us: float | None  # not printed by the "average" forms
    warmup: RunStats | None
    inference: RunStats | None
    model_size_mb: float | None = None
    memory: MemoryFootprint | None = None
    delegates: tuple[DelegateApplication, ...] = ()
    replacements: tuple[NodeReplacement, ...] = ()
    op_profile: tuple[OpProfileRow, ...] = ()
    op_types: tuple[OpTypeSummary, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def _strip(line: str) -> str:
    return _LEVEL_PREFIX.sub("", line.rstrip("\r\n"), count=1).strip()


def _num(text: str) -> float:
    return float(text)  # float() reads "nan", "-nan", "inf" and exponents as C++ prints them


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


def parse_stats_line(line: str) -> RunStats:
    """Parse one ``count=...`` line (level prefix allowed). Raises ValueError if it is not one."""
    text = _strip(line)
    match = _STATS_LINE.match(text)
    if not match:
        raise ValueError(f"not a benchmark_model stats line: {line!r}")
    count = int(match["count"])
    rest = match["rest"]
    values = {m["key"].lower(): _num(m["value"]) for m in _STATS_FIELD.finditer(rest)}
    percentiles = {k: values.get(k) for k in ("p5", "median", "p95")}
    if count == 0:
        # Percentiles of an empty set print as 0 (an int64 NaN): they mean nothing.
        return RunStats(count=0)
    if "first" not in values:
        # "count=N curr=X" (N == 1) or "count=N curr=X(all same)": every run took X.
        current = values.get("curr")
        if current is None:
            raise ValueError(f"stats line without curr=: {line!r}")
        return RunStats(count=count, first_us=current, last_us=current, min_us=current, max_us=current,
                        avg_us=current, std_us=0.0, p5_us=percentiles["p5"],
                        median_us=percentiles["median"], p95_us=percentiles["p95"],
                        all_same=True)
    missing = [k for k in ("curr", "min", "max", "avg", "std") if k not in values]
    if missing:
        raise ValueError(f"stats line lacks {', '.join(missing)}: {line!r}")
    return RunStats(count=count, first_us=values["first"], last_us=values["curr"], min_us=values["min"],
                    max_us=values["max"], avg_us=values["avg"], std_us=values["std"],
                    p5_us=percentiles["p5"], median_us=percentiles["median"], p95_us=percentiles["p95"])


def _split_csv_row(text: str, columns: int) -> list[str]:
    # The name is the last column and may itself contain ", " (the tool turns
    # commas inside names into tabs, but be lenient): split at most columns-1 times.
    return [part.strip() for part in text.split(",", columns - 1)]


def _percent(text: str) -> float:
    return float(text.rstrip("%"))


def _error_words(lines: list[str]) -> str:
    errors = [_strip(line) for line in lines if re.match(r"^\s*(ERROR|E\s)", line)]
    errors = [e for e in errors if e and not _FAILED.search(e)]
    return "; ".join(errors[-3:])


def _tail(text: str, lines: int = 5) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def parse_benchmark_output(text: str, *, allow_ignored_flags: bool = False) -> BenchmarkOutput:
    """Parse the combined stdout/stderr of one benchmark_model run.

    Raises ``BenchmarkFailedError`` when the tool said ``Benchmarking failed.``
    (message: its ERROR lines), ``BenchmarkFlagsIgnoredError`` when it ignored
    flags (unless ``allow_ignored_flags``), ``BenchmarkOutputError`` when no
    timing summary is found (a crash, garbage). Each carries the full output.
    """
    raw_lines = text.splitlines()
    if any(_FAILED.search(line) for line in raw_lines):
        words = _error_words(raw_lines) or _tail(text)
        raise BenchmarkFailedError(f"benchmark_model failed: {words}", output=text)

    warnings: list[str] = []
    stats: list[RunStats] = []
    expect_stats = False
    summary: dict[str, float | str | None] | None = None
    model_size = None
    memory_init = memory_overall = memory_kind = memory_peak = None
    delegates: list[DelegateApplication] = []
    replacements: list[NodeReplacement] = []
    op_rows: list[OpProfileRow] = []
    op_types: list[OpTypeSummary] = []
    section = table = None
    header: list[str] | None = None
    ignored_flags = None

    for raw in raw_lines:
        line = _strip(raw)
        if not line:
            continue
        if match := _UNCONSUMED.search(line):
            ignored_flags = match["flags"]
            warnings.append(line)
            continue
        if _RUNNING.match(line):
            expect_stats = True
            continue
        if expect_stats and line.startswith("count="):
            # Only the line right after "Running benchmark ..." is a run's stats;
            # profiler summaries print "Timings (microseconds): count=..." elsewhere.
            stats.append(parse_stats_line(line))
            expect_stats = False
            continue
        expect_stats = False
        if match := _CURRENT_SUMMARY.search(line):
            summary = {"format": "current", "init": _num(match["init"]), "first": _num(match["first"]),
                       "warmup": _num(match["warmup"]), "inference": _num(match["inference"])}
            continue
        if match := _AVERAGE_SUMMARY.search(line):
            label = "average_no_stats" if match["label"].lower() == "no stats" else "average"
            summary = {"format": label, "init": _num(match["init"]), "first": None,
                       "warmup": _num(match["warmup"]), "inference": _num(match["inference"])}
            continue
        if match := _MODEL_SIZE.search(line):
            model_size = _num(match["mb"])
            continue
        if match := _MEMORY_DELTA.search(line):
            memory_init, memory_overall, memory_kind = _num(match["init"]), _num(match["overall"]), "delta"
            continue
        if match := _MEMORY_PEAK_OLD.search(line):
            memory_init, memory_overall, memory_kind = _num(match["init"]), _num(match["overall"]), "peak_rss"
            continue
        if match := _MEMORY_PEAK_MONITOR.search(line):
            memory_peak = _num(match["peak"])
            continue
        if match := _DELEGATE_PARTIAL.search(line):
            delegates.append(DelegateApplication(match["name"], "partial", int(match["kernels"])))
            continue
        if match := _DELEGATE_FULL.search(line):
            delegates.append(DelegateApplication(match["name"], "full"))
            continue
        if match := _DELEGATE_NONE.search(line):
            delegates.append(DelegateApplication(match["name"], "none", 0))
            continue
        if match := _REPLACING.search(line):
            partitions = match["partitions"]
            replacements.append(NodeReplacement(match["kernel"], int(match["replaced"]), int(match["total"]),
                                                int(partitions) if partitions else None))
            continue
        # Op profiling tables: a section line, "=== title ===", a CSV header, rows.
        if match := _PROFILE_SECTION.match(line):
            section = "regular" if match["regular"] else "init"
            table, header = None, None
            continue
        if section is not None:
            if match := _TABLE_TITLE.match(line):
                table, header = match["title"], None
                continue
            if table is not None and header is None and line.lower().startswith("node type,"):
                header = [h.strip().lower() for h in line.split(",")]
                continue
            if table is not None and header is not None and "," in line:
                parts = _split_csv_row(line, len(header))
                if len(parts) == len(header):
                    row = dict(zip(header, parts))
                    try:
                        if table == "Summary by node type":
                            op_types.append(OpTypeSummary(
                                section, row["node type"], int(row["count"]), float(row["avg_ms"]),
                                _percent(row["avg %"]), _percent(row["cdf %"]), float(row["mem kb"]),
                                int(row["times called"])))
                        else:
                            op_rows.append(OpProfileRow(
                                section, table, row["node type"],
                                float(row["start"]) if "start" in row else None,
                                float(row["first"]), float(row["avg_ms"]), _percent(row["%"]),
                                _percent(row["cdf%"]), float(row["mem kb"]), int(row["times called"]),
                                row["name"].replace("\t", ",")))
                        continue
                    except (KeyError, ValueError):
                        pass  # a row we cannot read is reported with the others below
                warnings.append(f"unreadable op-profiling row: {line}")
                continue
            if line.startswith(("Number of nodes executed", "Timings (microseconds)", "Memory (bytes)",
                                "Primary graph", "Subgraph", "Delegate internal")) \
                    or line.endswith("nodes observed"):
                continue

    if ignored_flags and not allow_ignored_flags:
        raise BenchmarkFlagsIgnoredError(
            f"benchmark_model ignored flags it does not know: {ignored_flags} "
            "(the binary is older than these flags; its numbers would be mislabelled)",
            output=text, flags=ignored_flags)
    if summary is None:
        raise BenchmarkOutputError(
            f"no timing summary in benchmark_model output (crash or not benchmark_model?): {_tail(text, 3)!s:.300}",
            output=text)

    warmup_stats = stats[0] if len(stats) >= 1 else None
    inference_stats = stats[1] if len(stats) >= 2 else None
    if len(stats) == 1:
        # Builds without warm-up print a single stats line: it is the timed runs.
        warmup_stats, inference_stats = None, stats[0]
    memory = None
    if memory_kind is not None:
        memory = MemoryFootprint(memory_init, memory_overall, memory_kind, memory_peak)
    elif memory_peak is not None:
        memory = MemoryFootprint(math.nan, math.nan, "monitor", memory_peak)
    return BenchmarkOutput(
        summary_format=str(summary["format"]),
        init_us=float(summary["init"]),
        inference_avg_us=float(summary["inference"]),
        warmup_avg_us=_optional(float(summary["warmup"])) if summary["warmup"] is not None else None,
        first_inference_us=summary["first"] if summary["first"] is None else float(summary["first"]),
        warmup=warmup_stats,
        inference=inference_stats,
        model_size_mb=model_size,
        memory=memory,
        delegates=tuple(delegates),
        replacements=tuple(replacements),
        op_profile=tuple(op_rows),
        op_types=tuple(op_types),
        warnings=tuple(warnings),
    )


# ---- writing the same lines (used by wbmm-mobile-benchmark) --------------------------------

def format_number(value: float) -> str:
    """A double as C++ ``std::ostream <<`` prints it by default (6 significant digits)."""
    if math.isnan(value):
        return "nan"
    return f"{value:g}"


def _integer(value: float) -> str:
    # The tool's per-run values, std and percentiles are int64: printed exactly.
    return str(int(round(value)))


def tflite_percentile(sorted_values: list[float], percentile: int) -> float:
    """The tool's percentile: the element at index ``n * p / 100`` of the sorted runs
    (no interpolation), the last element for p = 100."""
    if not sorted_values:
        return math.nan
    if percentile >= 100:
        return sorted_values[-1]
    return sorted_values[len(sorted_values) * percentile // 100]


def stats_from_samples(samples_us: list[int]) -> RunStats:
    """RunStats of integer microsecond samples, computed the way the tool computes them
    (population std truncated to an integer, percentiles by index)."""
    if not samples_us:
        return RunStats(count=0)
    ordered = sorted(samples_us)
    count = len(samples_us)
    avg = sum(samples_us) / count
    all_same = ordered[0] == ordered[-1]
    variance = sum(v * v for v in samples_us) / count - avg * avg
    std = 0 if all_same else int(math.sqrt(max(variance, 0.0)))
    return RunStats(count=count, first_us=float(samples_us[0]), last_us=float(samples_us[-1]),
                    min_us=float(ordered[0]), max_us=float(ordered[-1]), avg_us=avg, std_us=float(std),
                    p5_us=float(tflite_percentile(ordered, 5)), median_us=float(tflite_percentile(ordered, 50)),
                    p95_us=float(tflite_percentile(ordered, 95)), all_same=all_same)


def format_stats_line(stats: RunStats, *, percentiles: bool = True) -> str:
    """The ``count=...`` line for these stats (without the log-level prefix)."""
    if stats.count == 0:
        text = "count=0"
        return text + (" p5=0 median=0 p95=0" if percentiles else "")
    n = _integer
    if stats.all_same:
        text = f"count={stats.count} curr={n(stats.last_us)}" + ("(all same)" if stats.count > 1 else "")
    else:
        text = (f"count={stats.count} first={n(stats.first_us)} curr={n(stats.last_us)} min={n(stats.min_us)}"
                f" max={n(stats.max_us)} avg={format_number(stats.avg_us)} std={n(stats.std_us)}")
    if percentiles:
        text += f" p5={n(stats.p5_us)} median={n(stats.median_us)} p95={n(stats.p95_us)}"
    return text


def format_summary_line(init_us: float, first_us: float, warmup_avg_us: float, inference_avg_us: float) -> str:
    """The current summary line (without the log-level prefix)."""
    n = format_number
    return (f"Inference timings in us: Init: {_integer(init_us)}, First inference: {_integer(first_us)}, "
            f"Warmup (avg): {n(warmup_avg_us)}, Inference (avg): {n(inference_avg_us)}")


def format_delegate_line(delegate: str, replaced_nodes: int, total_nodes: int, kernels: int) -> str:
    """The tool's sentence about how much of the graph a delegate took."""
    if total_nodes > 0 and replaced_nodes >= total_nodes:
        return f"Explicitly applied {delegate} delegate, and the model graph will be completely executed by the delegate."
    if kernels > 0:
        return (f"Explicitly applied {delegate} delegate, and the model graph will be partially executed by the "
                f"delegate w/ {kernels} delegate kernels.")
    return f"Though {delegate} delegate is explicitly applied, the model graph will not be executed by the delegate."
