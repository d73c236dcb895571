"""The ``wbmm-mobile`` command: a thin layer over the library.

Each subcommand lives in its own module under ``wbmm_mobile/cli/`` and defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; the
module calls one library function and formats its result. Modules are imported
only when their command runs, so ``--help`` stays fast (TensorFlow takes seconds
to import).

Adding a command: write its module, then add one line to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from wbmm_mobile import __version__

# (command name, module, one-line help). Order is the order shown in --help.
COMMANDS: list[tuple[str, str, str]] = [
    ("convert", "wbmm_mobile.cli.convert", "convert a Keras model with WBMM layers to a verified .tflite"),
    ("bench", "wbmm_mobile.cli.bench", "benchmark .tflite models on this machine (median, p5, p95, speedups)"),
    ("demo", "wbmm_mobile.cli.demo", "the main job on a built-in example: convert, profile over ADB (phone or loopback), compare"),
    ("rewrite", "wbmm_mobile.cli.rewrite", "rewrite large depthwise convolutions of a .tflite (exact or windowed)"),
    ("profile", "wbmm_mobile.cli.profile", "profile .tflite models on Android devices per delegate config"),
    ("tune", "wbmm_mobile.cli.tune", "time each rewrite of a model's large depthwise layers on a device: a strategy table"),
    ("npu-check", "wbmm_mobile.cli.npu_check", "which ops of a .tflite run on Qualcomm's HTP and Arm's Ethos-U (npu extra)"),
    ("compare", "wbmm_mobile.cli.compare", "tables, plots and a markdown report from profile results"),
    ("kernel-bench", "wbmm_mobile.cli.kernel_bench", "time the delegate's kernels alone on an Android device (1 and N threads)"),
    ("devices", "wbmm_mobile.cli.devices", "list Android devices: model, SoC, ABI, Android version, battery, thermal"),
    ("loopback-device", "wbmm_mobile.cli.loopback_device", "serve a folder as an ADB device on 127.0.0.1 (tests and dry runs, not a phone)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbmm-mobile",
        description="Make large receptive fields cheap on phones: convert models with WBMM, "
                    "rewrite large depthwise convolutions, profile on Android devices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                    help="show full tracebacks on errors")
        command_parser.set_defaults(_module=module_name)
        # Argument definitions must be importable without heavy dependencies.
        importlib.import_module(module_name).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from wbmm_mobile.cli._errors import report_error

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - mapped to a one-line message below
        return report_error(exc, debug=getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
