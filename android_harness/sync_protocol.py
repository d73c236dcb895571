"""The ADB file sync sub-protocol (the ``sync:`` service): ids, record layouts, and a client.

Both ends live in this project: the loopback device serves it
(``loopback.sync_service``) and ``SyncClient`` speaks it to a real adbd through
the host ADB server (``adbutils_transport``). Every record is little-endian:
a request is ``id(4) + uint32 length + path``; file data travels in DATA chunks of
at most 64 KiB; errors come back as FAIL + message. Not for: choosing which
device to talk to, or shell commands.
"""

from __future__ import annotations

import os
import socket
import stat as stat_module
import struct
import time
from pathlib import Path

from android_harness.transport import DirEntry, FileStat
from wbmm_mobile.errors import AdbProtocolError, DeviceError, DeviceGoneError, DeviceNoSpaceError, DeviceTimeoutError

__all__ = [
    "SYNC_DATA_MAX", "SYNC_PATH_MAX", "ID_STAT", "ID_STA2", "ID_LST2", "ID_LIST", "ID_LIS2", "ID_DENT",
    "ID_DNT2", "ID_SEND", "ID_RECV", "ID_DONE", "ID_DATA", "ID_OKAY", "ID_FAIL", "ID_QUIT",
    "REQUEST", "STAT_V1", "STAT_V2", "DENT_V1", "DENT_V2", "SyncClient",
]

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024

ID_STAT = b"STAT"   # lstat, v1 record
ID_STA2 = b"STA2"   # stat, v2 record
ID_LST2 = b"LST2"   # lstat, v2 record
ID_LIST = b"LIST"
ID_LIS2 = b"LIS2"
ID_DENT = b"DENT"
ID_DNT2 = b"DNT2"
ID_SEND = b"SEND"
ID_RECV = b"RECV"
ID_DONE = b"DONE"
ID_DATA = b"DATA"
ID_OKAY = b"OKAY"
ID_FAIL = b"FAIL"
ID_QUIT = b"QUIT"

REQUEST = struct.Struct("<4sI")                  # id, path length (or data length, or mtime)
STAT_V1 = struct.Struct("<4sIII")                # id, mode, size, mtime
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")        # id, error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
DENT_V1 = struct.Struct("<4sIIII")               # id, mode, size, mtime, name length
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")       # as STAT_V2 + name length


class SyncClient:
    """Sync requests on one socket that already switched to the ``sync:`` service.

    The socket's timeout bounds each wait; ``deadline`` (time.monotonic) bounds a whole
    transfer. One request at a time; call ``quit()`` when done."""

    def __init__(self, sock: socket.socket, io_timeout: float = 60.0):
        self._sock = sock
        self._sock.settimeout(io_timeout)
        self._deadline = float("inf")

    # -- low level ----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self._check_deadline()
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise DeviceTimeoutError("device stopped accepting data (sync send timed out)") from None
        except OSError as exc:
            raise DeviceGoneError(f"device connection lost during sync: {exc}") from None

    def _recv_exact(self, size: int) -> bytes:
        parts, remaining = [], size
        while remaining:
            self._check_deadline()
            try:
                chunk = self._sock.recv(min(remaining, 1 << 20))
            except socket.timeout:
                raise DeviceTimeoutError("device stopped answering (sync read timed out)") from None
            except OSError as exc:
                raise DeviceGoneError(f"device connection lost during sync: {exc}") from None
            if not chunk:
                raise DeviceGoneError("device closed the sync connection (disconnected?)")
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise DeviceTimeoutError("sync transfer did not finish within its timeout")

    def _request(self, sync_id: bytes, path: str) -> None:
        encoded = path.encode("utf-8")
        if len(encoded) > SYNC_PATH_MAX:
            raise DeviceError(f"remote path longer than {SYNC_PATH_MAX} bytes: {path[:60]}...")
        self._send(REQUEST.pack(sync_id, len(encoded)) + encoded)

    def _fail_message(self, length: int) -> str:
        return self._recv_exact(length).decode("utf-8", "replace")

    @staticmethod
    def _raise_fail(remote: str, message: str) -> None:
        if "No space left" in message:
            raise DeviceNoSpaceError(f"{remote}: {message}")
        raise DeviceError(f"{remote}: {message}")

    # -- requests -----------------------------------------------------------------------------
    def stat(self, remote: str) -> FileStat:
        self._request(ID_STAT, remote)
        sync_id, mode, size, mtime = STAT_V1.unpack(self._recv_exact(STAT_V1.size))
        if sync_id != ID_STAT:
            raise AdbProtocolError(f"STAT answered with {sync_id!r}")
        return FileStat(remote, mode, size, mtime)

    def list(self, remote: str) -> list[DirEntry]:
        self._request(ID_LIST, remote)
        entries = []
        while True:
            sync_id, mode, size, mtime, name_length = DENT_V1.unpack(self._recv_exact(DENT_V1.size))
            if sync_id == ID_DONE:
                break
            if sync_id != ID_DENT:
                raise AdbProtocolError(f"LIST answered with {sync_id!r}")
            name = self._recv_exact(name_length).decode("utf-8", "surrogateescape")
            if name not in (".", ".."):
                entries.append(DirEntry(name, mode, size, mtime))
        return sorted(entries, key=lambda entry: entry.name)

    def push(self, local: str | Path, remote: str, mode: int = 0o644, timeout: float = 600.0) -> int:
        """Send a local file; returns the byte count. The device answers OKAY or FAIL only after DONE."""
        self._deadline = time.monotonic() + timeout
        try:
            self._request(ID_SEND, f"{remote},{stat_module.S_IFREG | (mode & 0o7777)}")
            sent = 0
            with open(local, "rb") as stream:
                while True:
                    chunk = stream.read(SYNC_DATA_MAX)
                    if not chunk:
                        break
                    self._send(REQUEST.pack(ID_DATA, len(chunk)) + chunk)
                    sent += len(chunk)
            self._send(REQUEST.pack(ID_DONE, int(os.stat(local).st_mtime) & 0xFFFFFFFF))
            sync_id, length = REQUEST.unpack(self._recv_exact(REQUEST.size))
            if sync_id == ID_FAIL:
                self._raise_fail(remote, self._fail_message(length))
            if sync_id != ID_OKAY:
                raise AdbProtocolError(f"SEND answered with {sync_id!r}")
            return sent
        finally:
            self._deadline = float("inf")

    def pull(self, remote: str, local: str | Path, timeout: float = 600.0) -> int:
        """Receive a remote file into ``local`` (written to a temporary name, renamed when complete)."""
        self._deadline = time.monotonic() + timeout
        local = Path(local)
        partial = local.with_name(local.name + ".partial")
        received = 0
        try:
            self._request(ID_RECV, remote)
            with open(partial, "wb") as stream:
                while True:
                    sync_id, length = REQUEST.unpack(self._recv_exact(REQUEST.size))
                    if sync_id == ID_DONE:
                        break
                    if sync_id == ID_FAIL:
                        self._raise_fail(remote, self._fail_message(length))
                    if sync_id != ID_DATA or length > SYNC_DATA_MAX:
                        raise AdbProtocolError(f"RECV answered with {sync_id!r} ({length} bytes)")
                    stream.write(self._recv_exact(length))
                    received += length
            os.replace(partial, local)
            return received
        finally:
            self._deadline = float("inf")
            if partial.exists():
                partial.unlink()

    def quit(self) -> None:
        try:
            self._sock.sendall(REQUEST.pack(ID_QUIT, 0))
        except OSError:
            pass
