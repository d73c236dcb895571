"""One Android device seen through a Transport: facts as dataclasses, checked commands, file sync.

``Device`` turns shell output into ``DeviceInfo``, ``CpuTopology``, ``BatteryStatus``
and ``ThermalStatus`` (parsers in ``device_facts``) and pushes files only when their
content changed (SHA-256 on both sides). Every path it puts on a command line is
quoted with ``shlex``: a file name with spaces, quotes, ``;`` or ``$`` stays one
argument and runs nothing. Not for: benchmark runs or power sampling (other modules
build on this one).
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path

from android_harness.device_facts import (
    BatteryStatus, CpuTopology, DeviceInfo, DeviceSnapshot, ThermalStatus, cpu_topology,
    device_info_from_props, parse_cpu_max_freqs, parse_dumpsys_battery, parse_dumpsys_thermalservice,
    parse_getprop)
from android_harness.transport import (
    DEFAULT_SHELL_TIMEOUT_S, DEFAULT_TRANSFER_TIMEOUT_S, Command, DirEntry, FileStat, ShellResult,
    TransferResult, Transport)
from wbmm_mobile.errors import DeviceCommandError, DeviceError, DeviceNoSpaceError

# The fact dataclasses are re-exported: callers of Device need not know where they are parsed.
__all__ = ["Device", "SyncResult", "file_sha256", "DeviceInfo", "CpuTopology", "BatteryStatus", "ThermalStatus",
           "DeviceSnapshot"]

_NO_SPACE = "No space left on device"


@dataclass(frozen=True)
class SyncResult:
    """A ``sync_file`` call: ``pushed`` is False when the device already had these bytes."""

    local: str
    remote: str
    sha256: str
    size: int
    pushed: bool


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Device:
    """Facts and files of one device; every call goes through ``self.transport``."""

    def __init__(self, transport: Transport):
        self.transport = transport

    @property
    def serial(self) -> str:
        return self.transport.serial

    def __repr__(self) -> str:
        return f"Device({self.serial!r})"

    # -- commands ---------------------------------------------------------------------------
    def shell(self, command: Command, timeout: float = DEFAULT_SHELL_TIMEOUT_S) -> ShellResult:
        """Run a command; a non-zero exit is returned, not raised."""
        return self.transport.shell(command, timeout=timeout)

    def run(self, command: Command, timeout: float = DEFAULT_SHELL_TIMEOUT_S) -> ShellResult:
        """Run a command and raise DeviceCommandError (DeviceNoSpaceError for a full disk)
        when it exits non-zero. Pass a list to have every argument quoted."""
        result = self.transport.shell(command, timeout=timeout)
        if result.exit_code != 0 and _NO_SPACE in result.stderr:
            raise DeviceNoSpaceError(f"`{result.command}`: {_NO_SPACE}")
        return result.check()

    # -- facts ------------------------------------------------------------------------------
    def getprops(self) -> dict[str, str]:
        return parse_getprop(self.run(["getprop"], timeout=60).stdout)

    def info(self) -> DeviceInfo:
        return device_info_from_props(self.serial, self.getprops())

    def cpu_topology(self) -> CpuTopology:
        # One round trip for all cores; the glob is left unquoted on purpose (no user input).
        script = ('for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do '
                  'echo "$f $(cat "$f")"; done')
        cores = parse_cpu_max_freqs(self.run(script, timeout=60).stdout)
        if not cores:
            raise DeviceCommandError("no /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq on the device")
        return cpu_topology(cores)

    def battery(self) -> BatteryStatus:
        output = self.run(["dumpsys", "battery"], timeout=60).stdout
        try:
            return parse_dumpsys_battery(output)
        except ValueError as exc:
            raise DeviceCommandError(f"dumpsys battery: {exc}") from None

    def thermal(self) -> ThermalStatus:
        result = self.shell(["dumpsys", "thermalservice"], timeout=60)
        if result.exit_code != 0:
            return ThermalStatus(status=None)
        return parse_dumpsys_thermalservice(result.stdout)

    def snapshot(self) -> DeviceSnapshot:
        """Identity, CPU, battery and thermal state in one dataclass; a fact that cannot be read
        is recorded in ``problems`` instead of failing the whole snapshot."""
        info = self.info()
        problems = []
        try:
            cpu = self.cpu_topology()
        except DeviceCommandError as exc:
            cpu, problems = cpu_topology([]), problems + [f"cpu: {exc}"]
        try:
            battery = self.battery()
        except DeviceCommandError as exc:
            battery, problems = None, problems + [f"battery: {exc}"]
        return DeviceSnapshot(info=info, cpu=cpu, battery=battery, thermal=self.thermal(),
                              problems=tuple(problems))

    # -- files ------------------------------------------------------------------------------
    def stat(self, remote: str) -> FileStat:
        return self.transport.stat(remote)

    def list(self, remote: str) -> list[DirEntry]:
        return self.transport.list(remote)

    def push(self, local: str | Path, remote: str, mode: int = 0o644,
             timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        return self.transport.push(local, remote, mode=mode, timeout=timeout)

    def pull(self, remote: str, local: str | Path, timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> TransferResult:
        return self.transport.pull(remote, local, timeout=timeout)

    def remote_sha256(self, remote: str) -> str | None:
        """SHA-256 of a remote file, or None when it does not exist. A device without
        ``sha256sum`` (toybox before Android 6) raises DeviceCommandError with exit code 127."""
        result = self.shell(["sha256sum", remote], timeout=300)
        if result.exit_code == 127:
            raise DeviceCommandError("sha256sum is not available on the device", exit_code=127,
                                     stderr=result.stderr)
        if result.exit_code != 0:
            if "No such file" in result.stderr or not self.transport.stat(remote).exists:
                return None
            result.check()
        digest = result.stdout.split()[0] if result.stdout.split() else ""
        if len(digest) != 64:
            raise DeviceCommandError(f"sha256sum printed {result.stdout.strip()!r}")
        return digest

    def sync_file(self, local: str | Path, remote: str, mode: int = 0o644,
                  timeout: float = DEFAULT_TRANSFER_TIMEOUT_S) -> SyncResult:
        """Push ``local`` to ``remote`` unless the device already has the same bytes; the pushed
        copy is hashed again on the device, so a truncated transfer cannot pass silently."""
        local_hash = file_sha256(local)
        size = Path(local).stat().st_size
        try:
            remote_hash = self.remote_sha256(remote)
        except DeviceCommandError as exc:
            if exc.exit_code != 127:
                raise
            remote_hash, can_hash = None, False   # no hash tool: always push, check the size
        else:
            can_hash = True
        if remote_hash == local_hash:
            return SyncResult(str(local), remote, local_hash, size, pushed=False)
        parent = posixpath.dirname(remote)
        if parent:
            self.run(["mkdir", "-p", parent], timeout=60)
        self.push(local, remote, mode=mode, timeout=timeout)
        if can_hash:
            remote_hash = self.remote_sha256(remote)
            if remote_hash != local_hash:
                raise DeviceError(f"{remote}: device has sha256 {remote_hash} after the push, expected {local_hash}")
        elif self.stat(remote).size != size:
            raise DeviceError(f"{remote}: device has {self.stat(remote).size} bytes after the push, expected {size}")
        return SyncResult(str(local), remote, local_hash, size, pushed=True)

    def remove(self, remote: str) -> None:
        self.run(["rm", "-rf", remote], timeout=120)

    def quote(self, path: str) -> str:
        """The shell-quoted form of a path, for callers building a command string themselves."""
        return shlex.quote(path)
