"""Transport through the host ADB server (``adb`` from platform-tools), via adbutils.

The default way to reach phones: it shares the adb server that Android Studio or a
device farm (DeviceFarmer, a remote ``host:port`` server) already runs, instead of
fighting it for the USB device. adbutils gives the server connection; on top of it
this module runs ``shell,v2`` itself (separate stdout/stderr, exit code, a deadline
on every read) and the sync protocol through ``sync_protocol.SyncClient`` (64 KiB
chunks, FAIL messages kept). Devices without shell_v2 get an exit-code marker.
Not for: machines without an adb server (``adbshell_transport``).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import adbutils
from adbutils.errors import AdbError

from android_harness.sync_protocol import SyncClient
from android_harness.transport import (
    DEFAULT_SHELL_TIMEOUT_S, DEFAULT_TRANSFER_TIMEOUT_S, Command, DirEntry, FileStat, ShellResult,
    TransferResult, Transport, command_line, parse_host_port)
from wbmm_mobile.errors import (
    DeviceError, DeviceGoneError, DeviceNotFoundError, DeviceTimeoutError, DeviceUnauthorizedError)

__all__ = ["AdbServerTransport", "list_server_devices", "UNAUTHORIZED_HINT", "ServerDevice"]

UNAUTHORIZED_HINT = ("the device refused this computer's ADB key: unlock the phone and accept the "
                     "'Allow USB debugging?' prompt on the phone, then retry")
_TCP_SERIAL = re.compile(r"^[^\s:]+:\d+$")
# States the adb server passes through before settling on device/unauthorized.
_TRANSIENT_STATES = {"offline", "connecting", "authorizing", "unknown"}


def _server_address(server: str | None) -> tuple[str, int]:
    if server:
        return parse_host_port(server, default_port=5037)
    return (os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1"),
            int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037")))


@dataclass(frozen=True)
class ServerDevice:
    """One row of ``adb devices``: serial and state (device, unauthorized, offline ...)."""

    serial: str
    state: str


def _client(host: str, port: int, timeout: float) -> adbutils.AdbClient:
    """An adbutils client. When no server answers, adbutils starts `adb start-server`, which
    listens where $ANDROID_ADB_SERVER_PORT (default 5037) says: right for the default local
    server, wrong for a remote one or another port, so those must answer now."""
    default_port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
    if host not in ("127.0.0.1", "localhost", "::1") or port != default_port:
        try:
            socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
        except OSError as exc:
            raise DeviceNotFoundError(f"no ADB server answers at {host}:{port}: {exc}") from None
    return adbutils.AdbClient(host=host, port=port, socket_timeout=timeout)


def list_server_devices(server: str | None = None, timeout: float = 10.0) -> list[ServerDevice]:
    host, port = _server_address(server)
    client = _client(host, port, timeout)
    try:
        return [ServerDevice(info.serial, info.state) for info in client.list()]
    except (AdbError, OSError) as exc:
        raise DeviceNotFoundError(f"no ADB server at {host}:{port}: {exc}") from None


def _map_error(exc: BaseException, serial: str) -> DeviceError:
    """adbutils / socket errors -> our DeviceError family, with the server's own words."""
    if isinstance(exc, DeviceError):
        return exc
    text = str(exc).strip() or type(exc).__name__
    lowered = text.lower()
    if "unauthorized" in lowered:
        return DeviceUnauthorizedError(f"{serial}: {UNAUTHORIZED_HINT}")
    if isinstance(exc, (socket.timeout, adbutils.AdbTimeout, TimeoutError)):
        return DeviceTimeoutError(f"{serial}: no answer in time ({text})")
    if "not found" in lowered or "offline" in lowered or "closed" in lowered or isinstance(exc, OSError):
        return DeviceGoneError(f"{serial}: device disconnected or offline ({text})")
    return DeviceError(f"{serial}: {text}")


class AdbServerTransport(Transport):
    """A device reached through an adb server (local by default, or ``server="host:port"``).

    ``serial`` None picks the only device; a ``host:port`` serial that the server does not
    know yet is ``adb connect``-ed first."""

    def __init__(self, serial: str | None = None, server: str | None = None, io_timeout: float = 60.0,
                 connect_timeout: float = 20.0):
        host, port = _server_address(server)
        self.server = f"{host}:{port}"
        self.io_timeout = io_timeout
        self._client = _client(host, port, io_timeout)
        self.serial = self._choose_serial(serial, connect_timeout)
        self._device = self._client.device(serial=self.serial)
        self._features: set[str] | None = None
        self._wait_until_ready(connect_timeout)

    # -- device selection ----------------------------------------------------------------------
    def _states(self) -> dict[str, str]:
        try:
            return {info.serial: info.state for info in self._client.list()}
        except (AdbError, OSError) as exc:
            raise DeviceNotFoundError(f"no ADB server at {self.server}: {exc}") from None

    def _choose_serial(self, serial: str | None, timeout: float) -> str:
        states = self._states()
        if serial is None:
            serial = os.environ.get("ANDROID_SERIAL") or None
        if serial is None:
            if not states:
                raise DeviceNotFoundError(f"no device attached to the ADB server at {self.server}")
            if len(states) > 1:
                raise DeviceNotFoundError(
                    f"{len(states)} devices on {self.server} ({', '.join(sorted(states))}): pick one by serial")
            return next(iter(states))
        if serial not in states:
            if not _TCP_SERIAL.match(serial):
                raise DeviceNotFoundError(f"no device {serial!r} on the ADB server at {self.server}")
            self._adb_connect(serial, timeout)
        return serial

    def _adb_connect(self, address: str, timeout: float) -> None:
        try:
            answer = self._client.connect(address, timeout=timeout)
        except (AdbError, OSError) as exc:
            raise DeviceNotFoundError(f"adb connect {address}: {exc}") from None
        if "authenticate" in answer or "unauthorized" in answer:
            # adb gives up waiting early while the phone shows its key prompt; the state
            # poll in _wait_until_ready decides (authorized a moment later, or unauthorized).
            return
        if "connected" not in answer or "unable" in answer or "failed" in answer:
            raise DeviceNotFoundError(f"adb connect {address}: {answer.strip()}")

    def _wait_until_ready(self, timeout: float) -> None:
        start = time.monotonic()
        deadline = start + timeout
        # A prompt being answered right now turns "unauthorized" into "device" within moments.
        unauthorized_deadline = start + min(timeout, 3.0)
        state = "unknown"
        while True:
            state = self._states().get(self.serial, "missing")
            if state == "device":
                return
            if state == "unauthorized" and time.monotonic() > unauthorized_deadline:
                raise DeviceUnauthorizedError(f"{self.serial}: {UNAUTHORIZED_HINT}")
            if state == "missing":
                raise DeviceGoneError(f"{self.serial}: no longer listed by the ADB server at {self.server}")
            if state not in _TRANSIENT_STATES | {"unauthorized"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if state in ("offline", "authorizing", "connecting"):
            # An unanswered key prompt shows as "authorizing"/"offline" on some servers.
            raise DeviceGoneError(f"{self.serial}: still {state} after {timeout:.0f} s "
                                  f"(if the phone shows a USB debugging prompt, accept it)")
        raise DeviceError(f"{self.serial}: state {state!r}, not usable")

    def reconnect(self, timeout: float = 30.0) -> None:
        if _TCP_SERIAL.match(self.serial):
            try:
                self._client.disconnect(self.serial)
            except (AdbError, OSError):
                pass
            self._adb_connect(self.serial, timeout)
        self._features = None
        self._wait_until_ready(timeout)

    def features(self) -> set[str]:
        if self._features is None:
            try:
                self._features = set(self._device.get_features().split(","))
            except (AdbError, OSError) as exc:
                raise _map_error(exc, self.serial) from None
        return self._features

    # -- connections ------------------------------------------------------------------------------
    def _open(self, service: str, timeout: float):
        try:
            connection = self._device.open_transport(timeout=min(timeout, self.io_timeout))
            connection.send_command(service)
            connection.check_okay()
            return connection
        except (AdbError, OSError) as exc:
            raise _map_error(exc, self.serial) from None

    # -- shell ------------------------------------------------------------------------------------
    def shell(self, command: Command, timeout: float = DEFAULT_SHELL_TIMEOUT_S) -> ShellResult:
        line = command_line(command)
        if "shell_v2" in self.features():
            return self._shell_v2(line, timeout)
        return self._shell_with_marker(line, timeout)

    def _shell_v2(self, line: str, timeout: float) -> ShellResult:
        deadline = time.monotonic() + timeout
        connection = self._open(f"shell,v2,raw:{line}", timeout)
        sock = connection.conn
        streams = {1: bytearray(), 2: bytearray()}
        buffer = bytearray()
        exit_code = None
        try:
            while exit_code is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeoutError(f"{self.serial}: `{line}` still running after {timeout:.0f} s")
                sock.settimeout(min(remaining, self.io_timeout))
                try:
                    chunk = sock.recv(1 << 16)
                except socket.timeout:
                    if time.monotonic() >= deadline:
                        raise DeviceTimeoutError(
                            f"{self.serial}: `{line}` still running after {timeout:.0f} s") from None
                    continue   # a silent command is fine until its own deadline
                except OSError as exc:
                    raise DeviceGoneError(f"{self.serial}: connection lost during `{line}`: {exc}") from None
                if not chunk:
                    raise DeviceGoneError(f"{self.serial}: device disconnected while running `{line}`")
                buffer += chunk
                while len(buffer) >= 5 and exit_code is None:
                    kind = buffer[0]
                    length = int.from_bytes(buffer[1:5], "little")
                    if len(buffer) < 5 + length:
                        break
                    payload = bytes(buffer[5:5 + length])
                    del buffer[:5 + length]
                    if kind in streams:
                        streams[kind] += payload
                    elif kind == 3:
                        exit_code = payload[0] if payload else 255
        finally:
            connection.close()
        return ShellResult(line, exit_code, streams[1].decode("utf-8", "replace"),
                           streams[2].decode("utf-8", "replace"))

    def _shell_with_marker(self, line: str, timeout: float) -> ShellResult:
        """Old devices (no shell_v2): stdout/stderr arrive mixed, the exit code after a marker."""
        marker = f"__WBMM_EXIT_{secrets.token_hex(4)}__"
        # A subshell, so `exit N` in the command still reaches the marker.
        connection = self._open(f"shell:( {line}\n); echo {marker}$?", timeout)
        deadline = time.monotonic() + timeout
        data = bytearray()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceTimeoutError(f"{self.serial}: `{line}` still running after {timeout:.0f} s")
                connection.conn.settimeout(remaining)
                try:
                    chunk = connection.conn.recv(1 << 16)
                except socket.timeout:
                    continue
                except OSError as exc:
                    raise DeviceGoneError(f"{self.serial}: connection lost during `{line}`: {exc}") from None
                if not chunk:
                    break
                data += chunk
        finally:
            connection.close()
        text = data.decode("utf-8", "replace")
        position = text.rfind(marker)
        if position < 0:
            raise DeviceGoneError(f"{self.serial}: `{line}` ended without its exit status (device gone?)")
        code_text = text[position + len(marker):].strip()
        return ShellResult(line, int(code_text) if code_text.isdigit() else 255, text[:position], "")

    # -- files ------------------------------------------------------------------------------------
    def _sync(self, timeout: float) -> tuple[object, SyncClient]:
        connection = self._open("sync:", timeout)
        return connection, SyncClient(connection.conn, io_timeout=min(timeout, self.io_timeout))

    def _with_sync(self, timeout: float, action):
        connection, client = self._sync(timeout)
        try:
            result = action(client)
            client.quit()
            return result
        except DeviceError:
            raise
        except (AdbError, OSError) as exc:
            raise _map_error(exc, self.serial) from None
        finally:
            connection.close()

    def push(self, local: str | Path, remote: str, mode: int = 0o644,
             timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        if not Path(local).is_file():
            raise FileNotFoundError(f"{local}: no such local file")
        start = time.monotonic()
        size = self._with_sync(timeout, lambda client: client.push(local, remote, mode=mode, timeout=timeout))
        return TransferResult(str(local), remote, size, time.monotonic() - start)

    def pull(self, remote: str, local: str | Path, timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        start = time.monotonic()
        size = self._with_sync(timeout, lambda client: client.pull(remote, local, timeout=timeout))
        return TransferResult(str(local), remote, size, time.monotonic() - start)

    def stat(self, remote: str, timeout: float = 60.0) -> FileStat:
        return self._with_sync(timeout, lambda client: client.stat(remote))

    def list(self, remote: str, timeout: float = 60.0) -> list[DirEntry]:
        return self._with_sync(timeout, lambda client: client.list(remote))
