"""``wbmm-mobile convert``: Keras model -> verified .tflite + report.json, over ``converters.keras_convert.convert_file``."""

from __future__ import annotations

import argparse

from wbmm_mobile.cli._output import add_json_argument

HELP = "convert a Keras model with WBMM layers to a verified .tflite (bmm, gather or custom lowering)"

# Kept here (not imported from converters) so --help never imports the converter stack.
_PRECISIONS = ("float32", "float16", "int8")
_LOWERINGS = ("bmm", "gather", "custom")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a .keras model (WBMM layers are lowered; without WBMM layers, depthwise convs of "
                             "kernel >= --min-kernel go through the exact rewriter), or a .tflite (rewriter only)")
    parser.add_argument("-o", "--out", metavar="OUT/", required=True,
                        help="output folder: OUT/<model name>.tflite and OUT/report.json, written only after "
                             "the model passed verification")
    parser.add_argument("--precision", choices=_PRECISIONS, default="float32",
                        help="float32; float16 (weights stored as float16); int8 (full integer, int8 input and "
                             "output, calibrated on --representative-data) (default: float32)")
    parser.add_argument("--lowering", choices=_LOWERINGS, default="bmm",
                        help="how WBMM layers become TFLite ops: bmm (reshape/transpose + BATCH_MATMUL with a "
                             "constant dense M: fastest with XNNPACK, largest file), gather (compact table in "
                             "the file, M gathered at run time), custom (one WBMM custom op per layer, needs the "
                             "wbmm delegate; with --precision int8 the op's int8 form, every tensor int8/int32) "
                             "(default: bmm)")
    parser.add_argument("--representative-data", metavar="NPY", default=None,
                        help="int8 calibration inputs: a .npy of shape (N, H, W, C); without it, seeded random "
                             "inputs are used and a warning is printed (default: none)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random verification (and calibration) inputs (default: 0)")
    parser.add_argument("--no-fold-batchnorm", dest="fold_batchnorm", action="store_false",
                        help="keep a BatchNormalization that follows a WBMM layer as its own ops "
                             "(default: fold it into the table and bias, which is exact)")
    from converters.strategy import TARGETS      # numpy-only: --help stays fast
    from wbmm_mobile.cli._arguments import backend_name

    parser.add_argument("--target", type=backend_name(TARGETS, "target"), default="xnnpack", metavar="|".join(TARGETS),
                        help="the backend the model is for (names of `rewrite --target`; default: xnnpack). Steers "
                             "the rewriter; qualcomm-htp and ethos-u (npu extra) also compile the result and refuse a "
                             "lowering whose ops do not all run on the NPU (custom never does; gather's GATHER stays "
                             "on the Ethos-U's CPU)")
    parser.add_argument("--min-kernel", type=int, default=7, metavar="K",
                        help="models without WBMM layers: rewrite depthwise convs with kernel >= K (default: 7)")
    add_json_argument(parser, "the conversion report (the same as OUT/report.json)")


def run(args: argparse.Namespace) -> int:
    from converters.keras_convert import convert_file
    from wbmm_mobile.cli._output import emit_json, stdout_console
    from wbmm_mobile.report import conversion_summary, conversion_table

    console = stdout_console(args)
    with console.status(f"converting {args.model} ({args.precision}, {args.lowering}) and verifying it"):
        report = convert_file(args.model, args.out, precision=args.precision, lowering=args.lowering,
                              representative_data=args.representative_data, seed=args.seed,
                              fold_batchnorm=args.fold_batchnorm, min_kernel=args.min_kernel, target=args.target)
    console.print(conversion_table(report))
    for line in conversion_summary(report):
        console.print(line, highlight=False, markup=False)
    if report.npu_placement:
        placed = ", ".join(f"{t} {f['ops_npu']}/{f['ops_total']}" + (f" (Vela {f['estimate_ms']:.3f} ms)"
                                                                     if f.get("estimate_ms") else "")
                           for t, f in report.npu_placement.items())
        console.print(f"NPU placement (checked by compiling): {placed}", highlight=False, markup=False)
    console.print(f"wrote {report.output_path} and {args.out.rstrip('/')}/report.json", highlight=False, markup=False)
    emit_json(report, args, console)
    return 0
