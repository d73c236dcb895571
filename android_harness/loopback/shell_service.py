"""The loopback device's ``shell:``, ``shell,v2:`` and ``exec:`` services.

The command runs on this machine through ``/bin/sh -c`` with cwd = the root folder
and device paths rewritten into it (``rootfs``). ``shell,v2`` frames stdout and
stderr separately and ends with an exit-code packet, like adbd; plain ``shell:``
sends stdout and stderr mixed and no exit code (clients append a marker), and
``exec:`` sends stdout alone. Each command leads its own process group (its own
session), registered in the device's ``ProcessGroups``: the whole group is killed when
the stream or the connection goes away, and ``ProcessGroups.end_all`` kills every group
when the device stops. Not for: file transfer (``sync_service``).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading
import time

from android_harness.loopback.rootfs import RootFolder
from android_harness.loopback.streams import Stream, StreamClosed
from android_harness.loopback.wire import (
    SHELL_CLOSE_STDIN, SHELL_EXIT, SHELL_STDERR, SHELL_STDIN, SHELL_STDOUT, shell_v2_packet)

__all__ = ["parse_shell_service", "run_shell_service", "ProcessGroups"]

# How long output pumps may keep draining after the command exited (a background child
# that keeps the pipe open must not hold the stream forever).
_DRAIN_TIMEOUT_S = 10.0
_POLL_S = 0.2


class ProcessGroups:
    """The commands a device is running, so stopping the device can end all of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._closed = False

    def add(self, process: subprocess.Popen) -> bool:
        """Register a started command; False (and the command is killed) once the device stops."""
        with self._lock:
            if not self._closed:
                self._running.add(process)
                return True
        _kill_group(process)
        return False

    def discard(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def pids(self) -> list[int]:
        with self._lock:
            return [process.pid for process in self._running]

    def end_all(self, wait_s: float = 1.0) -> None:
        """Kill every running command's process group, and reap the commands."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for process in running:
            _kill_group(process)
        deadline = time.monotonic() + wait_s
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    def reopen(self) -> None:
        with self._lock:
            self._closed = False


def parse_shell_service(destination: str) -> tuple[str, list[str], str]:
    """'shell,v2,raw:ls -l' -> ('shell', ['v2', 'raw'], 'ls -l'); 'exec:cmd' -> ('exec', [], 'cmd')."""
    head, _, command = destination.partition(":")
    name, *options = head.split(",")
    return name, options, command


def run_shell_service(stream: Stream, destination: str, rootfs: RootFolder,
                      processes: ProcessGroups | None = None) -> None:
    name, options, command = parse_shell_service(destination)
    protocol_v2 = name == "shell" and "v2" in options
    interactive = not command.strip()
    argv = ["/bin/sh", "-c", rootfs.rewrite_command(command)] if not interactive else ["/bin/sh"]
    stdin = subprocess.PIPE if (protocol_v2 or interactive) else subprocess.DEVNULL
    if name == "exec":
        stderr = subprocess.DEVNULL
    else:
        stderr = subprocess.PIPE if protocol_v2 else subprocess.STDOUT
    try:
        process = subprocess.Popen(argv, cwd=rootfs.root, env=rootfs.shell_environment(), stdin=stdin,
                                   stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    except OSError as exc:
        _send_failure(stream, protocol_v2, f"/system/bin/sh: {exc}\n", 127)
        return
    if processes is not None and not processes.add(process):
        _send_failure(stream, protocol_v2, "/system/bin/sh: the device is stopping\n", 137)
        return
    try:
        _serve_process(stream, process, protocol_v2)
    finally:
        _kill_group(process)
        if processes is not None:
            processes.discard(process)


def _serve_process(stream: Stream, process: subprocess.Popen, protocol_v2: bool) -> None:

    def pump(fd_stream, kind: int) -> None:
        fd = fd_stream.fileno()
        try:
            while True:
                data = os.read(fd, 64 * 1024)
                if not data:
                    return
                stream.write(shell_v2_packet(kind, data) if protocol_v2 else data)
        except (StreamClosed, OSError):
            _kill_group(process)
        finally:
            fd_stream.close()

    pumps = [threading.Thread(target=pump, args=(process.stdout, SHELL_STDOUT), daemon=True)]
    if protocol_v2:
        pumps.append(threading.Thread(target=pump, args=(process.stderr, SHELL_STDERR), daemon=True))
    if process.stdin is not None:
        pumps.append(threading.Thread(target=_feed_stdin, args=(stream, process, protocol_v2), daemon=True))
    for thread in pumps:
        thread.start()

    while True:
        try:
            exit_code = process.wait(timeout=_POLL_S)
            break
        except subprocess.TimeoutExpired:
            if stream.closed:
                _kill_group(process)
    for thread in pumps[:2]:
        thread.join(_DRAIN_TIMEOUT_S)
    try:
        if protocol_v2 and not stream.closed:
            # Shell exit codes travel as one byte; a signal death looks like 128 + signal.
            code = exit_code if exit_code >= 0 else 128 - exit_code
            stream.write(shell_v2_packet(SHELL_EXIT, struct.pack("B", code & 0xFF)))
    except StreamClosed:
        pass
    finally:
        _kill_group(process)
        stream.close()


def _feed_stdin(stream: Stream, process: subprocess.Popen, protocol_v2: bool) -> None:
    buffer = bytearray()
    try:
        while process.poll() is None:
            try:
                data = stream.read(timeout=_POLL_S * 5)
            except TimeoutError:
                continue
            if not protocol_v2:
                process.stdin.write(data)
                process.stdin.flush()
                continue
            buffer += data
            while len(buffer) >= 5:
                kind, length = struct.unpack_from("<BI", buffer, 0)
                if len(buffer) < 5 + length:
                    break
                payload = bytes(buffer[5:5 + length])
                del buffer[:5 + length]
                if kind == SHELL_STDIN:
                    process.stdin.write(payload)
                    process.stdin.flush()
                elif kind == SHELL_CLOSE_STDIN:
                    process.stdin.close()
                    return
                # window size changes and unknown ids: nothing to do without a pty
    except (StreamClosed, OSError, ValueError):
        pass
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the command's whole process group, also after the shell itself exited: a child
    it left running in the background must not outlive the stream. (Linux never hands out a
    process id that is still some group's id, so this cannot hit an unrelated group.)"""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _send_failure(stream: Stream, protocol_v2: bool, message: str, code: int) -> None:
    try:
        if protocol_v2:
            stream.write(shell_v2_packet(SHELL_STDERR, message.encode()))
            stream.write(shell_v2_packet(SHELL_EXIT, bytes([code])))
        else:
            stream.write(message.encode())
    except StreamClosed:
        pass
    stream.close()
