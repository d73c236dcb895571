"""Shared pieces of the tests/test_adb_*.py files: real adb binaries and a private adb server.

Each adb server the tests start listens on a free port given through
``ANDROID_ADB_SERVER_PORT`` and keeps its keys in a temporary HOME, so nothing here
touches an adb server (or keys) someone else is using; ``AdbServer.stop`` runs
``adb kill-server``. It also signs with the test session's key (``$ADB_VENDOR_KEYS``,
set by conftest), which the loopback devices trust by default; ``vendor_keys=False``
leaves only its own fresh key (for the tests of the "Allow" prompt).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import adbutils

from tests._tiers import FAST, skip_in_fast_tier

DEBIAN_ADB = "/usr/bin/adb"
BUNDLED_ADB = Path(adbutils.__file__).parent / "binaries" / "adb"


def adb_binaries() -> list[tuple[str, str]]:
    """(id, path) of every real adb client on this machine: Debian's and the one adbutils bundles."""
    found = []
    debian = DEBIAN_ADB if os.path.exists(DEBIAN_ADB) else shutil.which("adb")
    if debian:
        found.append(("debian-adb", debian))
    if BUNDLED_ADB.is_file() and os.access(BUNDLED_ADB, os.X_OK):
        found.append(("adbutils-bundled-adb", str(BUNDLED_ADB)))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AdbServer:
    binary: str
    port: int
    home: Path
    vendor_keys: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("ANDROID_SERIAL", "ANDROID_ADB_SERVER_HOST", "ANDROID_SDK_HOME", "ANDROID_USER_HOME",
                            "ADB_VENDOR_KEYS")}
        env.update(ANDROID_ADB_SERVER_PORT=str(self.port), HOME=str(self.home))
        if self.vendor_keys and os.environ.get("ADB_VENDOR_KEYS"):
            env["ADB_VENDOR_KEYS"] = os.environ["ADB_VENDOR_KEYS"]
        return env

    def adb(self, *args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([self.binary, *args], env=self.env, capture_output=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)} -> {result.returncode}\nstdout: {result.stdout!r}\n"
                                 f"stderr: {result.stderr!r}")
        return result

    def start(self) -> "AdbServer":
        self.home.mkdir(parents=True, exist_ok=True)
        self.adb("start-server", timeout=60)
        return self

    def stop(self) -> None:
        self.adb("kill-server", timeout=30, check=False)


def start_adb_server(binary: str, home: Path, vendor_keys: bool = True) -> AdbServer:
    if FAST:
        skip_in_fast_tier("system")
    return AdbServer(binary, free_port(), home, vendor_keys).start()


def adb_handshake(sock: socket.socket, key_path: Path, version: int = 0x01000000, max_data: int = 256 * 1024,
                  banner: bytes = b"host::\0"):
    """CNXN, then sign the device's AUTH token with ``key_path`` (a trusted key) until the device
    answers CNXN: what an adb host does, on a raw socket. Returns the device's CNXN packet."""
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    from android_harness.loopback.wire import A_AUTH, A_CNXN, AUTH_SIGNATURE, AUTH_TOKEN, Packet, encode_packet, \
        read_packet
    sock.sendall(encode_packet(Packet(A_CNXN, version, max_data, banner)))
    signer = PythonRSASigner.FromRSAKeyPath(str(key_path))
    for _ in range(3):
        reply = read_packet(sock, 1 << 20, checksum_required=False)
        if reply.command == A_CNXN:
            return reply
        assert reply.command == A_AUTH and reply.arg0 == AUTH_TOKEN, reply
        sock.sendall(encode_packet(Packet(A_AUTH, AUTH_SIGNATURE, 0, signer.Sign(reply.data))))
    raise AssertionError("the device did not accept the signature")
