"""``wbmm-mobile profile``: latency (and energy) of models per delegate config on Android devices."""

from __future__ import annotations

import argparse

HELP = "profile .tflite models on Android devices per delegate config (with and without WBMM)"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _configs(text: str) -> tuple[str, ...]:
    from android_harness.profile import CONFIGS   # imported when parsing, not for --help

    values = _csv(text)
    unknown = [v for v in values if v not in CONFIGS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"unknown config(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(CONFIGS)}")
    return values


def _delegate_options(text: str) -> str:
    from delegates import parse_options

    try:
        parse_options(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _cooldown(text: str) -> str:
    if text == "temp":
        return text
    try:
        if float(text) >= 0:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected seconds >= 0 or 'temp', got {text!r}")


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL.tflite",
                        help="models to profile (pushed once each, by content hash)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--device", action="append", default=[], metavar="SERIAL",
                        help="device serial (repeat for several; they run in parallel). "
                             "Default: the only attached device")
    target.add_argument("--all", action="store_true", help="every device the ADB server lists as ready")
    parser.add_argument("--adb", metavar="HOST:PORT", default=None,
                        help="ADB server address (default: $ANDROID_ADB_SERVER_HOST/PORT or 127.0.0.1:5037)")
    parser.add_argument("--direct", action="store_true",
                        help="--device values are HOST:PORT adbd addresses (TCP adbd, the loopback device) "
                             "reached without an ADB server")
    parser.add_argument("--configs", type=_configs, default=("xnnpack", "wbmm"), metavar="LIST",
                        help="comma-separated configs among cpu,xnnpack,nnapi,gpu,wbmm (default: xnnpack,wbmm)")
    parser.add_argument("--threads", type=_ints, default=(1,), metavar="LIST",
                        help="comma-separated thread counts (default: 1)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per benchmark (default: 50)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs per benchmark (default: 5)")
    parser.add_argument("--power", action="store_true",
                        help="measure energy per inference from the battery (and per-rail meters when "
                             "readable); readings while charging are refused (default: off)")
    parser.add_argument("--cooldown", type=_cooldown, default="0", metavar="SECONDS|temp",
                        help="between runs: wait SECONDS, or 'temp' = until the temperature read before the "
                             "first run is back within 1 C (default: 0)")
    parser.add_argument("--cooldown-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="give up waiting for the temperature after this long (default: 300)")
    parser.add_argument("--benchmark-binary", default=None, metavar="PATH",
                        help="benchmark_model for the device's ABI (default: "
                             "~/.cache/wbmm-mobile/benchmark_model/<abi>/benchmark_model; nothing is downloaded)")
    parser.add_argument("--delegate-lib", default=None, metavar="PATH",
                        help="libwbmm_delegate.so built for the device's ABI, for the wbmm config (default: none)")
    parser.add_argument("--delegate-options", type=_delegate_options, default=None, metavar="K:V;K:V",
                        help="--external_delegate_options passed with the wbmm config; num_threads is set to "
                             "each --threads value unless given here, where yours wins (default: none)")
    parser.add_argument("--nnapi-accelerator", default=None, metavar="NAME",
                        help="--nnapi_accelerator_name for the nnapi config (default: NNAPI chooses)")
    parser.add_argument("--nnapi-preference", default="sustained_speed",
                        choices=["low_power", "fast_single_answer", "sustained_speed"],
                        help="--nnapi_execution_preference for the nnapi config (default: sustained_speed)")
    parser.add_argument("--op-profiling", action="store_true",
                        help="also record time per op type (benchmark_model --enable_op_profiling, CSV); "
                             "not supported by wbmm-mobile-benchmark (default: off)")
    parser.add_argument("--resume", action="store_true",
                        help="skip runs that already have a successful record in --out (default: off)")
    parser.add_argument("--run-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="longest one benchmark run may take (default: 1800)")
    parser.add_argument("--out", default="results", help="results folder; runs.jsonl is appended (default: results)")


def run(args: argparse.Namespace) -> int:
    from android_harness.profile import ProfilePlan, profile

    plan = ProfilePlan(
        models=tuple(args.models), out=args.out, devices=tuple(args.device), all_devices=args.all,
        adb_server=args.adb, direct=args.direct, configs=args.configs, threads=args.threads, runs=args.runs,
        warmup=args.warmup, power=args.power, cooldown=args.cooldown, cooldown_timeout_s=args.cooldown_timeout,
        benchmark_binary=args.benchmark_binary, delegate_lib=args.delegate_lib,
        delegate_options=args.delegate_options, nnapi_accelerator=args.nnapi_accelerator,
        nnapi_preference=args.nnapi_preference, resume=args.resume, run_timeout_s=args.run_timeout,
        op_profiling=args.op_profiling)
    report = profile(plan)
    ok, failed = report.by_status("ok"), report.by_status("failed")
    skipped, missing = report.by_status("skipped"), report.by_status("missing")
    print(f"{len(ok)} runs done, {len(failed)} failed, {len(skipped)} skipped (--resume), "
          f"{len(missing)} missing; records in {report.results_file}")
    for summary in failed:
        print(f"  failed: {summary.label}: {summary.detail.splitlines()[0] if summary.detail else ''}")
    for serial, reason in report.device_errors.items():
        print(f"  device {serial} stopped: {reason}")
    for summary in missing:
        print(f"  missing: {summary.label}")
    if missing:
        print("  rerun the same command with --resume to complete the missing runs")
        return 2
    return 1 if failed else 0
