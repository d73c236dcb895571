"""``wbmm-mobile compare``: tables, plots and a markdown report from profile results."""

from __future__ import annotations

import argparse

HELP = "compare profile results: latency table per device and config, speedup with WBMM, energy, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder written by `wbmm-mobile profile --out` (or its runs.jsonl)")
    parser.add_argument("--out", default=None,
                        help="where to write the PNG plots and report.md (default: the results folder)")
    parser.add_argument("--npu-check", metavar="JSON", default=None,
                        help="NPU placement records (`wbmm-mobile npu-check --json`) to show next to the latencies "
                             "(default: npu_check.json in the results folder, if there is one)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (default: write them)")


def run(args: argparse.Namespace) -> int:
    from wbmm_mobile.compare import compare, format_table

    comparison = compare(args.results, out_dir=args.out, plots=not args.no_plots, npu_check=args.npu_check)
    print(format_table(comparison), end="")
    for plot in comparison.plots:
        print(f"plot: {plot}")
    if comparison.report:
        print(f"report: {comparison.report}")
    return 0
