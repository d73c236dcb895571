"""``wbmm-mobile compare``: tables, plots and a markdown report from profile results."""

from __future__ import annotations

import argparse

from wbmm_mobile.cli._output import add_json_argument, emit_json, json_to_stdout

HELP = "compare profile results: latency table per device and config, speedup with WBMM, energy, plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder written by `wbmm-mobile profile --out` (or its runs.jsonl)")
    parser.add_argument("--out", default=None,
                        help="where to write the PNG plots and report.md (default: the results folder)")
    parser.add_argument("--npu-check", metavar="JSON", default=None,
                        help="NPU placement records (`wbmm-mobile npu-check --json`) to show next to the latencies "
                             "(default: npu_check.json in the results folder, if there is one)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (default: write them)")
    add_json_argument(parser, "the comparison (rows, failed runs, sweeps, files written)")


def run(args: argparse.Namespace) -> int:
    import sys

    from wbmm_mobile.compare import compare, format_table

    comparison = compare(args.results, out_dir=args.out, plots=not args.no_plots, npu_check=args.npu_check)
    out = sys.stderr if json_to_stdout(args) else sys.stdout   # `--json -`: stdout holds the JSON alone
    print(format_table(comparison), end="", file=out)
    for plot in comparison.plots:
        print(f"plot: {plot}", file=out)
    if comparison.report:
        print(f"report: {comparison.report}", file=out)
    emit_json(comparison, args)
    if args.json and not json_to_stdout(args):
        print(f"wrote {args.json}")
    return 0
