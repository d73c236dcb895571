"""File transfer speed of the ADB transports, against the loopback ADB device on this machine.

(a) adb-shell pushing and pulling 1 MiB with Nagle's algorithm on (adb-shell's stock socket,
    ``tcp_nodelay=False``) against TCP_NODELAY (the default of ``adbshell_transport``):
    adb-shell writes each packet header and payload separately, so Nagle and delayed ACKs
    stall it.
(b) 20 MB push and pull through each transport: AdbServerTransport (a private Debian adb
    server, adbutils on the host side) and AdbShellTransport (direct).

Variants of one part run in one process, interleaved call by call, median of ``--runs``
calls after 3 warm-up calls. Over 127.0.0.1 the stall is far smaller than over Wi-Fi or
USB to a phone (the issue quotes 22 s against 0.03 s for 1 MB): these are loopback
numbers, not phone numbers. Results: ``benchmarks/results/adb_transfer.json``. Run by hand:

    .venv/bin/python benchmarks/adb_transfer.py            # 50 calls per variant
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from android_harness.adbshell_transport import AdbShellTransport  # noqa: E402
from android_harness.adbutils_transport import AdbServerTransport  # noqa: E402
from android_harness.loopback import LoopbackDevice  # noqa: E402
from tests._adb_helpers import DEBIAN_ADB, start_adb_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "adb_transfer.json"


def interleaved(variants: dict, runs: int, label: str, warmup: int = 3) -> dict[str, float]:
    """Median seconds per variant ({name: callable}), called in turn, order rotating each round."""
    from rich.progress import Progress

    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples = {name: [] for name in names}
    with Progress() as progress:
        task = progress.add_task(label, total=runs)
        for round_index in range(runs):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                start = time.perf_counter()
                variants[name]()
                samples[name].append(time.perf_counter() - start)
            progress.advance(task)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed calls per variant (default: 50)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="adb-transfer-") as scratch_dir:
        scratch = Path(scratch_dir)
        small = scratch / "1mib.bin"
        small.write_bytes(os.urandom(1 << 20))
        big = scratch / "20mb.bin"
        big.write_bytes(os.urandom(20 * 1000 * 1000))
        # The loopback device lets in the starting user's adb keys: this one is named in
        # $ADB_VENDOR_KEYS (the private adb server below signs with it too).
        from android_harness.adbshell_transport import load_or_create_adb_key
        key = load_or_create_adb_key(scratch / "adbkey")
        os.environ["ADB_VENDOR_KEYS"] = str(key)
        results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, over 127.0.0.1",
                         "runs": args.runs}
        with LoopbackDevice(scratch / "root") as device:
            stock = AdbShellTransport("127.0.0.1", device.port, key_path=key, tcp_nodelay=False)
            nodelay = AdbShellTransport("127.0.0.1", device.port, key_path=key)
            remote = "/data/local/tmp/1mib.bin"
            stock.push(small, remote)
            small_variants = {
                "push_1mib_stock": lambda: stock.push(small, remote),
                "push_1mib_nodelay": lambda: nodelay.push(small, remote),
                "pull_1mib_stock": lambda: stock.pull(remote, scratch / "back-stock.bin"),
                "pull_1mib_nodelay": lambda: nodelay.pull(remote, scratch / "back-nodelay.bin"),
            }
            part_a = interleaved(small_variants, args.runs, "1 MiB, adb-shell stock vs TCP_NODELAY")
            results["adb_shell_1mib_seconds"] = part_a
            stock.close()

            server = start_adb_server(DEBIAN_ADB, scratch / "adb-home") if os.path.exists(DEBIAN_ADB) else None
            try:
                big_variants = {
                    "push_20mb_adb_shell": lambda: nodelay.push(big, "/data/local/tmp/20mb.bin"),
                    "pull_20mb_adb_shell": lambda: nodelay.pull("/data/local/tmp/20mb.bin", scratch / "b1.bin"),
                }
                if server is not None:
                    via_server = AdbServerTransport(serial=device.serial, server=server.address)
                    big_variants.update({
                        "push_20mb_adb_server": lambda: via_server.push(big, "/data/local/tmp/20mb-s.bin"),
                        "pull_20mb_adb_server": lambda: via_server.pull("/data/local/tmp/20mb-s.bin",
                                                                        scratch / "b2.bin"),
                    })
                    via_server.push(big, "/data/local/tmp/20mb-s.bin")
                nodelay.push(big, "/data/local/tmp/20mb.bin")
                part_b = interleaved(big_variants, args.runs, "20 MB push/pull per transport")
                results["transfer_20mb_seconds"] = part_b
            finally:
                nodelay.close()
                if server is not None:
                    server.stop()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"1 MiB adb-shell, median s: {json.dumps({k: round(v, 4) for k, v in part_a.items()})}")
    print(f"  push stock/nodelay = {part_a['push_1mib_stock'] / part_a['push_1mib_nodelay']:.2f}x, "
          f"pull stock/nodelay = {part_a['pull_1mib_stock'] / part_a['pull_1mib_nodelay']:.2f}x")
    for name, seconds in part_b.items():
        print(f"{name}: median {seconds:.3f} s = {20 / seconds:.0f} MB/s")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
