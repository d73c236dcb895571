"""Adversarial ADB traffic against a loopback device, measured: for tests/test_loopback_*.py and
benchmarks/loopback_stress.py (one implementation, so the test asserts what the benchmark times).

- ``open_connections``: thousands of TCP connections at once, each saying CNXN; every one
  must be served (an AUTH or CNXN comes back) or refused cleanly (end of stream), never
  reset or left unanswered;
- ``shell_burst``: many adb-shell clients (the project's own transport, RSA-signed) started
  at the same moment, each running a command;
- ``push_onto_directory``: SEND to a directory, which must be answered FAIL, quickly;
- ``resource_counts``: this process's threads and open file descriptors, to compare before
  and after a storm;
- ``sigterm_leaves_no_children``: the ``loopback-device`` command started, commands left
  running through it, SIGTERM, and which of its commands are still alive 2 s later.
Everything is on 127.0.0.1 and every wait is bounded. Not for: normal use of the device.
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from android_harness.loopback.wire import A_AUTH, A_CNXN, HEADER, Packet, encode_packet

__all__ = ["resource_counts", "raise_fd_limit", "open_connections", "ConnectionStorm", "shell_burst", "ShellBurst",
           "push_onto_directory", "PushAnswer", "sigterm_leaves_no_children", "wait_until"]


def resource_counts() -> tuple[int, int]:
    """(threads, open file descriptors) of this process."""
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (up to the hard limit);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def wait_until(condition, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout_s`` passed; whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


@dataclass
class ConnectionStorm:
    opened: int = 0
    served: int = 0            # the device answered AUTH or CNXN
    refused: int = 0           # closed cleanly (end of stream) before answering
    reset: int = 0             # connection reset / refused by the kernel
    unanswered: int = 0        # nothing within the timeout
    dropped_after_answer: int = 0   # served, then closed by the device within a second (a dead connection)
    connect_failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (self.opened > 0 and self.served + self.refused == self.opened and not self.connect_failed
                and not self.dropped_after_answer)


def open_connections(port: int, count: int, timeout_s: float = 30.0) -> ConnectionStorm:
    """Open ``count`` connections at once, each sending CNXN, and classify the first answer."""
    storm = ConnectionStorm()
    started = time.monotonic()
    sockets: list[socket.socket] = []
    hello = encode_packet(Packet(A_CNXN, 0x01000001, 256 * 1024, b"host::stress\0"))
    served: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
                sock.sendall(hello)
                sock.setblocking(False)
                sockets.append(sock)
            except OSError as exc:
                storm.connect_failed += 1
                if len(storm.errors) < 5:
                    storm.errors.append(f"connect: {exc}")
        storm.opened = len(sockets)
        pending = {sock.fileno(): sock for sock in sockets}
        buffers: dict[int, bytes] = {fd: b"" for fd in pending}
        deadline = time.monotonic() + timeout_s
        with _selector() as selector:
            for sock in sockets:
                selector.register(sock, selectors.EVENT_READ)
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    fd, sock = key.fd, key.fileobj
                    try:
                        chunk = sock.recv(HEADER.size - len(buffers[fd]))
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        storm.reset += 1
                        chunk = None
                    if chunk == b"":
                        storm.refused += 1
                    elif chunk:
                        buffers[fd] += chunk
                        if len(buffers[fd]) < HEADER.size:
                            continue
                        command = struct.unpack_from("<I", buffers[fd])[0]
                        if command in (A_AUTH, A_CNXN):
                            storm.served += 1
                            served.append(sock)
                        elif len(storm.errors) < 5:
                            storm.errors.append(f"unexpected first packet 0x{command:08x}")
                    selector.unregister(sock)
                    del pending[fd]
        storm.unanswered = len(pending)
        storm.dropped_after_answer = _closed_within(served, 1.0)
    finally:
        for sock in sockets:
            sock.close()
        storm.seconds = time.monotonic() - started
    return storm


def _closed_within(sockets: list[socket.socket], seconds: float) -> int:
    """How many of ``sockets`` the peer closes (end of stream or reset) within ``seconds``; the
    rest stay open, as a served connection waiting for the client's next packet should."""
    closed = 0
    if not sockets:
        return 0
    deadline = time.monotonic() + seconds
    with _selector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed += 1
                    selector.unregister(key.fileobj)
    return closed


def _selector() -> selectors.BaseSelector:
    return selectors.PollSelector() if hasattr(selectors, "PollSelector") else selectors.DefaultSelector()


@dataclass
class ShellBurst:
    clients: int
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def shell_burst(port: int, clients: int, key_path: str | Path, timeout_s: float = 120.0) -> ShellBurst:
    """``clients`` adb-shell clients released at the same moment (a barrier), each connecting,
    authenticating and running ``echo <n>``; ok when each gets its own number back."""
    from android_harness.adbshell_transport import AdbShellTransport

    burst = ShellBurst(clients)
    barrier = threading.Barrier(clients)
    lock = threading.Lock()

    open_transports = []

    def one(n: int) -> None:
        transport = None
        try:
            barrier.wait(timeout_s)
            transport = AdbShellTransport("127.0.0.1", port, key_path=key_path, io_timeout=timeout_s,
                                          auth_timeout=timeout_s, connect=False)
            open_transports.append(transport)
            transport.reconnect(timeout=timeout_s)
            good = transport.shell(f"echo {n}", timeout=timeout_s).stdout == f"{n}\n"
            error = None if good else "wrong output"
        except Exception as exc:  # noqa: BLE001 - counted and reported, whatever it is
            good, error = False, f"{type(exc).__name__}: {exc}"
        finally:
            if transport is not None:
                transport.close()
        with lock:
            if good:
                burst.ok += 1
            else:
                burst.failed += 1
                if len(burst.errors) < 5:
                    burst.errors.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(n,), name=f"burst-{n}", daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s + 30
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for transport in list(open_transports):   # a client still stuck past the deadline is cut off
        transport.abort()
    for thread in threads:
        thread.join(10)
    burst.seconds = time.monotonic() - started
    return burst


@dataclass(frozen=True)
class PushAnswer:
    target: str
    seconds: float
    failed: bool
    message: str


def push_onto_directory(port: int, key_path: str | Path, targets=("/data/local/tmp", "/sdcard/", "/"),
                        timeout_s: float = 30.0) -> list[PushAnswer]:
    """Push a small file onto each directory ``target`` with the project's transport; how long
    until the device's answer and what it said."""
    from android_harness.adbshell_transport import AdbShellTransport
    from wbmm_mobile.errors import DeviceError

    answers = []
    with tempfile.TemporaryDirectory(prefix="wbmm-stress-") as scratch:
        local = Path(scratch) / "payload.bin"
        local.write_bytes(os.urandom(4096))
        for target in targets:
            transport = AdbShellTransport("127.0.0.1", port, key_path=key_path, io_timeout=timeout_s)
            # A device that never answers must not hold the measurement: drop the connection then.
            watchdog = threading.Timer(timeout_s, transport.abort)
            watchdog.start()
            started = time.monotonic()
            try:
                transport.push(local, target, timeout=timeout_s)
                failed, message = False, "accepted"
            except DeviceError as exc:
                failed, message = True, str(exc)
            finally:
                watchdog.cancel()
                transport.close()
            seconds = time.monotonic() - started
            if seconds >= timeout_s:
                failed, message = False, f"no answer within {timeout_s:g} s"
            answers.append(PushAnswer(target, seconds, failed, message))
    return answers


def _session_members(session_id: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")" of the name: state, ppid, pgrp, session ...; zombies are not alive.
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(entry))
    return members


def sigterm_leaves_no_children(key_path: str | Path, commands: int = 3, grace_s: float = 2.0,
                               environ: dict | None = None, checkout: str | Path | None = None) -> dict:
    """Start ``wbmm-mobile loopback-device``, leave ``commands`` long shell commands running
    through it (each with a background child), SIGTERM it, and count its commands' processes
    still alive ``grace_s`` later. Returns the figures."""
    from android_harness.adbshell_transport import AdbShellTransport
    from wbmm_mobile.errors import DeviceError

    with tempfile.TemporaryDirectory(prefix="wbmm-stress-") as scratch:
        root = Path(scratch) / "root"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # The checkout whose daemon is measured: on PYTHONPATH and as cwd (``-m`` puts the cwd first).
        checkout = str(checkout or Path(__file__).resolve().parents[2])
        env = dict(environ or os.environ, PYTHONPATH=checkout)
        daemon = subprocess.Popen([sys.executable, "-m", "wbmm_mobile.cli", "loopback-device", "--root", str(root),
                                   "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env, cwd=checkout)
        transports = []
        try:
            if not daemon.stdout.readline():
                raise RuntimeError(f"loopback-device did not start: {daemon.stderr.read()[-500:]}")
            pid_dir = root / "data/local/tmp"

            def hold(n: int) -> None:
                transport = AdbShellTransport("127.0.0.1", port, key_path=key_path, io_timeout=60)
                transports.append(transport)
                try:
                    transport.shell(f"echo $$ > /data/local/tmp/held-{n}.pid; sleep 300 & sleep 301", timeout=60)
                except DeviceError:
                    pass   # the device went away under it: expected

            holders = [threading.Thread(target=hold, args=(n,), daemon=True) for n in range(commands)]
            for thread in holders:
                thread.start()
            wait_until(lambda: len(list(pid_dir.glob("held-*.pid"))) == commands, 30)
            time.sleep(0.3)   # the background sleeps are started after the pid is written
            sessions = [int(p.read_text()) for p in pid_dir.glob("held-*.pid") if p.read_text().strip()]
            before = sum(len(_session_members(s)) for s in sessions)
            daemon.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            time.sleep(max(0.0, grace_s - (time.monotonic() - sent)))
            alive = [pid for s in sessions for pid in _session_members(s)]
            try:
                code = daemon.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            for session in sessions:   # what a daemon left behind is not left running after the measurement
                try:
                    os.killpg(session, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            return {"commands": len(sessions), "processes_before": before, "alive_after_s": grace_s,
                    "alive": len(alive), "daemon_exit_code": code}
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
            for transport in transports:
                transport.close()
