"""``wbmm-mobile demo`` (what ``make demo`` runs), over ``wbmm_mobile.demo.run_demo``."""

from __future__ import annotations

import argparse

HELP = "the main job on a built-in example: convert, profile over ADB (phone or loopback), compare"


def _input_size(text: str) -> int:
    size = int(text)
    if size < 32:
        raise argparse.ArgumentTypeError(f"{size} is too small: the network downsamples 32x (at least 32)")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="results/demo",
                        help="where the .tflite files go; each run's records, table, plot, report.md, demo.md and "
                             "demo.json go to DIR/runs/<UTC time>/, linked as DIR/latest (default: results/demo)")
    parser.add_argument("--input-size", type=_input_size, default=224, metavar="N",
                        help="input is NxNx3; smaller is quicker, e.g. 64 for a smoke test (default: 224)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model and config (default: 30)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs first (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="weights and input seed (default: 0)")
    parser.add_argument("--benchmark-binary", default=None, metavar="PATH",
                        help="TFLite's benchmark_model for the phone's ABI; with it (or one in "
                             "~/.cache/wbmm-mobile/benchmark_model/<abi>/) a connected phone is used, else the "
                             "loopback device on this computer (default: none)")
    parser.add_argument("--device", action="append", default=[], metavar="SERIAL",
                        help="use this phone (repeatable); it must be attached (default: every attached phone)")
    parser.add_argument("--adb", default=None, metavar="HOST:PORT",
                        help="the ADB server to ask for phones (default: adb's own, 127.0.0.1:5037)")
    parser.add_argument("--delegate-lib", default=None, metavar="PATH",
                        help="libwbmm_delegate.so built for the phone's ABI (default: build/android-arm64/ on "
                             "arm64 phones, build/delegates/ on the loopback device)")
    parser.add_argument("--power", action="store_true",
                        help="also measure energy per inference from the battery (default: off)")
    parser.add_argument("--no-npu-check", dest="npu_check", action="store_false",
                        help="skip placing the models on the NPU targets (done by default when the npu extra "
                             "is installed; the report then shows the placement next to the latencies)")


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from wbmm_mobile.cli._output import stdout_console

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # TensorFlow's C++ info lines drown the progress

    from wbmm_mobile.demo import run_demo

    console = stdout_console(args)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    result = run_demo(args.out, input_size=args.input_size, runs=args.runs, warmup=args.warmup, threads=args.threads,
                      seed=args.seed, benchmark_binary=args.benchmark_binary, devices=args.device,
                      adb_server=args.adb, delegate_lib=args.delegate_lib, power=args.power, log=say,
                      npu_check=args.npu_check)
    console.rule("comparison (median, p5, p95 in ms; speedup vs xnnpack on the same model; vs base = vs the twin)")
    say(result.table.rstrip() or "no successful run to compare")
    if result.loopback:
        console.print(f"[bold yellow]profiled on {result.where}.\nThese are this computer's numbers, "
                      "not a phone's.[/bold yellow]", highlight=False)
    else:
        say(f"profiled on {result.where}")
    for headline in result.headlines:
        say(f"  {headline.what}: {headline.speedup:.2f}x")
    console.rule("files written")
    for path in result.files:
        say(f"  {path}")
    if result.problems:
        for problem in result.problems[1:]:
            say(f"  {problem}")
        print(f"wbmm-mobile: demo incomplete: {result.problems[0]}", file=sys.stderr)
        return 1
    return 0
