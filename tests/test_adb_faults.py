"""Faults: a device that vanishes mid-push or mid-command, refused keys, hostile peers.

Each fault must end in a clear DeviceError subclass (never a hang: pytest-timeout
bounds every test), and the transport must work again after ``reconnect()``. The
loopback device must survive clients that send garbage.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from android_harness.adbshell_transport import AdbShellTransport
from android_harness.adbutils_transport import AdbServerTransport
from android_harness.loopback import LoopbackDevice
from android_harness.loopback.wire import A_CNXN, A_OPEN, HEADER, Packet, checksum, encode_packet
from tests._adb_helpers import adb_binaries, adb_handshake, start_adb_server
from wbmm_mobile.errors import DeviceGoneError, DeviceUnauthorizedError

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def loopback(tmp_path):
    with LoopbackDevice(tmp_path / "root") as device:
        yield device


def make_transport(kind: str, loopback: LoopbackDevice, request, key_path, **kwargs):
    if kind == "adb-server":
        server = request.getfixturevalue("adb_server")
        return AdbServerTransport(serial=loopback.serial, server=server.address, **kwargs)
    return AdbShellTransport("127.0.0.1", loopback.port, key_path=key_path, **kwargs)


@pytest.mark.parametrize("kind", ["adb-server", "adb-shell"])
def test_disconnect_during_push_then_reconnect(kind, loopback, request, key_path, tmp_path):
    transport = make_transport(kind, loopback, request, key_path)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(8 * 1000 * 1000))
    loopback.faults.drop_push_after_bytes = 1_000_000
    with pytest.raises(DeviceGoneError) as caught:
        transport.push(payload, "/data/local/tmp/payload.bin", timeout=60)
    assert "disconnect" in str(caught.value) or "lost" in str(caught.value) or "closed" in str(caught.value)
    # The half-written file never appears under its name.
    assert not (loopback.root / "data/local/tmp/payload.bin").exists()
    transport.reconnect(timeout=30)
    transport.push(payload, "/data/local/tmp/payload.bin", timeout=60)
    assert (loopback.root / "data/local/tmp/payload.bin").read_bytes() == payload.read_bytes()
    transport.close()


@pytest.mark.parametrize("kind", ["adb-server", "adb-shell"])
def test_disconnect_during_long_command_then_reconnect(kind, loopback, request, key_path):
    transport = make_transport(kind, loopback, request, key_path)
    started = loopback.root / "data/local/tmp/started"
    outcome = {}

    def long_command():
        try:
            outcome["result"] = transport.shell("touch /data/local/tmp/started; sleep 60; echo never", timeout=120)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    worker = threading.Thread(target=long_command)
    worker.start()
    for _ in range(200):
        if started.exists():
            break
        time.sleep(0.05)
    assert started.exists()
    assert loopback.disconnect_all() >= 1
    worker.join(30)
    assert not worker.is_alive(), "shell still waiting after the device went away"
    assert isinstance(outcome.get("error"), DeviceGoneError), outcome
    transport.reconnect(timeout=30)
    assert transport.shell("echo back").stdout == "back\n"
    transport.close()


def test_long_silent_command_is_not_cut_by_read_timeouts(loopback, key_path):
    """adb-shell's own 10 s read timeout would kill this; our transport waits for the command."""
    transport = AdbShellTransport("127.0.0.1", loopback.port, key_path=key_path, io_timeout=2.0)
    result = transport.shell("sleep 3; echo finished", timeout=30)
    assert (result.exit_code, result.stdout) == (0, "finished\n")
    transport.close()


def test_rejected_key_tells_user_to_accept_prompt_adb_shell(tmp_path, stranger_key):
    with LoopbackDevice(tmp_path / "root") as device:   # authenticated by default
        with pytest.raises(DeviceUnauthorizedError) as caught:
            AdbShellTransport("127.0.0.1", device.port, key_path=stranger_key, auth_timeout=2.0)
        assert "accept" in str(caught.value) and "prompt on the phone" in str(caught.value)
        assert len(device.offered_keys) == 1      # the public key reached the "phone"


def test_rejected_key_tells_user_to_accept_prompt_adb_server(tmp_path, adb_server):
    with LoopbackDevice(tmp_path / "root", trust_user_keys=False) as device:
        with pytest.raises(DeviceUnauthorizedError) as caught:
            AdbServerTransport(serial=device.serial, server=adb_server.address, connect_timeout=20)
        assert "accept" in str(caught.value) and "prompt on the phone" in str(caught.value)
        adb_server.adb("disconnect", device.serial, check=False)


def test_authorized_key_signs_in_without_prompt(tmp_path, key_path):
    from android_harness.adbshell_transport import load_or_create_adb_key
    private = load_or_create_adb_key(key_path)
    keys_file = tmp_path / "adb_keys"
    keys_file.write_text(open(str(private) + ".pub").read())
    with LoopbackDevice(tmp_path / "root", trust_user_keys=False, authorized_keys=keys_file) as device:
        transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path, auth_timeout=5.0)
        assert transport.shell("echo signed-in").stdout == "signed-in\n"
        assert device.offered_keys == []          # the signature alone was enough
        transport.close()


@pytest.mark.parametrize("binary", [path for _, path in adb_binaries()], ids=[n for n, _ in adb_binaries()])
def test_accepted_prompt_then_adb_server_signature_is_known(tmp_path, binary):
    """The adb server's own key: accepted once through the prompt, then recognised by signature
    (checked with each real adb, since each signs the token itself)."""
    adb_server = start_adb_server(binary, tmp_path / "adb-home", vendor_keys=False)
    try:
        _accept_then_recognise(tmp_path, adb_server)
    finally:
        adb_server.stop()


def _accept_then_recognise(tmp_path, adb_server):
    keys_file = tmp_path / "adb_keys"
    with LoopbackDevice(tmp_path / "root", trust_user_keys=False, authorized_keys=keys_file,
                        accept_new_keys=True) as device:
        transport = AdbServerTransport(serial=device.serial, server=adb_server.address)
        assert transport.shell("echo allowed").stdout == "allowed\n"
        assert len(device.offered_keys) == 1
        adb_server.adb("disconnect", device.serial, check=False)
    assert keys_file.read_text().strip()
    with LoopbackDevice(tmp_path / "root", trust_user_keys=False, authorized_keys=keys_file) as device:
        transport = AdbServerTransport(serial=device.serial, server=adb_server.address)
        assert transport.shell("echo known").stdout == "known\n"
        assert device.offered_keys == []
        adb_server.adb("disconnect", device.serial, check=False)


def _cnxn_header(**overrides) -> bytes:
    data = b"host::\0"
    fields = dict(command=A_CNXN, arg0=0x01000000, arg1=256 * 1024, length=len(data), check=checksum(data),
                  magic=A_CNXN ^ 0xFFFFFFFF)
    fields.update(overrides)
    return HEADER.pack(fields["command"], fields["arg0"], fields["arg1"], fields["length"], fields["check"],
                       fields["magic"]) + data


HOSTILE_OPENINGS = {
    "garbage": os.urandom(4096),
    "wrong-magic": _cnxn_header(magic=0x12345678),
    "huge-length": _cnxn_header(length=0x7FFFFFFF),
    "bad-checksum": _cnxn_header(check=12345),
    "unknown-command": _cnxn_header(command=0x4B4B4B4B, magic=0x4B4B4B4B ^ 0xFFFFFFFF),
}


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("name", sorted(HOSTILE_OPENINGS))
def test_hostile_client_is_dropped_and_daemon_keeps_serving(name, loopback, key_path):
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as sock:
        sock.sendall(HOSTILE_OPENINGS[name])
        assert _closed_by_peer(sock)
    assert loopback.protocol_errors, "the daemon did not notice the broken packet"
    transport = AdbShellTransport("127.0.0.1", loopback.port, key_path=key_path)
    assert transport.shell("echo alive").stdout == "alive\n"
    transport.close()


def test_bad_packet_after_handshake_drops_only_that_connection(loopback, key_path):
    bystander = AdbShellTransport("127.0.0.1", loopback.port, key_path=key_path)
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as sock:
        assert adb_handshake(sock, key_path).command == A_CNXN
        bad_open = bytearray(encode_packet(Packet(A_OPEN, 1, 0, b"shell:echo hi\0")))
        bad_open[20:24] = b"\0\0\0\0"     # magic no longer ~command
        sock.sendall(bytes(bad_open))
        assert _closed_by_peer(sock)
    assert bystander.shell("echo unaffected").stdout == "unaffected\n"
    bystander.close()
