"""``wbmm-mobile rewrite``: rewrite the large depthwise convs of a .tflite, verify, write.

A thin wrapper over ``converters.rewrite.rewrite_file``; prints the per-layer report as
a table (and writes it as JSON with --report). Nothing heavy is imported at module
import time, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse

from wbmm_mobile.cli._arguments import at_least, backend_name
from wbmm_mobile.cli._output import add_json_argument

HELP = "rewrite large depthwise convolutions of a .tflite (exactly, or as WBMM windows)"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The one list of targets and strategies (numpy-only module: --help stays fast).
    from converters.strategy import STRATEGIES, TARGETS

    parser.add_argument("input", metavar="IN.tflite", help="the model to rewrite")
    parser.add_argument("-o", "--output", metavar="OUT.tflite", required=True,
                        help="where to write the rewritten model (written only after verification passes)")
    parser.add_argument("--mode", choices=("exact", "windowed"), default="exact",
                        help="exact: same function up to float rounding (default); windowed: each odd KxK conv "
                             "becomes WBMM with window (K+1)/2, which changes the function (a warning and the "
                             "measured deviation are reported)")
    parser.add_argument("--min-kernel", type=at_least(1), default=7, metavar="K",
                        help="rewrite only kernels with max(kh, kw) >= K (default: 7)")
    parser.add_argument("--target", type=backend_name(TARGETS, "target"), default="xnnpack", metavar="|".join(TARGETS),
                        help="the backend the model is for; decides what `auto` picks and which kernels verify it "
                             "(default: xnnpack; `builtin` and `delegate` are the old names of cpu and wbmm)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="exact rewrite per layer: split (sum of <=5x5 depthwise convs), dilated (sum of "
                             "centred dilated depthwise convs of <=25 taps reading the input itself; 7x7 and 9x9), "
                             "halo (tiled batched "
                             "matmul), custom (WBMM_DEPTHWISE op for the wbmm delegate), builtin_kernel (keep the "
                             "conv but route it to TFLite's own kernel under XNNPACK), or auto: picked per layer "
                             "for --target from measurements, possibly keeping a layer (default: auto). In windowed mode `custom` emits the "
                             "WBMM custom op, anything else builtin ops")
    parser.add_argument("--measure", action="store_true",
                        help="with --strategy auto: time the candidates on this machine for each layer shape "
                             "instead of using the shipped measurements (slower)")
    parser.add_argument("--inputs", metavar="NPZ", default=None,
                        help="extra verification inputs: an .npz with one array per model input (by input name, "
                             "or in order); seeded random inputs are always used too")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random verification inputs (default: 0)")
    parser.add_argument("--keep-dynamic-shapes", action="store_true",
                        help="leave RESHAPE targets that the model computes at run time as they are (by default "
                             "they become constants, -1 for the batch, so XNNPACK can take the whole graph)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the rewritten model against the original (not recommended)")
    add_json_argument(parser, "the report (also when verification fails)", "--report")


def run(args: argparse.Namespace) -> int:
    import sys

    from converters.rewrite import RewriteOptions, rewrite_file
    from wbmm_mobile.cli._output import emit_json, json_to_stdout, stdout_console

    console = stdout_console(args)   # a pipe or CI log gets whole values, not rich's 80 columns
    options = RewriteOptions(mode=args.mode, strategy=args.strategy, target=args.target, min_kernel=args.min_kernel,
                             measure=args.measure, verify=not args.no_verify, inputs=args.inputs, seed=args.seed,
                             progress=sys.stderr.isatty(), static_shapes=not args.keep_dynamic_shapes)
    # The library draws its own progress bar (on a terminal), so no spinner here.
    to_stdout = json_to_stdout(args)
    result = rewrite_file(args.input, args.output, options, report_path=None if to_stdout else args.json)
    print_report(result.report, console)
    console.print(f"wrote {args.output} ({result.report.bytes_before:,} -> {result.report.bytes_after:,} bytes)"
                  + (f", report {args.json}" if args.json and not to_stdout else ""))
    if to_stdout:
        emit_json(result.report.to_dict(), args)
    return 0


def print_report(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"{report.mode} rewrite for {report.target} (strategy {report.strategy}, "
                        f"min kernel {report.min_kernel})")
    for column in ("op", "layer", "kernel", "input", "type", "pad", "result", "why"):
        table.add_column(column, overflow="fold")
    for layer in report.layers:
        table.add_row(f"{layer.subgraph}:{layer.op_index} {layer.op}", layer.name, layer.kernel,
                      "x".join(str(s) for s in layer.input_shape), layer.precision, layer.padding,
                      f"[green]{layer.strategy}[/green]" if layer.rewritten else "[yellow]left alone[/yellow]",
                      layer.reason)
    console.print(table)
    console.print(f"{report.rewritten_count} of {len(report.layers)} depthwise convs rewritten")
    folding = report.static_shapes
    if folding is not None and (folding.folded or folding.left):
        console.print(f"run-time shapes: {folding.folded} RESHAPE targets made constant, {folding.ops_removed} shape "
                      f"ops removed" + (f"; left: {'; '.join(folding.left)}" if folding.left else ""))
    elif folding is not None and folding.reason:
        console.print(f"run-time shapes: not folded ({folding.reason})")
    if report.verification_note:
        console.print(f"verification: {report.verification_note}")
    for warning in report.warnings:
        if warning != report.verification_note:
            console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
