"""``wbmm-mobile tune``: time every exact rewrite of a model's large depthwise layers on a device.

A thin wrapper over ``android_harness.tune.tune`` (measure), and over
``converters.strategy_table`` for ``--list`` and ``--merge``.
"""

from __future__ import annotations

import argparse
import sys

from wbmm_mobile.cli._arguments import at_least, backend_name

HELP = "time each exact rewrite of a model's large depthwise layers on a device: a per-device strategy table"


def _threads(text: str) -> tuple[int, ...]:
    from wbmm_mobile.cli.profile import _ints
    return _ints(text)


def _cooldown(text: str) -> str:
    from wbmm_mobile.cli.profile import _cooldown
    return _cooldown(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from wbmm_mobile import backends

    parser.description = (
        "Measure, on one device, every candidate rewrite (and keeping the layer) of each distinct large "
        "depthwise layer of the models, with the same runner and statistics as `profile`, and write a "
        "strategy table keyed by the device's identity. `rewrite --strategy-table TABLE` (or `rewrite "
        "--device SERIAL`, from the copy kept in ~/.cache/wbmm-mobile/tables) then picks from it.")
    parser.add_argument("--models", nargs="+", metavar="MODEL.tflite", default=None,
                        help="models whose layers to tune (their distinct shapes are measured once each)")
    parser.add_argument("--device", metavar="SERIAL", default=None, help="device serial (default: the only one)")
    parser.add_argument("--adb", metavar="HOST:PORT", default=None,
                        help="ADB server address (default: $ANDROID_ADB_SERVER_HOST/PORT or 127.0.0.1:5037)")
    parser.add_argument("--direct", action="store_true",
                        help="--device is a HOST:PORT adbd address (TCP adbd, the loopback device) reached "
                             "without an ADB server")
    parser.add_argument("--target", type=backend_name(backends.NAMES, "target"), default="xnnpack",
                        metavar="xnnpack|cpu|wbmm",
                        help="the backend to tune for: xnnpack (default), cpu, or wbmm (every candidate run with "
                             "the wbmm delegate: WBMM_DEPTHWISE, the kept conv claimed by it or left to XNNPACK, "
                             "the builtin rewrites); the others' choices are fixed rules, not measurements")
    parser.add_argument("--delegate-lib", metavar="PATH", default=None,
                        help="--target wbmm: the delegate built for the device's ABI (default: on the loopback "
                             "device this computer's build/delegates/libwbmm_delegate.so, on arm64 "
                             "build/android-arm64/libwbmm_delegate.so); pushed by content hash, as profile does")
    parser.add_argument("--delegate-options", metavar="'key:value;...'", default=None,
                        help="--target wbmm: more delegate options (isa, spin_us, min_kernel...); tune sets "
                             "num_threads (each --threads count) and claim_depthwise (0 and 1) itself")
    parser.add_argument("--allow-float-islands", action="store_true",
                        help="integer (int8/int16) layers also time split, dilated and halo run in float32 "
                             "between DEQUANTIZE and QUANTIZE (never on integer-only targets); without it they "
                             "get the integer candidates only")
    parser.add_argument("--threads", type=_threads, default=(1,), metavar="LIST",
                        help="comma-separated thread counts; one table entry each (default: 1)")
    parser.add_argument("--runs", type=at_least(1), default=50, help="timed runs per candidate (default: 50)")
    parser.add_argument("--warmup", type=at_least(0), default=5, help="warm-up runs per candidate (default: 5)")
    parser.add_argument("--cooldown", type=_cooldown, default="0", metavar="SECONDS|temp",
                        help="between runs, as `profile --cooldown` (default: 0)")
    parser.add_argument("--min-kernel", type=at_least(1), default=7, metavar="K",
                        help="tune layers with max(kh, kw) >= K, as `rewrite --min-kernel` (default: 7)")
    parser.add_argument("--benchmark-binary", default=None, metavar="PATH",
                        help="benchmark_model for the device's ABI (default: "
                             "~/.cache/wbmm-mobile/benchmark_model/<abi>/benchmark_model; nothing is downloaded)")
    parser.add_argument("--run-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="longest one benchmark run may take (default: 1800)")
    parser.add_argument("--out", metavar="TABLE.json", default=None,
                        help="the table to write (rewritten after every timed run; other devices' entries in it "
                             "are kept)")
    parser.add_argument("--resume", action="store_true",
                        help="time only the candidates --out lacks for this device (after a lost device or Ctrl-C)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not keep a copy in ~/.cache/wbmm-mobile/tables ($WBMM_TABLE_CACHE)")
    parser.add_argument("--list", nargs="*", metavar="TABLE.json", default=None,
                        help="list the entries of these tables (none given: the cached ones) and exit")
    parser.add_argument("--merge", nargs="+", metavar="TABLE.json", default=None,
                        help="merge these tables into -o/--output and exit")
    parser.add_argument("-o", "--output", metavar="MERGED.json", default=None, help="where --merge writes")
    parser.add_argument("--json", action="store_true", help="with --list: print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.list is not None:
        return _list(args)
    if args.merge is not None:
        return _merge(args)
    if not args.models or not args.out:
        print("wbmm-mobile tune: error: --models and --out are required to tune (or use --list / --merge)",
              file=sys.stderr)
        return 2
    from android_harness.tune import TunePlan, tune

    plan = TunePlan(models=tuple(args.models), out=args.out, device=args.device, adb_server=args.adb,
                    direct=args.direct, target=args.target, threads=args.threads, runs=args.runs,
                    warmup=args.warmup, cooldown=args.cooldown, min_kernel=args.min_kernel,
                    benchmark_binary=args.benchmark_binary, delegate_lib=args.delegate_lib,
                    delegate_options=args.delegate_options, allow_float_islands=args.allow_float_islands,
                    resume=args.resume, run_timeout_s=args.run_timeout, cache=not args.no_cache)
    report = tune(plan, progress=sys.stderr.isatty())
    who = report.identities[0].describe() if report.identities else "the device"
    print(f"{len(report.layers)} layer shape(s), {report.candidates} candidate(s) per thread count on {who}")
    print(f"{report.timed} timed now, {report.resumed} kept from the table (--resume), {len(report.refused)} refused, "
          f"{len(report.failed)} failed, {len(report.missing)} missing, in {report.seconds:.0f} s")
    for line in report.refused:
        print(f"  refused: {line}")
    for line in report.skipped_layers:
        print(f"  not tuned: {line}")
    for line in report.failed:
        print(f"  failed: {line.splitlines()[0]}")
    print(f"table: {report.out}" + (f" (copy: {report.cache_copy})" if report.cache_copy else ""))
    if not report.complete:
        print(f"  device lost: {report.device_error}; the table keeps every finished measurement: rerun the same "
              "command with --resume to time the rest")
        return 2
    return 1 if report.failed else 0


def _list(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from converters import strategy_table

    tables = [strategy_table.load(path) for path in args.list] if args.list else \
        strategy_table.cached_tables()
    rows = [row for table in tables for row in strategy_table.summary_rows(table)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no strategy table" + ("" if args.list else f" in {strategy_table.CACHE_DIR}"))
        return 0
    from rich.table import Table

    from wbmm_mobile.cli._output import stdout_console

    table = Table(title="strategy tables")
    columns = ("file", "device", "serial", "soc", "abi", "target", "threads", "layers", "timings", "runtime",
               "library", "delegate", "measured_at")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[Path(row["file"]).name if column == "file" else str(row[column]) for column in columns])
    stdout_console().print(table)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from converters import strategy_table

    if not args.output:
        print("wbmm-mobile tune: error: --merge needs -o/--output MERGED.json", file=sys.stderr)
        return 2
    merged = strategy_table.merge(strategy_table.load(path) for path in args.merge)
    strategy_table.save(merged, args.output)
    print(f"wrote {args.output}: {len(merged.entries)} entr{'y' if len(merged.entries) == 1 else 'ies'} from "
          f"{len(args.merge)} table(s)")
    return 0
