"""``wbmm-mobile kernel-bench``: the WBMM delegate's kernels alone on an Android device.

Pushes ``wbmm_kernel_bench`` (built for the device's ABI) over ADB, runs one kernel (float32,
or int8 with ``--int8``) on 1 thread, on N threads and as N independent 1-thread runs (how
far the device lets any work scale at that moment), prints the table and keeps the JSON
report.
"""

from __future__ import annotations

import argparse

from wbmm_mobile.cli._arguments import at_least

HELP = "time the delegate's kernels alone on an Android device: 1 and N threads against its capacity"


def _shape(text: str) -> str:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxWxC, e.g. 56x56x96")
    return "x".join(parts)


def _odd_positive(text: str) -> int:
    value = at_least(1)(text)
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a 'same' depthwise conv needs an odd kernel")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--window", type=at_least(1), metavar="W", help="the WBMM operator with W x W windows")
    what.add_argument("--kernel", type=_odd_positive, metavar="K", help="an exact K x K 'same' depthwise conv (odd K)")
    parser.add_argument("--int8", action="store_true",
                        help="time the int8 kernel (int8 input and output, per-channel int8 weights) "
                             "instead of the float32 one")
    parser.add_argument("--shape", type=_shape, default="56x56x96", metavar="HxWxC",
                        help="input map (default: 56x56x96)")
    parser.add_argument("--threads", type=at_least(1), default=4, metavar="N",
                        help="threads of the multi-thread variant (default: 4, a phone's big cores)")
    parser.add_argument("--runs", type=at_least(1), default=300, metavar="R", help="timed runs per variant (default: 300)")
    parser.add_argument("--cold", action="store_true", help="evict the caches between runs (default: warm)")
    parser.add_argument("--isa", default="auto", help="kernel set: auto, portable, neon, ... (default: auto)")
    parser.add_argument("--device", metavar="SERIAL",
                        help="device serial (default: the only attached device); with --direct, HOST:PORT")
    parser.add_argument("--adb", metavar="HOST:PORT", default=None,
                        help="ADB server to ask (default: $ANDROID_ADB_SERVER_HOST/PORT or 127.0.0.1:5037)")
    parser.add_argument("--direct", action="store_true",
                        help="--device is a HOST:PORT adbd address, reached without an ADB server")
    parser.add_argument("--binary", metavar="PATH",
                        help="wbmm_kernel_bench for the device's ABI (default: build/android-arm64/ for "
                             "arm64-v8a phones, from `make delegate-arm64 ANDROID_NDK_HOME=...`)")
    parser.add_argument("--out", metavar="FILE.json", default="results/kernel_bench.json",
                        help="where to keep the JSON report (default: results/kernel_bench.json)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from android_harness.device import Device
    from android_harness.kernel_bench import run_kernel_bench
    from android_harness.connect import open_transport
    from wbmm_mobile.errors import DeviceNotFoundError

    flags = ["--window", str(args.window)] if args.window is not None else ["--kernel", str(args.kernel)]
    flags += ["--shape", args.shape, "--threads", str(args.threads), "--runs", str(args.runs), "--isa", args.isa]
    if args.int8:
        flags.append("--int8")
    if args.cold:
        flags.append("--cold")
    if args.direct and not args.device:
        raise DeviceNotFoundError("--direct needs --device HOST:PORT")
    transport = open_transport(direct=args.device) if args.direct else \
        open_transport(serial=args.device, adb_server=args.adb)
    device = Device(transport)
    try:
        result = run_kernel_bench(device, flags, binary=args.binary)
    finally:
        transport.close()
    print(f"{result.serial} ({result.abi}):")
    print(result.printed.rstrip())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"serial": result.serial, "abi": result.abi, "binary": result.binary,
                               **result.report}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
