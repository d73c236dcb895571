"""``wbmm-mobile demo`` (what ``make demo`` runs), over ``wbmm_mobile.demo.run_demo``."""

from __future__ import annotations

import argparse

HELP = "build, convert and benchmark the small WBMM-P-like demo network and its 13x13 depthwise twin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="results/demo",
                        help="where the two .tflite files, demo.json and demo.md go (default: results/demo)")
    parser.add_argument("--runs", type=int, default=50, help="timed invokes per model (default: 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed invokes first (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    parser.add_argument("--kernels", choices=("xnnpack", "builtin"), default="xnnpack",
                        help="XNNPACK (the runtime default) or TFLite's builtin kernels (default: xnnpack)")
    parser.add_argument("--seed", type=int, default=0, help="weights and input seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from wbmm_mobile.demo import run_demo
    from wbmm_mobile.report import bench_table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    result = run_demo(args.out, runs=args.runs, warmup=args.warmup, threads=args.threads, kernels=args.kernels,
                      seed=args.seed, log=lambda line: console.print(line, highlight=False, markup=False))
    console.print(bench_table(result.comparison, title="demo: 13x13 depthwise twin vs WBMM (bmm lowering)"))
    console.print(f"WBMM model is {result.speedup:.2f}x the speed of its 13x13 twin (ratio of medians)",
                  highlight=False, markup=False)
    console.print(f"wrote {result.json_path} and {result.markdown_path}", highlight=False, markup=False)
    return 0
