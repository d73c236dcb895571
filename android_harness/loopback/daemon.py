"""The loopback ADB device: a Python adbd on 127.0.0.1 for tests and dry runs, not a phone.

It speaks the real ADB wire protocol, so the host ``adb`` server (``adb connect
127.0.0.1:PORT``), adbutils and adb-shell treat it as a device: CNXN with a banner
built from the same properties ``getprop`` answers (``identity``), announcing
shell_v2; RSA AUTH; OPEN/OKAY/WRTE/CLSE with flow control and many streams at once,
``shell``/``exec`` (``shell_service``) and ``sync`` (``sync_service``).

Its shell is THIS computer's shell, run as the user who started the device (minimal
environment, cwd = the root folder, ``/data``, ``/sdcard``, ``/sys`` ... mapped into it
by ``rootfs``). So by default it authenticates like a phone that already allowed this
computer: it trusts the public keys of the user who started it (``~/.android/adbkey``
and ``$ADB_VENDOR_KEYS``, read each time a client authenticates) and refuses any other
as "unauthorized"; ``auth=False`` (the CLI's ``--insecure``) turns that off.

One thread per connection waits on its socket through ``selectors`` (no ``select()``
file-descriptor ceiling); the listen backlog is the OS's maximum; past
``max_connections`` a new connection is accepted, logged and closed at once (a clear
refusal instead of a reset or a hang). Every command runs in its own process group,
killed when its stream closes or the device stops. A connection that breaks the
protocol (garbage, wrong magic, huge length, bad checksum) is closed; the daemon keeps
serving the others. ``FaultPlan`` injects the failures tests need (drop during a push,
a full disk). It listens on 127.0.0.1 only, on a port outside 5555-5585 (the adb
server scans that range for emulators).
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from android_harness.loopback.auth import TOKEN_SIZE, KeyStore, parse_android_public_key, user_public_keys
from android_harness.loopback.identity import (
    FIXTURE_PHONE_DIR, install_fixture_phone, install_host_profile, read_properties)
from android_harness.loopback.rootfs import RootFolder
from android_harness.loopback.shell_service import ProcessGroups, run_shell_service
from android_harness.loopback.streams import Stream, StreamClosed
from android_harness.loopback.sync_service import run_sync_service
from android_harness.loopback.wire import (
    A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION_SKIP_CHECKSUM, A_WRTE, AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE, AUTH_TOKEN, Packet, encode_packet, read_packet)
from wbmm_mobile.errors import AdbProtocolError, DeviceError

__all__ = ["LoopbackDevice", "FaultPlan", "DEFAULT_PORT", "ADB_SCANNED_PORTS", "FIXTURE_PHONE_DIR",
           "FEATURES", "install_fixture_phone", "listen_backlog", "DEFAULT_MAX_CONNECTIONS"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 17555
ADB_SCANNED_PORTS = range(5555, 5586)
FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")
MAX_PAYLOAD = 256 * 1024
# Before CNXN a client gets this long to say hello; afterwards an idle adb server
# connection is normal, but not forever.
_HANDSHAKE_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 6 * 3600.0
_SEND_TIMEOUT_S = 60.0
# One thread per connection: enough for an adb server, several harnesses and hundreds of
# adb-shell clients at once, far below what threads and file descriptors allow.
DEFAULT_MAX_CONNECTIONS = 1024
# A refused connection stays half-closed until its client closes, at most this long.
_LINGER_S = 5.0
_MAX_LINGERING = 4096


def listen_backlog() -> int:
    """The OS's maximum listen backlog (Linux: /proc/sys/net/core/somaxconn), so a burst of
    clients waits in the queue instead of being reset."""
    try:
        with open("/proc/sys/net/core/somaxconn") as limit:
            return max(socket.SOMAXCONN, int(limit.read().strip()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


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
            # selectors, not select(): select() fails on descriptors above 1023.
            with _Selector() as selector:
                selector.register(self.sock, selectors.EVENT_READ)
                while not self._closed.is_set():
                    if not selector.select(1.0):
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
        if self.device.auth and not self._authenticate():
            return False
        self.checksum_required = version < A_VERSION_SKIP_CHECKSUM
        self.send(Packet(A_CNXN, version, MAX_PAYLOAD, self.device.banner().encode()))
        return True

    def _authenticate(self) -> bool:
        """TOKEN -> SIGNATURE (known key) or RSAPUBLICKEY (ask "the user"). A refused key leaves
        the connection waiting, as a phone does while its prompt is unanswered."""
        keys = self.device.authorized_keys
        token = os.urandom(TOKEN_SIZE)
        self.send(Packet(A_AUTH, AUTH_TOKEN, 0, token))
        while True:
            packet = read_packet(self.sock, MAX_PAYLOAD, checksum_required=False)
            if packet.command != A_AUTH:
                raise AdbProtocolError(f"expected AUTH while unauthorized, got {packet.name}")
            if packet.arg0 == AUTH_SIGNATURE:
                # The user's own keys are read now, not at start: a key adb creates later counts too.
                extra = user_public_keys() if self.device.trust_user_keys else []
                if keys.find_signer(token, packet.data, extra) is not None:
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
            target, args = run_shell_service, (stream, destination, self.device.rootfs, self.device.processes)
        threading.Thread(target=target, args=args, daemon=True, name=f"loopback-{service}").start()


# PollSelector needs no descriptor of its own (epoll would double the count per connection).
_Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)


class LoopbackDevice:
    """Serve the ADB protocol on 127.0.0.1:``port`` (0 = any free port) from ``root``.

    ``auth`` (default on) requires RSA authentication; trusted are the starting user's keys
    (``trust_user_keys``, read at each authentication), the ``authorized_keys`` file (adb_keys
    format) and keys accepted at the prompt: ``accept_new_keys=True`` plays the user who taps
    "Allow" on the phone. ``auth=False`` lets any local process run commands as this user.
    ``fixture_phone`` answers as the fixture Pixel 7 (tests that need a phone's answers);
    otherwise the device describes this computer truthfully (``identity``).
    Use as a context manager, or ``start()`` / ``stop()``; ``serve_forever()`` for the CLI."""

    def __init__(self, root: str | Path, port: int = 0, *, auth: bool = True, trust_user_keys: bool = True,
                 authorized_keys: str | Path | None = None, accept_new_keys: bool = False,
                 fixture_phone: bool | str | Path = False, max_connections: int = DEFAULT_MAX_CONNECTIONS):
        if port in ADB_SCANNED_PORTS:
            raise ValueError(f"port {port} is in 5555-5585, which the adb server scans for emulators; "
                             f"pick another (default {DEFAULT_PORT})")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.rootfs = RootFolder(root)
        if fixture_phone:
            install_fixture_phone(self.rootfs.root,
                                  FIXTURE_PHONE_DIR if fixture_phone is True else Path(fixture_phone))
        else:
            install_host_profile(self.rootfs.root)
        self.properties = read_properties(self.rootfs.root)
        self.auth = auth
        self.trust_user_keys = trust_user_keys
        self.authorized_keys = KeyStore(Path(authorized_keys) if authorized_keys else None)
        self.accept_new_keys = accept_new_keys
        self.max_connections = max_connections
        self.faults = FaultPlan()
        self.processes = ProcessGroups()
        self.protocol_errors: list[str] = []
        self.offered_keys: list = []
        self.refused_connections = 0
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
        """The CNXN banner: the same name, model and device ``getprop`` answers, so ``adb devices
        -l`` and the harness's records agree."""
        props = {key: self.properties.get(key, "wbmm_loopback")
                 for key in ("ro.product.name", "ro.product.model", "ro.product.device")}
        props["wbmm.note"] = "loopback-test-device-not-a-phone"
        # ';' and '=' separate banner fields: keep them out of the values.
        body = ";".join(f"{k}={v.replace(';', ',').replace('=', '-')}" for k, v in props.items())
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
        listener.listen(listen_backlog())
        listener.setblocking(False)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True, name="loopback-accept")
        self._accept_thread.start()
        if not self.auth:
            log.warning("loopback device %s: authentication is OFF (insecure): any process on this computer "
                        "can run commands on it as %s", self.serial, _user_name())
        return self

    def _accept_loop(self) -> None:
        # Refused connections linger here, half-closed, until the client closes too: closing a
        # socket with unread data would send a reset instead of a clean end of stream.
        lingering: dict[socket.socket, float] = {}
        with _Selector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select(0.5):
                        if key.fileobj is self._listener:
                            if not self._accept_one(selector, lingering):
                                return   # the listener was closed: stop() is under way
                        else:
                            self._drain_refused(key.fileobj, selector, lingering)
                    now = time.monotonic()
                    for sock in [s for s, deadline in lingering.items() if deadline < now]:
                        self._close_refused(sock, selector, lingering)
            finally:
                for sock in list(lingering):
                    self._close_refused(sock, selector, lingering)

    def _accept_one(self, selector, lingering: dict) -> bool:
        try:
            sock, address = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: leave the client in the backlog and breathe.
                log.warning("loopback: cannot accept a connection now: %s", exc)
                time.sleep(0.05)
                return True
            return False
        peer = f"{address[0]}:{address[1]}"
        if self._admit(sock, peer):
            return True
        self.refused_connections += 1
        if self.refused_connections == 1 or self.refused_connections % 100 == 0:
            log.warning("loopback: refusing connection from %s: %d connections open, the limit is %d "
                        "(%d refused so far)", peer, self.max_connections, self.max_connections,
                        self.refused_connections)
        try:
            sock.shutdown(socket.SHUT_WR)   # FIN now: the client reads end-of-stream, before any CNXN
            sock.setblocking(False)
            if len(lingering) >= _MAX_LINGERING:
                raise OSError("too many refused connections lingering")
            selector.register(sock, selectors.EVENT_READ)
            lingering[sock] = time.monotonic() + _LINGER_S
        except OSError:
            sock.close()
        return True

    def _drain_refused(self, sock: socket.socket, selector, lingering: dict) -> None:
        try:
            if sock.recv(65536):
                return   # what it sent is dropped; wait for its end of stream
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close_refused(sock, selector, lingering)

    @staticmethod
    def _close_refused(sock: socket.socket, selector, lingering: dict) -> None:
        lingering.pop(sock, None)
        try:
            selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _admit(self, sock: socket.socket, peer: str) -> bool:
        """Serve ``sock`` on a thread of its own; False when the device is full (the caller refuses it)."""
        with self._connections_lock:
            if len(self._connections) >= self.max_connections:
                return False
            connection = _Connection(self, sock, peer)
            self._connections.add(connection)
        try:
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=connection.serve, daemon=True, name="loopback-conn").start()
        except (OSError, RuntimeError) as exc:   # no thread to be had: this one is dropped
            log.warning("loopback: dropping connection from %s: %s", peer, exc)
            self._forget(connection)
            sock.close()
        return True

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
        """Stop listening, drop every connection and end every command the device started."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        self.disconnect_all()
        self.processes.end_all()
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


def _user_name() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "the user who started it"
