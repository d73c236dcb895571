"""``wbmm-mobile loopback-device``: serve a folder as an ADB device on 127.0.0.1, for tests and
dry runs of the harness without a phone."""

from __future__ import annotations

import argparse

HELP = ("run a loopback ADB device for tests and dry runs (NOT a phone): a Python adbd on 127.0.0.1 "
        "that runs commands on this machine inside --root and serves files from there")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from android_harness.loopback.daemon import DEFAULT_PORT
    parser.epilog = ("For tests and dry runs only: commands run on THIS machine (cwd = --root; /data, /sdcard, "
                     "/sys ... paths map under --root); it is not a sandbox. Connect with "
                     "`adb connect 127.0.0.1:PORT` or `wbmm-mobile devices --direct 127.0.0.1:PORT`.")
    parser.add_argument("--root", required=True, metavar="DIR",
                        help="folder the device's files live in (created if missing)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"TCP port on 127.0.0.1, outside 5555-5585 which the adb server scans "
                             f"(default: {DEFAULT_PORT})")
    parser.add_argument("--auth", action="store_true",
                        help="require ADB RSA authentication like a phone does (default: off)")
    parser.add_argument("--authorized-keys", metavar="FILE", default=None,
                        help="with --auth: adb_keys file of trusted host keys, one 'base64 user@host' per line "
                             "(default: none, kept in memory)")
    parser.add_argument("--accept-new-keys", action="store_true",
                        help="with --auth: accept an unknown key as if the user tapped 'Allow' on the phone's "
                             "prompt (default: leave the prompt unanswered, the host sees 'unauthorized')")
    parser.add_argument("--fixture-phone", nargs="?", const=True, default=False, metavar="DIR",
                        help="copy a fixture phone profile into --root: getprop/dumpsys/taskset scripts and "
                             "battery/cpufreq sysfs files (default profile: a Pixel 7; or give a profile DIR)")


def run(args: argparse.Namespace) -> int:
    from android_harness.loopback.daemon import LoopbackDevice

    device = LoopbackDevice(args.root, port=args.port, auth=args.auth, authorized_keys=args.authorized_keys,
                            accept_new_keys=args.accept_new_keys, fixture_phone=args.fixture_phone).start()
    print(f"loopback ADB device (tests and dry runs, not a phone) serving {device.root} on {device.serial}"
          f"{' with RSA auth' if args.auth else ''}", flush=True)
    print(f"connect: adb connect {device.serial}   |   wbmm-mobile devices --direct {device.serial}", flush=True)
    print("stop with Ctrl-C", flush=True)
    try:
        device.serve_forever()
    except KeyboardInterrupt:
        device.stop()
    return 0
