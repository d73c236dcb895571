"""The loopback device's file system: device paths mapped into one folder on this machine.

Sync requests (push, pull, stat, list) resolve device paths such as
``/data/local/tmp/x`` or ``/sdcard/x`` to ``<root>/data/local/tmp/x`` and refuse any
path that would leave the root, ``..`` and symlinks included. Shell commands run on
this machine with cwd = root; absolute paths under the Android top-level folders
(``/data``, ``/sdcard``, ``/sys`` ...) in the command line are rewritten to the root
folder, so ``cat /sys/class/power_supply/battery/capacity`` reads the fixture file.

The rewrite is textual on purpose: it also reaches paths inside quoted nested commands
(``sh -c 'cd /data/local/tmp && ...'``). The price: a file name that itself contains
" /data" or "=/sys" is rewritten there too (a wrong path on the loopback device, never
an injected command; real phones are unaffected).

Not a sandbox: the shell is THIS computer's shell, run as the user who started the
device; a command can still name host paths outside those prefixes. It gets a minimal
environment (``shell_environment``: none of the starting user's variables, tokens or
proxy settings) and starts in the root folder. The loopback device is for tests and dry
runs on your own machine only.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from pathlib import Path

from wbmm_mobile.errors import DeviceError

__all__ = ["RootFolder", "PathEscapeError", "DEVICE_PREFIXES", "HOST_BINS"]

# Top-level Android folders that exist under the root instead of on this machine.
DEVICE_PREFIXES = ("data", "sdcard", "storage", "sys", "system", "vendor", "odm", "product", "mnt", "apex")

# A device path starts where a shell word can start: line start, blank, quote, or an operator.
_DEVICE_PATH = re.compile(
    r"(?:(?<=^)|(?<=[\s'\"=:;|&(<>`]))/(?=(?:%s)(?:/|$|[\s'\";|&)<>`]))" % "|".join(DEVICE_PREFIXES))
# This computer's tool folders, after the device's own (system/bin first, as on a phone).
HOST_BINS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


class PathEscapeError(DeviceError, PermissionError):
    """A device path that would resolve outside the loopback root."""


class RootFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in ("data/local/tmp", "sdcard", "system/bin"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._alias_dir = None
        self.shell_root = self._shell_safe_root()

    def _shell_safe_root(self) -> str:
        """A spelling of the root with no shell-special characters, so rewritten paths stay valid
        inside any quoting; a root with spaces or quotes gets a symlink with a plain name."""
        if _SAFE_PATH.match(str(self.root)):
            return str(self.root)
        self._alias_dir = tempfile.TemporaryDirectory(prefix="wbmm-loopback-root-")
        alias = Path(self._alias_dir.name) / "root"
        alias.symlink_to(self.root, target_is_directory=True)
        return str(alias)

    def host_path(self, device_path: str, follow_last: bool = True) -> Path:
        """``/data/local/tmp/x`` -> ``<root>/data/local/tmp/x``; PathEscapeError if it leaves the root.
        ``follow_last`` False checks the parent only (lstat of a symlink, unlink)."""
        if "\0" in device_path:
            raise PathEscapeError("device path contains a NUL byte")
        normalized = posixpath.normpath("/" + device_path.lstrip("/"))
        candidate = self.root / normalized.lstrip("/")
        if normalized == "/":
            return self.root
        checked = candidate if follow_last else candidate.parent
        real = Path(os.path.realpath(checked))
        if real != self.root and self.root not in real.parents:
            raise PathEscapeError(f"{device_path}: outside the loopback root")
        return candidate

    def rewrite_command(self, command: str) -> str:
        """Point absolute device paths in a shell command at the root folder."""
        return _DEVICE_PATH.sub(self.shell_root.rstrip("/") + "/", command)

    def shell_environment(self) -> dict[str, str]:
        """The whole environment of a shell command: built from nothing, so none of the starting
        user's variables (tokens, proxy settings, PYTHONPATH ...) reach it."""
        device_bins = [f"{self.shell_root}/{folder}" for folder in ("system/bin", "system/xbin", "vendor/bin")]
        return {
            "PATH": ":".join(device_bins + list(HOST_BINS)),
            "HOME": self.shell_root,
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "TMPDIR": f"{self.shell_root}/data/local/tmp",
            "ANDROID_DATA": f"{self.shell_root}/data",
            "ANDROID_ROOT": f"{self.shell_root}/system",
            "EXTERNAL_STORAGE": f"{self.shell_root}/sdcard",
            "WBMM_LOOPBACK_ROOT": self.shell_root,
        }

    def close(self) -> None:
        if self._alias_dir is not None:
            self._alias_dir.cleanup()
            self._alias_dir = None
