"""The loopback device's ``shell:``, ``shell,v2:`` and ``exec:`` services.

The command runs on this machine through ``/bin/sh -c`` with cwd = the root folder
and device paths rewritten into it (``rootfs``). ``shell,v2`` frames stdout and
stderr separately and ends with an exit-code packet, like adbd; plain ``shell:``
sends stdout and stderr mixed and no exit code (clients append a marker), and
``exec:`` sends stdout alone. When the stream or the connection goes away, the
command's whole process group is killed. Not for: file transfer (``sync_service``).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading

from android_harness.loopback.rootfs import RootFolder
from android_harness.loopback.streams import Stream, StreamClosed
from android_harness.loopback.wire import (
    SHELL_CLOSE_STDIN, SHELL_EXIT, SHELL_STDERR, SHELL_STDIN, SHELL_STDOUT, shell_v2_packet)

__all__ = ["parse_shell_service", "run_shell_service"]

# How long output pumps may keep draining after the command exited (a background child
# that keeps the pipe open must not hold the stream forever).
_DRAIN_TIMEOUT_S = 10.0
_POLL_S = 0.2


def parse_shell_service(destination: str) -> tuple[str, list[str], str]:
    """'shell,v2,raw:ls -l' -> ('shell', ['v2', 'raw'], 'ls -l'); 'exec:cmd' -> ('exec', [], 'cmd')."""
    head, _, command = destination.partition(":")
    name, *options = head.split(",")
    return name, options, command


def run_shell_service(stream: Stream, destination: str, rootfs: RootFolder) -> None:
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
    if process.poll() is None:
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
