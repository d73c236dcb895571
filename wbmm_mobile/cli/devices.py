"""``wbmm-mobile devices``: every reachable Android device with model, SoC, ABI, Android
version, battery and thermal state, in one table."""

from __future__ import annotations

import argparse

from wbmm_mobile.cli._output import add_json_argument, emit_json, stdout_console

HELP = "list Android devices with model, SoC, ABI, Android version, battery and thermal state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adb", metavar="HOST:PORT", default=None,
                        help="ADB server to ask (default: $ANDROID_ADB_SERVER_HOST/PORT or 127.0.0.1:5037; "
                             "a remote server such as a device farm's works too)")
    parser.add_argument("--direct", metavar="HOST:PORT", action="append", default=[],
                        help="also list the adbd at HOST:PORT, reached without an ADB server through "
                             "adb-shell (repeatable; default: none)")
    parser.add_argument("--no-server", action="store_true",
                        help="do not ask an ADB server at all, only the --direct addresses (default: ask it)")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                        help="per-device wait for answers (default: 20)")
    add_json_argument(parser, "every device's facts (the table's rows, in full)")


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from android_harness.device_survey import survey_devices

    rows = survey_devices(adb_server=args.adb, direct=args.direct, use_server=not args.no_server,
                          timeout=args.timeout)
    found = 0 if any(row.snapshot is not None for row in rows) else 2
    table = Table(title="Android devices")
    for column in ("serial", "via", "state", "model", "SoC", "ABI", "Android", "battery", "thermal", "big cores"):
        table.add_column(column)
    for row in rows:
        snapshot = row.snapshot
        if snapshot is None:
            table.add_row(row.serial, row.via, row.state, row.problem, "", "", "", "", "", "")
            continue
        info = snapshot.info
        model = f"{info.manufacturer} {info.model}".strip() + (" (loopback test device)" if info.is_loopback else "")
        battery = "n/a"
        if snapshot.battery is not None:
            b = snapshot.battery
            plugged = "+".join(b.plugged_sources) if b.plugged else "unplugged"
            temperature = f", {b.temperature_c:.1f} C" if b.temperature_c is not None else ""
            battery = f"{b.level_percent}% {plugged}{temperature}"
        thermal = snapshot.thermal.status_name
        hottest = snapshot.thermal.hottest("cpu") or snapshot.thermal.hottest()
        if hottest is not None:
            thermal += f", {hottest.name} {hottest.value_c:.1f} C"
        big = f"{snapshot.cpu.big_core_mask} ({len(snapshot.cpu.big_cores)}/{len(snapshot.cpu.cores)})" \
            if snapshot.cpu.cores else "n/a"
        table.add_row(row.serial, row.via, row.state, model, info.soc, info.abi,
                      f"{info.android_version} (SDK {info.sdk_level})", battery, thermal, big)
    console = stdout_console(args)
    console.print(table)
    for row in rows:
        if row.snapshot is not None and row.snapshot.problems:
            for problem in row.snapshot.problems:
                console.print(f"{row.serial}: {problem}", highlight=False, markup=False, soft_wrap=True)
    emit_json(rows, args, console)
    return found
