"""``wbmm-mobile-benchmark``: TFLite's ``benchmark_model`` for machines that have Python.

It takes the same flag names as ``benchmark_model`` for the subset it supports
(``--graph --num_threads --num_runs --warmup_runs --min_secs --use_xnnpack
--external_delegate_path --external_delegate_options``), times the model with
``converters.hostbench.time_model`` (the project's one timing loop, on the
ai-edge-litert interpreter, or tflite_runtime where only that is installed), and
prints the lines ``benchmark_model`` prints, written by
``android_harness.benchmark_output`` -- so the parser that reads a phone reads
this too. It is what the loopback device runs and what a Linux board
(Raspberry Pi, Jetson) runs. It is not a second timing implementation: the
timed runs are hostbench's ``runs_ms``; only the per-run warm-up times, which
hostbench averages, are taken as the intervals between its progress callbacks.

Like ``benchmark_model`` it warns about flags it does not know ("Unconsumed
cmdline flags") and goes on; it prints ``Benchmarking failed.`` and exits 1
when the model or the delegate cannot be loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from android_harness.benchmark_output import (
    format_delegate_line,
    format_number,
    format_stats_line,
    format_summary_line,
    stats_from_samples,
)
from delegates import parse_options as parse_delegate_options

# name -> (type, default, help). One table feeds the parser and --help.
FLAGS: list[tuple[str, type, object, str]] = [
    ("graph", str, None, "path of the .tflite model to benchmark (required)"),
    ("num_threads", int, -1, "number of threads; -1 lets the runtime choose (as benchmark_model)"),
    ("num_runs", int, 50, "minimum number of timed runs (see also --min_secs)"),
    ("warmup_runs", int, 1, "warm-up runs before the timed runs, after the first inference"),
    ("min_secs", float, 1.0, "minimum seconds of timed runs; more runs are made until it is reached"),
    ("use_xnnpack", bool, True, "true: XNNPACK (the runtime's default delegate); false: TFLite builtin kernels"),
    ("external_delegate_path", str, "", "path of an external delegate library (C ABI tflite_plugin_*)"),
    ("external_delegate_options", str, "", "options for it, 'key1:value1;key2:value2'"),
]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true or false)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbmm-mobile-benchmark",
        description="benchmark_model-compatible latency runner on the ai-edge-litert (or tflite_runtime) "
                    "interpreter. Flags use benchmark_model's names; unknown flags are reported as "
                    "'Unconsumed cmdline flags' and ignored.")
    for name, kind, default, help_text in FLAGS:
        converter = _parse_bool if kind is bool else kind
        parser.add_argument(f"--{name}", type=converter, default=default, metavar=kind.__name__.upper(),
                            help=f"{help_text} (default: {default if default not in ('', None) else 'none'})")
    return parser


def select_runtime() -> str:
    """Make ``ai_edge_litert.interpreter`` importable; on boards with only tflite_runtime,
    alias it there (same Interpreter/load_delegate/OpResolverType API) so hostbench runs
    unchanged. Returns the runtime's name."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        return "ai-edge-litert"
    except ImportError:
        pass
    import tflite_runtime.interpreter as runtime_interpreter  # raises ImportError when neither exists

    package = types.ModuleType("ai_edge_litert")
    package.interpreter = runtime_interpreter
    package.__path__ = []  # a package, so "import ai_edge_litert.interpreter" resolves
    sys.modules["ai_edge_litert"] = package
    sys.modules["ai_edge_litert.interpreter"] = runtime_interpreter
    return "tflite_runtime"


@dataclass(frozen=True)
class GraphCoverage:
    """How much of the primary graph the applied delegates took."""

    original_nodes: int
    replaced_nodes: int
    delegate_kernels: int


def delegate_coverage(interpreter) -> GraphCoverage | None:
    """Nodes replaced by delegate kernels, from the interpreter's node list.

    The list holds the original nodes followed by one ``DELEGATE`` node per delegate
    kernel; an original node still runs when a tensor the graph needs (an output, an
    input of a delegate kernel or of another running node) is produced by it and by
    no delegate kernel. Everything else was replaced.
    """
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    ops = details()
    kernels = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    if not kernels:
        return GraphCoverage(len(originals), 0, 0)
    delegated_tensors = {int(t) for op in kernels for t in op["outputs"]}
    producer = {int(t): op for op in originals for t in op["outputs"]}
    needed = [int(d["index"]) for d in interpreter.get_output_details()]
    needed += [int(t) for op in kernels for t in op["inputs"] if int(t) >= 0]
    running: set[int] = set()
    while needed:
        tensor = needed.pop()
        if tensor in delegated_tensors or tensor not in producer:
            continue
        op = producer[tensor]
        if op["index"] in running:
            continue
        running.add(op["index"])
        needed += [int(t) for t in op["inputs"] if int(t) >= 0]
    return GraphCoverage(len(originals), len(originals) - len(running), len(kernels))


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return float("nan")


class _WarmupClock:
    """Progress callback of hostbench.time_model: the interval between two calls is one
    invoke (plus microseconds of bookkeeping). Used only for the per-run warm-up times."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, done: int, total: int) -> None:
        self.stamps.append(time.perf_counter())

    def intervals_ms(self, count: int) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(self.stamps[:count], self.stamps[1:count + 1])]


def _say(line: str) -> None:
    print(f"INFO: {line}", flush=True)


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    _say("STARTING!")
    if unknown:
        print(f"WARN: Unconsumed cmdline flags: {' '.join(unknown)}", flush=True)
    _say("Log parameter values verbosely: [0]")
    if not args.graph:
        print("ERROR: Please specify the name of your TF Lite input file with --graph", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 1
    # benchmark_model's -1 means "the runtime's default": the interpreter's num_threads=None.
    threads = args.num_threads if args.num_threads > 0 else None
    _say(f"Min num runs: [{args.num_runs}]")
    _say(f"Min runs duration (seconds): [{format_number(args.min_secs)}]")
    _say(f"Num threads: [{threads}]")
    _say(f"Min warmup runs: [{args.warmup_runs}]")
    _say(f"Graph: [{args.graph}]")
    _say(f"#threads used for CPU inference: [{threads if threads else 'default'}]")
    _say(f"Use xnnpack: [{int(args.use_xnnpack)}]")
    if args.external_delegate_path:
        _say(f"External delegate path: [{args.external_delegate_path}]")
        _say(f"External delegate options: [{args.external_delegate_options}]")

    start_rss = _rss_mb()
    try:
        runtime = select_runtime()
        from ai_edge_litert.interpreter import load_delegate

        from converters.verify import load_interpreter
        from converters.hostbench import time_model

        graph = Path(args.graph)
        if not graph.is_file():
            raise FileNotFoundError(f"{graph}: no such model file")
        _say(f"Loaded model {graph}")
        _say(f"Initialized TensorFlow Lite runtime ({runtime}).")
        options = parse_delegate_options(args.external_delegate_options)

        def external_delegate():
            # One delegate instance per interpreter: instances are not shared.
            if not args.external_delegate_path:
                return None
            return load_delegate(args.external_delegate_path, options)

        kernels = "xnnpack" if args.use_xnnpack else "cpu"
        # The same interpreter setup hostbench uses, built once more only to read which
        # nodes the delegates took (benchmark_model prints that before timing).
        probe = load_interpreter(graph, threads=threads, kernels=kernels, delegate=external_delegate())
        if args.external_delegate_path:
            _say("EXTERNAL delegate created.")
        coverage = delegate_coverage(probe)
        del probe
        init_rss = _rss_mb()
        clock = _WarmupClock()
        stats = time_model(graph, threads=threads, runs=max(args.num_runs, 1), warmup=max(args.warmup_runs, 0),
                           kernels=kernels, delegate=external_delegate(), min_secs=max(args.min_secs, 0.0),
                           progress=clock)
    except Exception as exc:  # noqa: BLE001 - the tool's contract: one ERROR line, then "Benchmarking failed."
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"ERROR: {message}", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 1

    applied = [name for name, on in (("XNNPACK", args.use_xnnpack), ("EXTERNAL", bool(args.external_delegate_path)))
               if on]
    if coverage is not None and applied:
        # Several delegates share the DELEGATE nodes we can see: name them together.
        label = "+".join(applied)
        replaced, total = coverage.replaced_nodes, coverage.original_nodes
        if coverage.delegate_kernels:
            print(f"VERBOSE: Replacing {replaced} out of {total} node(s) with delegate ({label}) node, "
                  f"yielding {coverage.delegate_kernels} partitions for subgraph 0.", flush=True)
        _say(format_delegate_line(label, replaced, total, coverage.delegate_kernels))
    _say(f"The input model file size (MB): {format_number(stats.model_bytes / 1e6)}")
    _say(f"Initialized session in {format_number(stats.init_ms)}ms.")

    first_us = int(round(stats.first_ms * 1e3))
    warmup_us = [first_us] + [int(round(v * 1e3)) for v in clock.intervals_ms(stats.warmup + 1)[1:]]
    runs_us = [int(round(v * 1e3)) for v in stats.runs_ms]
    warmup_stats = stats_from_samples(warmup_us)
    run_stats = stats_from_samples(runs_us)
    _say(f"Running benchmark for at least {stats.warmup + 1} iterations and at least 0 seconds "
         f"but terminate if exceeding 150 seconds.")
    _say(format_stats_line(warmup_stats) + "\n")
    _say(f"Running benchmark for at least {args.num_runs} iterations and at least "
         f"{format_number(args.min_secs)} seconds but terminate if exceeding 150 seconds.")
    _say(format_stats_line(run_stats) + "\n")
    _say(format_summary_line(stats.init_ms * 1e3, first_us, warmup_stats.avg_us, run_stats.avg_us))
    end_rss = _rss_mb()
    _say("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
         "to the actual memory footprint of the model at runtime. Take the information at your discretion.")
    _say(f"Memory footprint delta from the start of the tool (MB): init={format_number(init_rss - start_rss)} "
         f"overall={format_number(end_rss - start_rss)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("ERROR: interrupted", flush=True)
        print("ERROR: Benchmarking failed.", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
