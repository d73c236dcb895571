"""The small interface every way of reaching an Android device implements.

A transport runs shell commands (exit code, stdout and stderr kept apart), pushes,
pulls, stats and lists files, and nothing else: device facts (model, SoC, CPU
clusters, battery, thermal) live in ``android_harness.device`` on top of it, so
the same code works through the host ADB server (``adbutils_transport``), a
direct adb-shell connection (``adbshell_transport``) or the loopback test device.

Not for: parsing device output, retry policies, or anything phone-model specific.

Contract every implementation keeps:
- a command given as a list is quoted with ``shlex.join`` (so a hostile file
  name is one argument, never code); a string is sent as written (the caller
  owns its quoting);
- every wait has a timeout; a device that vanishes raises ``DeviceGoneError``,
  a command running past its timeout ``DeviceTimeoutError``, a refused key
  ``DeviceUnauthorizedError``; ``reconnect()`` makes the transport usable again
  after the device comes back.
"""

from __future__ import annotations

import abc
import shlex
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from wbmm_mobile.errors import DeviceCommandError, DeviceNotFoundError

__all__ = [
    "ShellResult",
    "FileStat",
    "DirEntry",
    "TransferResult",
    "Transport",
    "Command",
    "command_line",
    "DEFAULT_SHELL_TIMEOUT_S",
    "DEFAULT_TRANSFER_TIMEOUT_S",
]

# Generous by default: a benchmark_model run on a throttled phone can be silent
# for minutes; callers with a tighter budget pass their own timeout.
DEFAULT_SHELL_TIMEOUT_S = 600.0
DEFAULT_TRANSFER_TIMEOUT_S = 600.0

Command = Union[str, Sequence[str]]


def command_line(command: Command) -> str:
    """The shell line for ``command``: lists are quoted argument by argument."""
    if isinstance(command, str):
        return command
    return shlex.join(str(part) for part in command)


@dataclass(frozen=True)
class ShellResult:
    """What one shell command did on the device. stdout/stderr are text (UTF-8, undecodable
    bytes replaced): binary output belongs in a file that is then pulled."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> "ShellResult":
        """Return self, or raise DeviceCommandError carrying the exit code and stderr."""
        if self.exit_code != 0:
            detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
            reason = detail[-1] if detail else "no output"
            raise DeviceCommandError(
                f"`{self.command}` exited with {self.exit_code}: {reason}",
                exit_code=self.exit_code, stderr=self.stderr)
        return self


@dataclass(frozen=True)
class FileStat:
    """A remote path's type, size and mtime; ``exists`` is False when there is nothing there."""

    path: str
    mode: int
    size: int
    mtime: int

    @property
    def exists(self) -> bool:
        # The sync protocol answers a missing path with all zeros.
        return self.mode != 0

    @property
    def is_dir(self) -> bool:
        return stat_module.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat_module.S_ISREG(self.mode)


@dataclass(frozen=True)
class DirEntry:
    """One entry of a remote directory listing (``.`` and ``..`` left out)."""

    name: str
    mode: int
    size: int
    mtime: int

    @property
    def is_dir(self) -> bool:
        return stat_module.S_ISDIR(self.mode)


@dataclass(frozen=True)
class TransferResult:
    """One push or pull: which paths, how many bytes, how long it took."""

    local: str
    remote: str
    size: int
    seconds: float


class Transport(abc.ABC):
    """One connection to one device. Implementations are safe to use from one thread at a time."""

    #: the serial the host tools use for this device ("R58M...", "127.0.0.1:17555").
    serial: str

    @abc.abstractmethod
    def shell(self, command: Command, timeout: float = DEFAULT_SHELL_TIMEOUT_S) -> ShellResult:
        """Run ``command`` on the device; returns its exit code, stdout and stderr (never raises
        for a non-zero exit: call ``.check()``)."""

    @abc.abstractmethod
    def push(self, local: str | Path, remote: str, mode: int = 0o644,
             timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        """Copy a local file to the remote path (a file path, not a directory)."""

    @abc.abstractmethod
    def pull(self, remote: str, local: str | Path,
             timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        """Copy a remote file to a local path; the local file appears only when complete."""

    @abc.abstractmethod
    def stat(self, remote: str, timeout: float = 60.0) -> FileStat:
        """Type, size and mtime of a remote path (``exists`` False when absent)."""

    @abc.abstractmethod
    def list(self, remote: str, timeout: float = 60.0) -> list[DirEntry]:
        """Entries of a remote directory, sorted by name."""

    @abc.abstractmethod
    def reconnect(self, timeout: float = 30.0) -> None:
        """Re-establish the connection after the device went away and came back."""

    def close(self) -> None:
        """Release sockets; the transport is unusable afterwards (default: nothing to do)."""

    def abort(self) -> None:
        """Drop the connection now, from any thread, without cleaning up on the device (a call
        blocked in another thread then fails with DeviceGoneError). Default: ``close()``."""
        self.close()

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.serial!r})"


def parse_host_port(address: str, default_port: int) -> tuple[str, int]:
    """'host:port' or 'host' -> (host, port); a malformed port is a DeviceNotFoundError."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        return address, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise DeviceNotFoundError(f"{address!r} is not host:port") from None
    if not 0 < port < 65536:
        raise DeviceNotFoundError(f"{address!r}: port {port} out of range")
    return host or "127.0.0.1", port
