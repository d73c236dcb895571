"""Transport straight to a device's adbd through adb-shell (TCP, or USB with the ``usb`` extra).

For machines without platform-tools: this process is the ADB host. adb-shell needs
four fixes to be usable for benchmarking, all made here:
- TCP_NODELAY on its socket (Nagle + delayed ACK turn a 1 MB push from 0.03 s into 22 s);
- a socket that reports a closed connection (stock adb-shell spins on empty reads
  until its read timeout when the device disappears);
- read timeouts as long as the command's own timeout (its 10 s default kills a
  benchmark that prints nothing for a while);
- exit codes and stderr: it only speaks ``shell:`` (stdout and stderr mixed, no exit
  code), so the command's stderr goes to a temporary file on the device and the exit
  code is printed after a random marker.
RSA keys are the ones adb itself signs with: the keys in ``$ADB_VENDOR_KEYS`` when set,
and ``~/.android/adbkey`` (shared with platform-tools, so a phone that trusts this
computer's adb trusts us too), generated there with mode 0600 when no key exists.
The stderr files of commands cut off by a disconnect are removed on the next
connection and on ``close()``, so none stays on the device.
Not for: sharing a phone with a running adb server (``adbutils_transport``).
"""

from __future__ import annotations

import os
import secrets
import socket
import stat as stat_module
import tempfile
import time
from pathlib import Path

from adb_shell import exceptions as adb_exceptions
from adb_shell.adb_device import AdbDevice
from adb_shell.auth.keygen import keygen
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from adb_shell.transport.tcp_transport import TcpTransport

from android_harness.transport import (
    DEFAULT_SHELL_TIMEOUT_S, DEFAULT_TRANSFER_TIMEOUT_S, Command, DirEntry, FileStat, ShellResult,
    TransferResult, Transport, command_line)
from wbmm_mobile.errors import (
    DeviceError, DeviceGoneError, DeviceNoSpaceError, DeviceNotFoundError, DeviceTimeoutError,
    DeviceUnauthorizedError)

__all__ = ["AdbShellTransport", "load_or_create_adb_key", "signing_key_paths", "DEFAULT_KEY_PATH"]

DEFAULT_KEY_PATH = Path("~/.android/adbkey")
_ADB_SHELL_ERRORS = (adb_exceptions.AdbCommandFailureException, adb_exceptions.AdbConnectionError,
                     adb_exceptions.AdbTimeoutError, adb_exceptions.InvalidChecksumError,
                     adb_exceptions.InvalidCommandError, adb_exceptions.InvalidResponseError,
                     adb_exceptions.TcpTimeoutException, adb_exceptions.PushFailedError,
                     adb_exceptions.DevicePathInvalidError, OSError)
UNAUTHORIZED_HINT = ("the device did not accept this computer's ADB key: unlock the phone and accept the "
                     "'Allow USB debugging?' prompt on the phone, then retry")


def load_or_create_adb_key(path: str | Path | None = None) -> Path:
    """The private key file to sign with: ``path`` (default ~/.android/adbkey), generated with
    mode 0600 (public half beside it as .pub) when it does not exist yet."""
    key_path = Path(path or DEFAULT_KEY_PATH).expanduser()
    if key_path.exists():
        return key_path
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Generate inside a private (0700) folder, tighten the mode, then move into place, so
    # the private key is never readable by others, not even for a moment.
    with tempfile.TemporaryDirectory(dir=key_path.parent, prefix=".adbkey-") as staging:
        staged = Path(staging) / "adbkey"
        keygen(str(staged))
        os.chmod(staged, 0o600)
        os.chmod(str(staged) + ".pub", 0o644)
        os.replace(str(staged) + ".pub", str(key_path) + ".pub")
        os.replace(staged, key_path)
    return key_path


def signing_key_paths(environ: dict[str, str] | None = None) -> list[Path]:
    """The private keys to sign with, like adb: those in ``$ADB_VENDOR_KEYS`` that have their
    ``.pub`` beside them, then ``~/.android/adbkey`` (created when there is no key at all)."""
    from android_harness.loopback.auth import user_key_files

    *vendor, user = user_key_files(environ)
    found = [path for path in vendor if Path(str(path) + ".pub").is_file()]
    if not found or user.is_file():
        found.append(load_or_create_adb_key(user))
    return found


class _TcpTransport(TcpTransport):
    """adb-shell's TCP transport with TCP_NODELAY (``nodelay=False`` only for comparisons), and
    a socket closed by the device reported at once instead of read as endless empty data."""

    def __init__(self, host: str, port: int, nodelay: bool = True):
        super().__init__(host, port)
        self._nodelay = nodelay

    def connect(self, transport_timeout_s):
        super().connect(transport_timeout_s)
        if self._nodelay:
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def bulk_read(self, numbytes, transport_timeout_s):
        if self._connection is None:
            raise adb_exceptions.AdbConnectionError("not connected")
        data = super().bulk_read(numbytes, transport_timeout_s)
        if not data:
            raise adb_exceptions.AdbConnectionError("the device closed the connection")
        return data


class AdbShellTransport(Transport):
    """A device at ``host:port`` (adbd in TCP mode, or the loopback device) without an adb server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5555, *, key_path: str | Path | None = None,
                 auth_timeout: float = 30.0, io_timeout: float = 60.0, connect: bool = True,
                 tcp_nodelay: bool = True):
        self.host, self.port = host, port
        self._setup(f"{host}:{port}", _TcpTransport(host, port, nodelay=tcp_nodelay), key_path,
                    auth_timeout, io_timeout)
        if connect:
            self.reconnect(timeout=max(io_timeout, auth_timeout))

    def _setup(self, serial: str, adb_transport, key_path, auth_timeout: float, io_timeout: float) -> None:
        self.serial = serial
        self.io_timeout = io_timeout
        self.auth_timeout = auth_timeout
        key_paths = [Path(key_path).expanduser()] if key_path else signing_key_paths()
        if key_path:
            load_or_create_adb_key(key_path)
        self.key_path = key_paths[0]
        self._signers = [PythonRSASigner.FromRSAKeyPath(str(path)) for path in key_paths]
        self._device = AdbDevice(adb_transport, default_transport_timeout_s=io_timeout)
        self._key_offered = False
        # stderr files of commands that were cut off: removed once the device answers again.
        self._stale_files: set[str] = set()

    @classmethod
    def usb(cls, serial: str | None = None, *, key_path: str | Path | None = None, auth_timeout: float = 30.0,
            io_timeout: float = 60.0) -> "AdbShellTransport":
        """A USB device through adb-shell's libusb backend (``pip install 'wbmm-mobile[usb]'``)."""
        try:
            from adb_shell.transport.usb_transport import UsbTransport
        except ImportError:
            raise DeviceNotFoundError("USB needs adb-shell's usb extra: pip install 'wbmm-mobile[usb]'") from None
        try:
            usb = UsbTransport.find_adb(serial, default_transport_timeout_s=io_timeout)
        except Exception as exc:  # noqa: BLE001 - libusb raises its own family
            raise DeviceNotFoundError(f"no USB ADB device{' ' + serial if serial else ''}: {exc}") from None
        transport = cls.__new__(cls)   # __init__ is the TCP constructor
        transport.host, transport.port = "usb", 0
        transport._setup(serial or "usb", usb, key_path, auth_timeout, io_timeout)
        transport.reconnect(timeout=max(io_timeout, auth_timeout))
        return transport

    # -- connection -------------------------------------------------------------------------------
    def reconnect(self, timeout: float = 30.0) -> None:
        self._device.close()
        self._key_offered = False

        def offering_key(_device) -> None:
            # adb-shell calls this just before it sends our public key: the phone now shows
            # its "Allow USB debugging?" prompt, and a timeout means nobody accepted it.
            self._key_offered = True

        try:
            self._device.connect(rsa_keys=self._signers, transport_timeout_s=timeout,
                                 auth_timeout_s=self.auth_timeout, read_timeout_s=timeout,
                                 auth_callback=offering_key)
        except adb_exceptions.DeviceAuthError as exc:
            raise DeviceUnauthorizedError(f"{self.serial}: {UNAUTHORIZED_HINT} ({exc})") from None
        except (adb_exceptions.TcpTimeoutException, adb_exceptions.AdbTimeoutError) as exc:
            self._device.close()
            if self._key_offered:
                raise DeviceUnauthorizedError(f"{self.serial}: {UNAUTHORIZED_HINT}") from None
            raise DeviceGoneError(f"{self.serial}: no ADB answer within {timeout:.0f} s ({exc})") from None
        except ConnectionRefusedError:
            raise DeviceNotFoundError(f"{self.serial}: connection refused (no adbd listening)") from None
        except _ADB_SHELL_ERRORS as exc:
            self._device.close()
            raise DeviceGoneError(f"{self.serial}: cannot connect: {exc}") from None
        self._remove_stale_files()

    def _remove_stale_files(self) -> None:
        """Remove the stderr files of commands a disconnect cut off (best effort, short timeout)."""
        if not self._stale_files or not self._device.available:
            return
        stale = sorted(self._stale_files)
        try:
            self._device.shell("rm -f " + " ".join(stale), transport_timeout_s=30, read_timeout_s=30, timeout_s=30)
        except (*_ADB_SHELL_ERRORS, TypeError, AttributeError, ValueError):
            return   # gone again (or closed from another thread): tried again at the next connection
        self._stale_files.difference_update(stale)

    def abort(self) -> None:
        self._device.close()

    def close(self) -> None:
        if self._stale_files:
            try:
                if not self._device.available:
                    self.reconnect(timeout=min(10.0, self.io_timeout))
                else:
                    self._remove_stale_files()
            except DeviceError:
                pass   # the device is gone for good: nothing left to clean there
        self._device.close()

    def _call(self, what: str, action, timeout: float):
        """Run an adb-shell call, translating its exceptions. After a failure the connection is
        dropped (adb-shell's packet store may hold a half-read stream); the next call connects
        again by itself, and raises DeviceGoneError if the device is still away."""
        if not self._device.available:
            self.reconnect(timeout=min(timeout, self.io_timeout))
        start = time.monotonic()
        try:
            return action()
        except DeviceError:
            raise
        except (adb_exceptions.TcpTimeoutException, adb_exceptions.AdbTimeoutError) as exc:
            self._device.close()
            if time.monotonic() - start >= timeout * 0.95:
                raise DeviceTimeoutError(f"{self.serial}: {what} did not finish within {timeout:.0f} s") from None
            raise DeviceGoneError(f"{self.serial}: {what}: device stopped answering ({exc})") from None
        except adb_exceptions.PushFailedError as exc:
            self._device.close()
            if "No space left" in str(exc):
                raise DeviceNoSpaceError(f"{self.serial}: {what}: {exc}") from None
            raise DeviceError(f"{self.serial}: {what}: {exc}") from None
        except _ADB_SHELL_ERRORS as exc:
            self._device.close()
            raise DeviceGoneError(f"{self.serial}: {what}: device disconnected ({exc})") from None
        except (TypeError, AttributeError, ValueError) as exc:
            # adb-shell trips over its own socket when close() came from another thread (an
            # interrupted profile does that to unblock its worker): the connection is gone.
            if self._device.available:
                raise
            raise DeviceGoneError(f"{self.serial}: {what}: connection closed ({type(exc).__name__})") from None

    # -- shell ------------------------------------------------------------------------------------
    def shell(self, command: Command, timeout: float = DEFAULT_SHELL_TIMEOUT_S) -> ShellResult:
        line = command_line(command)
        nonce = secrets.token_hex(6)
        marker = f"__WBMM_EXIT_{nonce}__"
        stderr_file = f"/data/local/tmp/.wbmm-stderr-{nonce}"
        # A subshell, so `exit 3` inside the command still reaches the marker; the newline
        # ends a trailing comment in the command.
        wrapped = (f"( {line}\n) 2>{stderr_file}; echo {marker}$?; "
                   f"cat {stderr_file} 2>/dev/null; rm -f {stderr_file}")
        self._stale_files.add(stderr_file)
        output = self._call(f"`{line}`", lambda: self._device.shell(
            wrapped, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout, decode=False),
            timeout)
        text = output.decode("utf-8", "replace")
        position = text.find(marker)
        if position < 0:
            raise DeviceGoneError(f"{self.serial}: `{line}` ended without its exit status (device gone?)")
        self._stale_files.discard(stderr_file)   # the command removed it itself
        code_text, _, stderr = text[position + len(marker):].partition("\n")
        code = int(code_text.strip()) if code_text.strip().isdigit() else 255
        return ShellResult(line, code, text[:position], stderr)

    # -- files ------------------------------------------------------------------------------------
    def push(self, local: str | Path, remote: str, mode: int = 0o644,
             timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        local_path = Path(local)
        if not local_path.is_file():
            raise FileNotFoundError(f"{local}: no such local file")
        start = time.monotonic()
        self._call(f"push {remote}", lambda: self._device.push(
            str(local_path), remote, st_mode=stat_module.S_IFREG | (mode & 0o7777),
            mtime=int(local_path.stat().st_mtime), transport_timeout_s=timeout, read_timeout_s=timeout), timeout)
        return TransferResult(str(local), remote, local_path.stat().st_size, time.monotonic() - start)

    def pull(self, remote: str, local: str | Path, timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        local_path = Path(local)
        partial = local_path.with_name(local_path.name + ".partial")
        start = time.monotonic()
        try:
            self._call(f"pull {remote}", lambda: self._device.pull(
                remote, str(partial), transport_timeout_s=timeout, read_timeout_s=timeout), timeout)
            os.replace(partial, local_path)
        finally:
            if partial.exists():
                partial.unlink()
        return TransferResult(str(local), remote, local_path.stat().st_size, time.monotonic() - start)

    def stat(self, remote: str, timeout: float = 60.0) -> FileStat:
        mode, size, mtime = self._call(f"stat {remote}", lambda: self._device.stat(
            remote, transport_timeout_s=timeout, read_timeout_s=timeout), timeout)
        return FileStat(remote, mode, size, mtime)

    def list(self, remote: str, timeout: float = 60.0) -> list[DirEntry]:
        files = self._call(f"list {remote}", lambda: self._device.list(
            remote, transport_timeout_s=timeout, read_timeout_s=timeout), timeout)
        entries = []
        for item in files:
            name = item.filename.decode("utf-8", "surrogateescape") if isinstance(item.filename, (bytes, bytearray)) \
                else item.filename
            if name not in (".", ".."):
                entries.append(DirEntry(name, item.mode, item.size, item.mtime))
        return sorted(entries, key=lambda entry: entry.name)
