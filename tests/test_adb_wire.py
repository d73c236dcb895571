"""The loopback device at the packet level: flow control, stream bookkeeping, version rules.

A raw socket plays the host, packet by packet, to check what real clients only
exercise implicitly: one unacknowledged WRTE per stream, CLSE answered with CLSE,
unknown services refused, zero checksums accepted only after the version that allows them.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from android_harness.loopback import LoopbackDevice
from android_harness.loopback.wire import (
    A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION_MIN, A_VERSION_SKIP_CHECKSUM, A_WRTE, HEADER, SHELL_EXIT,
    SHELL_STDOUT, Packet, encode_packet, read_packet)
from tests._adb_helpers import adb_handshake
from wbmm_mobile.errors import AdbProtocolError, DeviceGoneError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def loopback(tmp_path, key_path):
    with LoopbackDevice(tmp_path / "root") as device:
        device.test_key = key_path
        yield device


def connect(device: LoopbackDevice, version: int = A_VERSION_MIN) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", device.port), timeout=10)
    reply = adb_handshake(sock, device.test_key, version=version, max_data=64 * 1024)   # RSA AUTH is on by default
    assert reply.command == A_CNXN and b"features=" in reply.data and b"shell_v2" in reply.data
    assert b"ro.product.model=wbmm loopback (this computer)" in reply.data
    assert reply.arg0 == min(version, A_VERSION_SKIP_CHECKSUM)
    return sock


def next_packet(sock: socket.socket, timeout: float = 10) -> Packet:
    sock.settimeout(timeout)
    return read_packet(sock, 1 << 20, checksum_required=True)


def test_one_unacknowledged_write_per_stream(loopback):
    sock = connect(loopback)
    sock.sendall(encode_packet(Packet(A_OPEN, 7, 0, b"shell:head -c 300000 /dev/zero\0")))
    okay = next_packet(sock)
    assert (okay.command, okay.arg1) == (A_OKAY, 7)
    device_id = okay.arg0
    first = next_packet(sock)
    assert first.command == A_WRTE and (first.arg0, first.arg1) == (device_id, 7)
    assert len(first.data) <= 64 * 1024                  # never above the size we announced
    with pytest.raises(socket.timeout):
        next_packet(sock, timeout=1.0)                   # nothing more until we acknowledge
    received = len(first.data)
    while True:
        sock.sendall(encode_packet(Packet(A_OKAY, 7, device_id)))
        packet = next_packet(sock)
        if packet.command == A_CLSE:
            break
        assert packet.command == A_WRTE
        received += len(packet.data)
    assert received == 300000
    sock.close()


def test_two_streams_interleave_on_one_connection(loopback):
    sock = connect(loopback)
    sock.sendall(encode_packet(Packet(A_OPEN, 1, 0, b"shell,v2,raw:read line; echo got-$line\0")))
    sock.sendall(encode_packet(Packet(A_OPEN, 2, 0, b"shell,v2,raw:echo second\0")))
    ids, outputs, exits, closed = {}, {1: b"", 2: b""}, {}, set()
    while closed != {1, 2}:
        packet = next_packet(sock)
        if packet.command == A_OKAY and packet.arg1 not in ids:
            ids[packet.arg1] = packet.arg0
            if packet.arg1 == 1:
                # Stream 1 waits for this line while stream 2 runs to its end.
                sock.sendall(encode_packet(Packet(A_WRTE, 1, ids[1], struct.pack("<BI", 0, 6) + b"hello\n")))
        elif packet.command == A_WRTE:
            sock.sendall(encode_packet(Packet(A_OKAY, packet.arg1, packet.arg0)))
            outputs[packet.arg1] += packet.data
        elif packet.command == A_CLSE:
            closed.add(packet.arg1)
    for stream, data in outputs.items():
        stdout, offset = b"", 0
        while offset < len(data):
            kind, length = struct.unpack_from("<BI", data, offset)
            payload = data[offset + 5:offset + 5 + length]
            offset += 5 + length
            if kind == SHELL_STDOUT:
                stdout += payload
            elif kind == SHELL_EXIT:
                exits[stream] = payload[0]
        outputs[stream] = stdout
    assert outputs == {1: b"got-hello\n", 2: b"second\n"} and exits == {1: 0, 2: 0}
    sock.close()


def test_unknown_service_is_refused_and_clse_is_answered(loopback):
    sock = connect(loopback)
    sock.sendall(encode_packet(Packet(A_OPEN, 5, 0, b"framebuffer:\0")))
    refused = next_packet(sock)
    assert (refused.command, refused.arg0, refused.arg1) == (A_CLSE, 0, 5)
    sock.sendall(encode_packet(Packet(A_OPEN, 6, 0, b"shell:sleep 30\0")))
    okay = next_packet(sock)
    assert okay.command == A_OKAY
    sock.sendall(encode_packet(Packet(A_CLSE, 6, okay.arg0)))
    answer = next_packet(sock)
    assert (answer.command, answer.arg0, answer.arg1) == (A_CLSE, okay.arg0, 6)
    sock.close()


def test_zero_checksum_needs_the_newer_version(loopback):
    def zero_checksum_open(local_id: int) -> bytes:
        data = b"shell:echo ok\0"
        return HEADER.pack(A_OPEN, local_id, 0, len(data), 0, A_OPEN ^ 0xFFFFFFFF) + data

    new = connect(loopback, version=A_VERSION_SKIP_CHECKSUM)
    new.sendall(zero_checksum_open(3))
    assert next_packet(new).command == A_OKAY
    new.close()
    old = connect(loopback, version=A_VERSION_MIN)
    old.sendall(zero_checksum_open(3))
    with pytest.raises(DeviceGoneError):
        while True:
            next_packet(old)
    assert any("checksum" in error for error in loopback.protocol_errors)
    old.close()


def test_peer_ignoring_flow_control_is_dropped(loopback):
    sock = connect(loopback)
    sock.sendall(encode_packet(Packet(A_OPEN, 9, 0, b"shell,v2,raw:sleep 30\0")))
    okay = next_packet(sock)
    assert okay.command == A_OKAY
    flood = encode_packet(Packet(A_WRTE, 9, okay.arg0, struct.pack("<BI", 0, 1000) + b"x" * 1000))
    with pytest.raises((DeviceGoneError, ConnectionError)):
        for _ in range(200):                       # never waits for the device's OKAY
            sock.sendall(flood)
        while True:
            next_packet(sock)
    assert any("without waiting for OKAY" in error for error in loopback.protocol_errors)
    sock.close()


def _command_values():
    from android_harness.loopback.wire import COMMAND_NAMES
    return sorted(COMMAND_NAMES)


# Payload bytes are non-zero so that a shortened length always changes the checksum.
@given(command=st.sampled_from(_command_values()), arg0=st.integers(0, 2**32 - 1),
       arg1=st.integers(0, 2**32 - 1), data=st.lists(st.integers(1, 255), max_size=600).map(bytes),
       flip=st.integers(0, 23))
def test_packet_roundtrip_and_any_header_corruption_is_caught(command, arg0, arg1, data, flip):
    """encode -> read gives the packet back; changing any single byte of the command, length,
    checksum or magic fields is refused (args are free-form, so flips there just change them)."""
    packet = Packet(command, arg0, arg1, data)
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(5)
        right.settimeout(5)
        encoded = bytearray(encode_packet(packet))
        right.sendall(bytes(encoded))
        assert read_packet(left, 4096, checksum_required=True) == packet
        if 4 <= flip < 12:
            return
        encoded[flip] ^= 0x01
        right.sendall(bytes(encoded))
        right.shutdown(socket.SHUT_WR)
        with pytest.raises((AdbProtocolError, DeviceGoneError)):
            read_packet(left, 4096, checksum_required=True)
