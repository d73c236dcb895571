"""The loopback ADB device: a Python adbd on 127.0.0.1 for tests and dry runs, not a phone.

It speaks the real ADB wire protocol, so the host ``adb`` server (``adb connect
127.0.0.1:PORT``), adbutils and adb-shell treat it as a device: CNXN with a banner
that says it is a loopback test device and announces shell_v2, optional RSA AUTH,
OPEN/OKAY/WRTE/CLSE with flow control and many streams at once, ``shell``/``exec``
(``shell_service``) and ``sync`` (``sync_service``). Commands run on this machine
inside a root folder (``rootfs``); ``fixture_phone`` makes it answer ``getprop``,
``dumpsys battery|thermalservice`` and the sysfs files a benchmark harness reads.

A connection that breaks the protocol (garbage, wrong magic, huge length, bad
checksum) is closed; the daemon keeps serving the others. ``FaultPlan`` injects the
failures tests need (drop during a push, a full disk). It listens on 127.0.0.1 only,
on a port outside 5555-5585 (the adb server scans that range for emulators).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import select
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from android_harness.loopback.auth import TOKEN_SIZE, KeyStore, parse_android_public_key
from android_harness.loopback.rootfs import RootFolder
from android_harness.loopback.shell_service import run_shell_service
from android_harness.loopback.streams import Stream, StreamClosed
from android_harness.loopback.sync_service import run_sync_service
from android_harness.loopback.wire import (
    A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION_SKIP_CHECKSUM, A_WRTE, AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE, AUTH_TOKEN, Packet, encode_packet, read_packet)
from wbmm_mobile.errors import AdbProtocolError, DeviceError

__all__ = ["LoopbackDevice", "FaultPlan", "DEFAULT_PORT", "ADB_SCANNED_PORTS", "FIXTURE_PHONE_DIR",
           "FEATURES", "install_fixture_phone"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 17555
ADB_SCANNED_PORTS = range(5555, 5586)
FIXTURE_PHONE_DIR = Path(__file__).with_name("fixture_phone")
FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")
MAX_PAYLOAD = 256 * 1024
# Before CNXN a client gets this long to say hello; afterwards an idle adb server
# connection is normal, but not forever.
_HANDSHAKE_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 6 * 3600.0
_SEND_TIMEOUT_S = 60.0


@dataclass
class FaultPlan:
    """Failures to inject, for tests. ``drop_push_after_bytes`` fires once, then clears itself."""

    drop_push_after_bytes: int | None = None
    disk_quota_bytes: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_drop_during_push(self, received: int) -> bool:
        with self._lock:
            if self.drop_push_after_bytes is not None and received >= self.drop_push_after_bytes:
                self.drop_push_after_bytes = None
                return True
            return False


def install_fixture_phone(root: Path, profile: Path = FIXTURE_PHONE_DIR) -> None:
    """Copy a fixture phone profile (getprop/dumpsys/taskset scripts, sysfs files) into root."""
    if not profile.is_dir():
        raise DeviceError(f"fixture phone profile {profile} is not a folder")
    for source in profile.rglob("*"):
        if source.is_dir() or source.name in ("README.md", "__pycache__") or source.suffix == ".pyc":
            continue
        target = root / source.relative_to(profile)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if "bin" in source.relative_to(profile).parts:
            target.chmod(0o755)


class _Connection:
    """One TCP client: handshake, optional AUTH, then packets routed to streams."""

    def __init__(self, device: "LoopbackDevice", sock: socket.socket, peer: str):
        self.device = device
        self.sock = sock
        self.peer = peer
        self.max_data = MAX_PAYLOAD
        self.checksum_required = True
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = threading.Event()

    # -- sending ------------------------------------------------------------------------------
    def send(self, packet: Packet, ignore_errors: bool = False) -> None:
        data = encode_packet(packet)
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.abort("send failed")
                if not ignore_errors:
                    raise StreamClosed("connection lost") from None

    def abort(self, reason: str) -> None:
        """Drop the TCP connection; the reader thread then tears the streams down."""
        if not self._closed.is_set():
            log.info("loopback: closing connection from %s: %s", self.peer, reason)
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def forget_stream(self, local_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(local_id, None)

    # -- serving ------------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            self.sock.settimeout(_HANDSHAKE_TIMEOUT_S)
            if not self._handshake():
                return
            # The socket timeout bounds sends and the rest of a packet once it started; waiting
            # for the next packet is bounded separately by the (long) idle timeout.
            self.sock.settimeout(_SEND_TIMEOUT_S)
            idle_since = time.monotonic()
            while not self._closed.is_set():
                readable, _, _ = select.select([self.sock], [], [], 1.0)
                if not readable:
                    if time.monotonic() - idle_since > _IDLE_TIMEOUT_S:
                        return
                    continue
                # We announced MAX_PAYLOAD, so that is what a peer may send us; ``max_data``
                # (the smaller of both announcements) only limits what we send.
                self._dispatch(read_packet(self.sock, MAX_PAYLOAD, self.checksum_required))
                idle_since = time.monotonic()
        except AdbProtocolError as exc:
            self.device.protocol_errors.append(f"{self.peer}: {exc}")
            log.warning("loopback: protocol error from %s: %s", self.peer, exc)
        except (OSError, DeviceError, StreamClosed):
            pass   # the peer went away or timed out: nothing to tell anyone
        finally:
            self._closed.set()
            with self._streams_lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream.on_peer_closed()
            try:
                self.sock.close()
            except OSError:
                pass
            self.device._forget(self)

    def _handshake(self) -> bool:
        hello = read_packet(self.sock, 1 << 20, checksum_required=False)
        if hello.command != A_CNXN:
            raise AdbProtocolError(f"expected CNXN first, got {hello.name}")
        version = min(hello.arg0, A_VERSION_SKIP_CHECKSUM)
        self.max_data = max(4096, min(hello.arg1 or MAX_PAYLOAD, MAX_PAYLOAD))
        if self.device.auth_keys is not None and not self._authenticate():
            return False
        self.checksum_required = version < A_VERSION_SKIP_CHECKSUM
        self.send(Packet(A_CNXN, version, MAX_PAYLOAD, self.device.banner().encode()))
        return True

    def _authenticate(self) -> bool:
        """TOKEN -> SIGNATURE (known key) or RSAPUBLICKEY (ask "the user"). A refused key leaves
        the connection waiting, as a phone does while its prompt is unanswered."""
        keys = self.device.auth_keys
        token = os.urandom(TOKEN_SIZE)
        self.send(Packet(A_AUTH, AUTH_TOKEN, 0, token))
        while True:
            packet = read_packet(self.sock, MAX_PAYLOAD, checksum_required=False)
            if packet.command != A_AUTH:
                raise AdbProtocolError(f"expected AUTH while unauthorized, got {packet.name}")
            if packet.arg0 == AUTH_SIGNATURE:
                if keys.find_signer(token, packet.data) is not None:
                    return True
                token = os.urandom(TOKEN_SIZE)
                self.send(Packet(A_AUTH, AUTH_TOKEN, 0, token))
            elif packet.arg0 == AUTH_RSAPUBLICKEY:
                try:
                    key = parse_android_public_key(packet.data)
                except ValueError as exc:
                    raise AdbProtocolError(f"bad RSA public key: {exc}") from None
                self.device.offered_keys.append(key)
                if self.device.accept_new_keys:
                    keys.add(key)
                    return True
                # Unanswered prompt: stay connected and silent until the client gives up.
                self.sock.settimeout(_IDLE_TIMEOUT_S)
            else:
                raise AdbProtocolError(f"unknown AUTH type {packet.arg0}")

    def _dispatch(self, packet: Packet) -> None:
        if packet.command == A_OPEN:
            self._open(packet)
            return
        if packet.command == A_CNXN:
            raise AdbProtocolError("CNXN on an open connection")
        with self._streams_lock:
            stream = self._streams.get(packet.arg1)
        if stream is None:
            if packet.command == A_WRTE:
                # adbd answers data for a stream it no longer has with CLSE.
                self.send(Packet(A_CLSE, 0, packet.arg0), ignore_errors=True)
            return
        if packet.command == A_WRTE:
            if not stream.on_data(packet.data):
                raise AdbProtocolError(f"stream {packet.arg1}: peer keeps writing without waiting for OKAY")
        elif packet.command == A_OKAY:
            stream.on_okay()
        elif packet.command == A_CLSE:
            stream.on_peer_closed()
            stream.close()
        else:
            raise AdbProtocolError(f"unexpected {packet.name} on stream {packet.arg1}")

    def _open(self, packet: Packet) -> None:
        destination = packet.data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        service = destination.partition(":")[0].split(",")[0]
        if service not in ("shell", "exec", "sync") or packet.arg0 == 0:
            self.send(Packet(A_CLSE, 0, packet.arg0), ignore_errors=True)
            return
        stream = Stream(self, next(self._ids), packet.arg0)
        with self._streams_lock:
            self._streams[stream.local_id] = stream
        self.send(Packet(A_OKAY, stream.local_id, stream.remote_id))
        if service == "sync":
            target, args = run_sync_service, (stream, self.device.rootfs, self.device.faults,
                                              self.device.sync_requests)
        else:
            target, args = run_shell_service, (stream, destination, self.device.rootfs)
        threading.Thread(target=target, args=args, daemon=True, name=f"loopback-{service}").start()


class LoopbackDevice:
    """Serve the ADB protocol on 127.0.0.1:``port`` (0 = any free port) from ``root``.

    ``auth=True`` requires RSA authentication against ``authorized_keys`` (adb_keys format);
    ``accept_new_keys=True`` plays the user who taps "Allow" on the phone's prompt.
    Use as a context manager, or ``start()`` / ``stop()``; ``serve_forever()`` for the CLI."""

    def __init__(self, root: str | Path, port: int = 0, *, auth: bool = False,
                 authorized_keys: str | Path | None = None, accept_new_keys: bool = False,
                 fixture_phone: bool | str | Path = False):
        if port in ADB_SCANNED_PORTS:
            raise ValueError(f"port {port} is in 5555-5585, which the adb server scans for emulators; "
                             f"pick another (default {DEFAULT_PORT})")
        self.rootfs = RootFolder(root)
        if fixture_phone:
            install_fixture_phone(self.rootfs.root,
                                  FIXTURE_PHONE_DIR if fixture_phone is True else Path(fixture_phone))
        self.auth_keys = KeyStore(Path(authorized_keys) if authorized_keys else None) if auth else None
        self.accept_new_keys = accept_new_keys
        self.faults = FaultPlan()
        self.protocol_errors: list[str] = []
        self.offered_keys: list = []
        self.sync_requests: collections.Counter[str] = collections.Counter()   # sync request id -> count
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._connections: set[_Connection] = set()
        self._connections_lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        """The listening port (still answered after ``stop()``, e.g. to start again on it)."""
        if self._port is None:
            raise RuntimeError("loopback device not started")
        return self._port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.rootfs.root

    def banner(self) -> str:
        props = {"ro.product.name": "wbmm_loopback", "ro.product.model": "wbmm_loopback_test_device",
                 "ro.product.device": "wbmm_loopback", "wbmm.note": "loopback-test-device-not-a-phone"}
        body = ";".join(f"{k}={v}" for k, v in props.items())
        return f"device::{body};features={','.join(FEATURES)}"

    def start(self) -> "LoopbackDevice":
        for _attempt in range(20):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self._requested_port))
            if listener.getsockname()[1] in ADB_SCANNED_PORTS:
                listener.close()   # an ephemeral port landed in the scanned range: try again
                continue
            break
        else:
            raise OSError("could not get a port outside 5555-5585")
        listener.listen(16)
        listener.settimeout(0.5)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True, name="loopback-accept")
        self._accept_thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, sock, f"{address[0]}:{address[1]}")
            with self._connections_lock:
                self._connections.add(connection)
            threading.Thread(target=connection.serve, daemon=True, name="loopback-conn").start()

    def _forget(self, connection: _Connection) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    @property
    def connection_count(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def disconnect_all(self) -> int:
        """Drop every client connection (a USB cable pulled out); returns how many were dropped."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort("disconnect_all")
        return len(connections)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        self.disconnect_all()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        self.rootfs.close()

    def serve_forever(self) -> None:
        if self._listener is None:
            self.start()
        try:
            while self._accept_thread.is_alive():
                self._accept_thread.join(1.0)
        finally:
            self.stop()

    def __enter__(self) -> "LoopbackDevice":
        return self.start() if self._listener is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()
