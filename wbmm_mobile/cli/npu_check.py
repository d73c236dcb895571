"""``wbmm-mobile npu-check``: which ops of each .tflite the NPU compilers put on the NPU, and why not the rest.

A thin wrapper over ``converters.npu.check_models``: a rich table on a terminal, the whole
plain text (``converters.npu.report.format_text``) in a pipe, and the records as JSON with
--json. Exit 0 when every compile ran (whatever it placed), 1 when a compiler crashed or timed
out, 2 on bad input or without the ``npu`` extra.
"""

from __future__ import annotations

import argparse

from wbmm_mobile.cli._output import add_json_argument

HELP = "which ops of a .tflite run on Qualcomm's HTP and Arm's Ethos-U, per the NPU compilers (npu extra)"

# Kept here, not imported from converters.npu, so --help imports nothing heavy; equal to
# converters.npu.QUALCOMM_DEFAULT / ETHOS_U_DEFAULT (a test checks).
_QUALCOMM_DEFAULT = "SM8650,SM8750"
_ETHOS_U_DEFAULT = "ethos-u55-256"


def _target_list(family: str):
    def parse(text: str):
        from converters.npu import parse_target

        names = [n for n in text.split(",") if n.strip()]
        if text.strip().lower() == "none":
            return []
        try:
            return [parse_target(family, name) for name in names]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compile each model ahead of time for Qualcomm Hexagon NPUs (LiteRT's Qualcomm plugin with the QNN "
        "libraries of onnxruntime-qnn) and for Arm Ethos-U (Vela), and report per model and target: ops on the "
        "NPU of the total, NPU partitions, placement per op type, every op left on the CPU with the compiler's "
        "reason, Vela's cycle and time estimate, and memory traffic. Nothing runs on a device. Needs the npu "
        "extra: SKIP_SDK_DOWNLOAD=1 pip install 'wbmm-mobile[npu]'.")
    parser.add_argument("models", nargs="+", metavar="MODEL.tflite", help="the models to check")
    parser.add_argument("--qualcomm", type=_target_list("qualcomm"), default=_QUALCOMM_DEFAULT, metavar="SOC,...",
                        help=f"Snapdragon SoCs to compile for, or none (default: {_QUALCOMM_DEFAULT}); e.g. SM8550, "
                             "SM8650 (8 Gen 3), SM8750 (8 Elite)")
    parser.add_argument("--ethos-u", type=_target_list("ethos-u"), default=_ETHOS_U_DEFAULT, metavar="CONFIG,...",
                        help=f"Ethos-U configurations, or none (default: {_ETHOS_U_DEFAULT}); e.g. ethos-u65-256, "
                             "ethos-u85-256. Integer models only: a float model is reported as not applicable")
    add_json_argument(parser, "the records as a list (model, target, compiled, ops_total, ops_npu, partitions, "
                              "per_op, cpu_ops, estimate_ms, ...)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds one compile may take before it counts as failed (default: 300)")


def run(args: argparse.Namespace) -> int:
    import sys

    from wbmm_mobile.cli._output import emit_json, json_to_stdout, stdout_console
    from converters.npu import check_models, write_json
    from converters.npu.report import format_text

    qualcomm = args.qualcomm if isinstance(args.qualcomm, list) else _target_list("qualcomm")(args.qualcomm)
    ethos = args.ethos_u if isinstance(args.ethos_u, list) else _target_list("ethos-u")(args.ethos_u)
    targets = qualcomm + ethos
    if not targets:
        print("wbmm-mobile: npu-check: no target left (--qualcomm none and --ethos-u none)", file=sys.stderr)
        return 2
    results = check_models(args.models, targets, timeout=args.timeout, progress=sys.stderr.isatty())
    to_stdout = json_to_stdout(args)   # `--json -`: stdout holds the JSON alone, the tables go to stderr
    if args.json and not to_stdout:
        write_json(results, args.json)
    out = sys.stderr if to_stdout else sys.stdout
    if out.isatty():
        _print_rich(results, stdout_console(args))
    else:
        out.write(format_text(results))
    if to_stdout:
        emit_json([r.to_dict() for r in results], args)
    elif args.json:
        print(f"wrote {args.json}")
    return 1 if any(r.status == "failed" for r in results) else 0


def _print_rich(results, console) -> None:
    from pathlib import Path

    from rich.table import Table

    from converters.npu.report import SUMMARY_COLUMNS, summary_cells

    colours = {"compiled": "green", "none-offloaded": "yellow", "refused": "red", "not-applicable": "dim",
               "failed": "bold red"}
    summary = Table(title="NPU placement")
    for column in SUMMARY_COLUMNS:
        summary.add_column(column, overflow="fold")
    for result in results:
        cells = summary_cells(result)
        cells[2] = f"[{colours.get(result.status, 'white')}]{cells[2]}[/]"
        summary.add_row(*cells)
    console.print(summary)
    for result in results:
        if result.status == "not-applicable":
            continue
        table = Table(title=f"{Path(result.model).name} on {result.target}", title_justify="left")
        for column in ("op", "NPU", "CPU", "why on the CPU"):
            table.add_column(column, overflow="fold")
        for name, placement in result.per_op.items():
            reasons = sorted({op.reason for op in result.cpu_ops if op.op == name})
            table.add_row(name, str(placement.npu), str(placement.cpu), "; ".join(reasons))
        console.print(table)
