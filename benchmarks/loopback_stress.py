"""The loopback ADB device under adversarial traffic: the targets of issue 18, measured.

Two daemons side by side, each ``wbmm-mobile loopback-device`` in a process of its own,
rounds interleaved: the baseline is the code before the hardening (a ``git archive`` of
``--baseline-rev``, default the parent of the first hardening commit), the candidate this
checkout. Per round and daemon (``android_harness.loopback.stress`` does the traffic):

- 2,000 connections opened at once, each sending CNXN: served (AUTH/CNXN back), refused
  cleanly (end of stream), reset, or unanswered within 30 s; and how many served ones the
  device then drops within a second (a connection it can no longer serve);
- 200 adb-shell clients released at the same moment, each connecting, authenticating and
  running ``echo``: how many got their answer;
- the daemon's threads and open descriptors (from /proc) before the storm and after it
  settled;
- a push onto ``/data/local/tmp``, ``/sdcard/`` and ``/``: seconds until the answer (FAIL), or
  ``null`` when none came within 5 s;
- SIGTERM with three long commands running (each with a background child): how many of their
  processes are alive 2 s later.
Counts are medians over ``--rounds``; each figure of both daemons is in the JSON. Results:
``benchmarks/results/loopback_stress.json``. Run (about 3 minutes on 2 cores):

    flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/loopback_stress.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from android_harness.adbshell_transport import load_or_create_adb_key  # noqa: E402
from android_harness.loopback.stress import (  # noqa: E402
    open_connections, push_onto_directory, raise_fd_limit, shell_burst, sigterm_leaves_no_children, wait_until)

RESULTS = ROOT / "benchmarks" / "results" / "loopback_stress.json"
CONNECTIONS = 2000
CLIENTS = 200


def _process_counts(pid: int) -> tuple[int, int]:
    """(threads, open descriptors) of another process."""
    threads = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("Threads:"))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """``loopback-device`` from one checkout, in its own process."""

    def __init__(self, checkout: Path, env: dict, scratch: Path, name: str):
        self.checkout, self.env, self.name = checkout, dict(env, PYTHONPATH=str(checkout)), name
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wbmm_mobile.cli", "loopback-device", "--root", str(scratch / f"root-{name}"),
             "--port", str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=self.env, cwd=str(checkout))
        if not self.process.stdout.readline():
            raise RuntimeError(f"{name}: loopback-device did not start")

    def counts(self) -> tuple[int, int]:
        return _process_counts(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def one_round(checkout: Path, env: dict, key: Path, scratch: Path, name: str) -> dict:
    daemon = Daemon(checkout, env, scratch, name)
    try:
        # A first client (also what makes the baseline count settle), then the counts before.
        burst = shell_burst(daemon.port, 1, key, timeout_s=30)
        time.sleep(1.0)
        before = daemon.counts()
        storm = open_connections(daemon.port, CONNECTIONS, timeout_s=30)
        burst = shell_burst(daemon.port, CLIENTS, key, timeout_s=60)
        settled = {"seconds": None}
        start = time.monotonic()
        if wait_until(lambda: daemon.counts()[0] <= before[0] + 2 and daemon.counts()[1] <= before[1] + 2, 30, 0.2):
            settled["seconds"] = round(time.monotonic() - start, 2)
        after = daemon.counts()
        pushes = push_onto_directory(daemon.port, key, timeout_s=5.0)
        serving = shell_burst(daemon.port, 1, key, timeout_s=30).ok == 1
    finally:
        daemon.stop()
    sigterm = sigterm_leaves_no_children(key, commands=3, grace_s=2.0, environ=env, checkout=checkout)
    return {
        "connections": {"opened": storm.opened, "served": storm.served, "refused_cleanly": storm.refused,
                        "reset": storm.reset, "unanswered": storm.unanswered,
                        "dropped_after_answer": storm.dropped_after_answer, "connect_failed": storm.connect_failed,
                        "seconds": round(storm.seconds, 3), "errors": storm.errors},
        "shell_burst": {"clients": burst.clients, "ok": burst.ok, "failed": burst.failed,
                        "seconds": round(burst.seconds, 2), "errors": burst.errors[:3]},
        "threads_before": before[0], "fds_before": before[1], "threads_after": after[0], "fds_after": after[1],
        "settled_after_s": settled["seconds"],
        "push_onto_directory": [{"target": p.target, "fail_answer": p.failed,
                                 "seconds": round(p.seconds, 4) if p.failed or p.seconds < 5 else None,
                                 "message": p.message[-160:]} for p in pushes],
        "still_serving": serving,
        "sigterm": sigterm,
    }


def _median(rounds: list[dict], path: tuple) -> float | None:
    values = []
    for entry in rounds:
        value = entry
        for part in path:
            value = value[part]
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def summary(rounds: list[dict]) -> dict:
    push_seconds = [p["seconds"] for r in rounds for p in r["push_onto_directory"] if p["fail_answer"]]
    return {
        "connections_served_or_refused_cleanly": statistics.median(
            r["connections"]["served"] + r["connections"]["refused_cleanly"] for r in rounds),
        "connections_reset": _median(rounds, ("connections", "reset")),
        "connections_dropped_after_answer": _median(rounds, ("connections", "dropped_after_answer")),
        "connections_unanswered": _median(rounds, ("connections", "unanswered")),
        "shell_clients_ok": _median(rounds, ("shell_burst", "ok")),
        "thread_growth": statistics.median(r["threads_after"] - r["threads_before"] for r in rounds),
        "fd_growth": statistics.median(r["fds_after"] - r["fds_before"] for r in rounds),
        "push_fail_answers": sum(p["fail_answer"] for r in rounds for p in r["push_onto_directory"]),
        "push_attempts": sum(len(r["push_onto_directory"]) for r in rounds),
        "push_fail_median_s": statistics.median(push_seconds) if push_seconds else None,
        "push_fail_max_s": max(push_seconds) if push_seconds else None,
        "alive_2s_after_sigterm": _median(rounds, ("sigterm", "alive")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rev", default="23cf8bc",
                        help="git revision of the baseline daemon (default: before the hardening)")
    args = parser.parse_args()
    raise_fd_limit(16384)
    with tempfile.TemporaryDirectory(prefix="wbmm-loopback-stress-") as scratch_name:
        scratch = Path(scratch_name)
        baseline = scratch / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev], check=True,
                                 capture_output=True).stdout
        archive_path = scratch / "baseline.tar"
        archive_path.write_bytes(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(baseline, filter="data")
        key = load_or_create_adb_key(scratch / "key" / "adbkey")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env.update(ADB_VENDOR_KEYS=str(key), HOME=str(scratch / "home"), TF_CPP_MIN_LOG_LEVEL="3")
        os.environ["ADB_VENDOR_KEYS"] = str(key)
        rounds = {"baseline": [], "candidate": []}
        for index in range(args.rounds):
            order = ["baseline", "candidate"] if index % 2 == 0 else ["candidate", "baseline"]
            for name in order:
                checkout = baseline if name == "baseline" else ROOT
                print(f"round {index + 1}/{args.rounds}: {name}", flush=True)
                rounds[name].append(one_round(checkout, env, key, scratch, f"{name}{index}"))
    result = {
        "benchmark": "loopback_stress",
        "command": "flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/loopback_stress.py "
                   f"--rounds {args.rounds}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "baseline_rev": args.baseline_rev,
        "targets": {"shell_clients_ok": CLIENTS, "connections_served_or_refused_cleanly": CONNECTIONS,
                    "thread_growth": 0, "fd_growth": 0, "push_fail_max_s": 1.0, "alive_2s_after_sigterm": 0},
        "summary": {name: summary(values) for name, values in rounds.items()},
        "rounds": rounds,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("baseline", "candidate"):
        print(name, json.dumps(result["summary"][name]))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
