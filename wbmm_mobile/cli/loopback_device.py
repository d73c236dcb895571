"""``wbmm-mobile loopback-device``: serve a folder as an ADB device on 127.0.0.1, for tests and
dry runs of the harness without a phone. Its shell is this computer's shell, so it authenticates
like a phone that already allowed this computer, unless ``--insecure``."""

from __future__ import annotations

import argparse
import signal
import sys

HELP = ("run a loopback ADB device for tests and dry runs (NOT a phone): a Python adbd on 127.0.0.1 "
        "whose shell is THIS computer's shell, run as you, starting in --root")


def _port(text: str) -> int:
    from android_harness.loopback.daemon import ADB_SCANNED_PORTS
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} out of range")
    if port in ADB_SCANNED_PORTS:
        raise argparse.ArgumentTypeError(f"port {port} is in 5555-5585, which the adb server scans for "
                                         "emulators; pick another")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from android_harness.loopback.daemon import DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT
    parser.epilog = ("For tests and dry runs only. Its shell is THIS computer's shell: commands run here, as "
                     "you, with a minimal environment, starting in --root (/data, /sdcard, /sys ... paths map "
                     "under --root); it is not a sandbox. So it only lets in ADB clients that sign with your "
                     "adb keys (~/.android/adbkey, $ADB_VENDOR_KEYS: what adb and adb-shell use), like a phone "
                     "that already allowed this computer. Connect with `adb connect 127.0.0.1:PORT` or "
                     "`wbmm-mobile devices --direct 127.0.0.1:PORT`. Stops on Ctrl-C or SIGTERM, ending every "
                     "command it started.")
    parser.add_argument("--root", required=True, metavar="DIR",
                        help="folder the device's files live in (created if missing)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"TCP port on 127.0.0.1, outside 5555-5585 which the adb server scans "
                             f"(default: {DEFAULT_PORT})")
    parser.add_argument("--insecure", action="store_true",
                        help="no authentication: ANY process on this computer can then run commands as you "
                             "through it (default: only your adb keys are let in)")
    parser.add_argument("--auth", action="store_true", help=argparse.SUPPRESS)   # the default now; kept for old scripts
    parser.add_argument("--authorized-keys", metavar="FILE", default=None,
                        help="adb_keys file of further trusted host keys, one 'base64 user@host' per line; keys "
                             "accepted with --accept-new-keys are added to it (default: none)")
    parser.add_argument("--accept-new-keys", action="store_true",
                        help="accept an unknown key as if the user tapped 'Allow' on the phone's prompt (default: "
                             "leave the prompt unanswered, the host sees 'unauthorized')")
    parser.add_argument("--fixture-phone", nargs="?", const=True, default=False, metavar="DIR",
                        help="answer as a fixture phone for tests: getprop/dumpsys/taskset scripts and "
                             "battery/cpufreq sysfs files of a Pixel 7 (or of a profile DIR). Default: describe "
                             "this computer truthfully (its ABI, CPU model, 'loopback' in the model name)")
    parser.add_argument("--max-connections", type=_positive, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help="connections served at once; past it a new one is closed at once and logged "
                             f"(default: {DEFAULT_MAX_CONNECTIONS})")


def run(args: argparse.Namespace) -> int:
    import logging

    from android_harness.loopback.daemon import LoopbackDevice

    logging.basicConfig(level=logging.WARNING, format="loopback-device: %(message)s")
    if args.insecure and args.accept_new_keys:
        raise ValueError("--accept-new-keys has no effect with --insecure (nothing is authenticated)")
    if args.insecure:
        print("WARNING: --insecure: no ADB authentication. Any process on this computer can run commands as "
              "you through this device.", file=sys.stderr, flush=True)
    device = LoopbackDevice(args.root, port=args.port, auth=not args.insecure, authorized_keys=args.authorized_keys,
                            accept_new_keys=args.accept_new_keys, fixture_phone=args.fixture_phone,
                            max_connections=args.max_connections)

    def stop_on_signal(signum, _frame):
        # SIGTERM ends the device the way Ctrl-C does: connections dropped, commands killed.
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        device.start()
        who = "the fixture phone" if args.fixture_phone else "this computer"
        auth = "no authentication (--insecure)" if args.insecure else "only your adb keys let in"
        print(f"loopback ADB device (tests and dry runs, not a phone) serving {device.root} on {device.serial}, "
              f"answering as {who}, {auth}", flush=True)
        print("its shell is THIS computer's shell, run as you, starting in --root", flush=True)
        print(f"connect: adb connect {device.serial}   |   wbmm-mobile devices --direct {device.serial}", flush=True)
        print("stop with Ctrl-C or SIGTERM", flush=True)
        device.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0
