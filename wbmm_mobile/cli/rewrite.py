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
                             "(default: xnnpack; `builtin` and `delegate` are the old names of cpu and wbmm). "
                             "qualcomm-htp and ethos-u (npu extra) compile every candidate with the NPU's own "
                             "compiler (SM8650 and SM8750; ethos-u55-256) and keep only rewrites whose ops all "
                             "stay on the NPU; for ethos-u the cheapest by Vela's estimate, often the conv itself; "
                             "int8 models stay integer")
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
    parser.add_argument("--strategy-table", metavar="TABLE.json", default=None,
                        help="with --strategy auto: pick from a device's table measured by `wbmm-mobile tune` "
                             "(nearest measured shape; a table of another device or thread count is refused)")
    parser.add_argument("--device", metavar="SERIAL", default=None,
                        help="with --strategy auto: the device the model is for; its table is looked up in "
                             "~/.cache/wbmm-mobile/tables (where tune keeps a copy), or checked in --strategy-table")
    parser.add_argument("--threads", type=at_least(1), default=None, metavar="N",
                        help="the thread count the model will run at: the table's entry for it (default: the "
                             "table's only one)")
    parser.add_argument("--inputs", metavar="NPZ", default=None,
                        help="extra verification inputs: an .npz with one array per model input (by input name, "
                             "or in order); seeded random inputs are always used too")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random verification inputs (default: 0)")
    parser.add_argument("--keep-dynamic-shapes", action="store_true",
                        help="leave RESHAPE targets that the model computes at run time as they are (by default "
                             "they become constants, -1 for the batch, so XNNPACK can take the whole graph)")
    parser.add_argument("--allow-float-islands", action="store_true",
                        help="int8/int16 models: also allow the rewrites that have no integer form (split, dilated, "
                             "halo, windowed), each run in float32 between DEQUANTIZE and QUANTIZE; the model then "
                             "becomes mixed precision (the report says so, with the size change). Without it "
                             "integer models stay integer (builtin_kernel, the int8 custom op, or the layer is "
                             "kept). Refused for integer-only targets (nnapi)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip running the rewritten model against the original (not recommended)")
    add_json_argument(parser, "the report (also when verification fails)", "--report")


def run(args: argparse.Namespace) -> int:
    import sys

    from converters.rewrite import RewriteOptions, rewrite_file
    from wbmm_mobile.cli._output import emit_json, json_to_stdout, stdout_console

    console = stdout_console(args)   # a pipe or CI log gets whole values, not rich's 80 columns
    table = None
    if args.strategy_table or args.device or args.threads:
        from converters.strategy_table import load_for
        from wbmm_mobile.errors import StrategyTableError
        if args.measure or args.strategy != "auto":
            raise StrategyTableError("a strategy table answers --strategy auto only, without --measure")
        table = load_for(target=args.target, path=args.strategy_table, device=args.device, threads=args.threads)
    options = RewriteOptions(mode=args.mode, strategy=args.strategy, target=args.target, min_kernel=args.min_kernel,
                             measure=args.measure, strategy_table=table, verify=not args.no_verify,
                             inputs=args.inputs, seed=args.seed,
                             progress=sys.stderr.isatty(), static_shapes=not args.keep_dynamic_shapes,
                             allow_float_islands=args.allow_float_islands)
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
    if report.strategy_table:
        from rich.markup import escape
        console.print(f"strategy table: {escape(report.strategy_table)}")
    for note in report.notes:
        console.print(f"note: {note}")
    if report.npu_placement is not None:
        console.print(f"NPU placement: {report.npu_placement.summary}", highlight=False, markup=False)
    if report.verification_note:
        console.print(f"verification: {report.verification_note}")
    if report.mixed_precision:
        console.print(f"[bold yellow]precision:[/bold yellow] {report.precision_note}")
    for warning in report.warnings:
        if warning not in (report.verification_note, report.precision_note):
            console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
