"""``wbmm-mobile bench``: time .tflite models on this machine, over ``converters.hostbench.compare_models``."""

from __future__ import annotations

import argparse
from collections import Counter

from wbmm_mobile.cli._arguments import at_least, backend_name
from wbmm_mobile.cli._output import add_json_argument

HELP = "benchmark .tflite models here (ai-edge-litert): median, p5, p95 and speedups vs the first model"


def _delegate_options(text: str) -> dict[str, str]:
    from delegates import parse_options

    try:
        return parse_options(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", metavar="MODEL.tflite", nargs="+",
                        help="one or more models; speedups are relative to the first")
    parser.add_argument("--threads", type=at_least(1), default=1, help="interpreter threads (default: 1)")
    parser.add_argument("--runs", type=at_least(1), default=50, help="timed invokes per model, after warm-up (default: 50)")
    parser.add_argument("--warmup", type=at_least(0), default=5, help="untimed invokes before timing (default: 5)")
    parser.add_argument("--min-secs", type=float, default=0.0,
                        help="keep invoking until this many seconds were timed, even past --runs (default: 0)")
    parser.add_argument("--kernels", type=backend_name(("xnnpack", "cpu"), "kernels"), default="xnnpack",
                        metavar="xnnpack|cpu",
                        help="xnnpack: the runtime's default XNNPACK delegate; cpu: TFLite's own builtin kernels "
                             "(default: xnnpack; `builtin` is the old name of cpu)")
    parser.add_argument("--delegate", action="store_true",
                        help="also apply the project's C++ wbmm delegate (delegates.load(); needed for models "
                             "with WBMM custom ops; build it with `make delegate`) (default: off)")
    parser.add_argument("--delegate-options", metavar="K:V;K:V", type=_delegate_options, default=None,
                        help="options of the wbmm delegate, as benchmark_model's --external_delegate_options, "
                             "e.g. 'claim_depthwise:1' so it also runs a stock model's large depthwise convs "
                             "(implies --delegate; num_threads defaults to --threads)")
    parser.add_argument("--also-without-delegate", action="store_true",
                        help="time every model twice, side by side: without, then with the delegate; speedups "
                             "are against the first model without it (implies --delegate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    add_json_argument(parser, "all timings")


def _what_the_delegate_takes(model: str, delegate, options: dict, args: argparse.Namespace) -> str:
    """One line: the nodes the delegate takes from ``model`` (asked of the library right after a
    throwaway interpreter's prepare), or why a stock model likely gains nothing."""
    from pathlib import Path

    import delegates
    from converters.verify import load_interpreter

    report = delegates.delegation_report(
        load_interpreter(model, threads=args.threads, kernels=args.kernels, delegate=delegate), delegate)
    name = Path(model).name
    if report.claimed_ops:
        ops = ", ".join(f"{count} {op}" for op, count in sorted(Counter(report.claimed_ops).items()))
        return f"the wbmm delegate runs {ops} of {name}"
    hint = "" if str(options.get("claim_depthwise", "0")) not in ("0", "false") else \
        " (a stock model's large depthwise convs need --delegate-options claim_depthwise:1)"
    return f"note: the wbmm delegate takes no node of {name}{hint}"


def run(args: argparse.Namespace) -> int:
    from converters.hostbench import compare_models
    from wbmm_mobile.cli._output import emit_json, stdout_console
    from wbmm_mobile.report import bench_table

    console = stdout_console(args)
    delegate = None
    if args.delegate or args.delegate_options is not None or args.also_without_delegate:
        import delegates

        options = {"num_threads": args.threads, **(args.delegate_options or {})}
        delegate = delegates.load(**options)
        for model in dict.fromkeys(args.models):
            console.print(_what_the_delegate_takes(model, delegate, options, args), highlight=False, markup=False)
    comparison = compare_models(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup,
                                kernels=args.kernels, delegate=delegate, min_secs=args.min_secs,
                                progress=True, seed=args.seed, also_without_delegate=args.also_without_delegate)
    console.print(bench_table(comparison))
    emit_json(comparison.to_dict(), args, console)
    return 0
