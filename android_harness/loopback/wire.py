"""ADB transport framing: the 24-byte packet header, its checks, and the shell v2 sub-packets.

A packet is six little-endian uint32 (command, arg0, arg1, data length, data
checksum, magic = command ^ 0xffffffff) followed by the data. ``read_packet``
refuses anything a real adbd would not accept (unknown command, wrong magic, a
length above the negotiated maximum, a wrong checksum) with ``AdbProtocolError``,
so the daemon can drop that one connection and keep serving. Not for: stream
bookkeeping (``daemon``) or what services do with the bytes.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from wbmm_mobile.errors import AdbProtocolError, DeviceGoneError

__all__ = [
    "A_SYNC", "A_CNXN", "A_AUTH", "A_OPEN", "A_OKAY", "A_CLSE", "A_WRTE", "A_STLS",
    "COMMAND_NAMES", "A_VERSION_MIN", "A_VERSION_SKIP_CHECKSUM", "AUTH_TOKEN", "AUTH_SIGNATURE",
    "AUTH_RSAPUBLICKEY", "HEADER", "Packet", "checksum", "encode_packet", "read_packet", "recv_exact",
    "SHELL_STDIN", "SHELL_STDOUT", "SHELL_STDERR", "SHELL_EXIT", "SHELL_CLOSE_STDIN",
    "SHELL_WINDOW_SIZE", "shell_v2_packet",
]


def _command(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_SYNC = _command(b"SYNC")
A_CNXN = _command(b"CNXN")
A_AUTH = _command(b"AUTH")
A_OPEN = _command(b"OPEN")
A_OKAY = _command(b"OKAY")
A_CLSE = _command(b"CLSE")
A_WRTE = _command(b"WRTE")
A_STLS = _command(b"STLS")
COMMAND_NAMES = {value: name for name, value in (
    ("SYNC", A_SYNC), ("CNXN", A_CNXN), ("AUTH", A_AUTH), ("OPEN", A_OPEN),
    ("OKAY", A_OKAY), ("CLSE", A_CLSE), ("WRTE", A_WRTE), ("STLS", A_STLS))}

# Protocol versions: from 0x01000001 on, a peer may send 0 as the data checksum.
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

HEADER = struct.Struct("<6I")

# shell,v2 sub-packet ids: 1 byte id + uint32 length + payload.
SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE = 5


@dataclass(frozen=True)
class Packet:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"0x{self.command:08x}")


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def encode_packet(packet: Packet) -> bytes:
    """Header + data. The checksum is always filled in: old clients (and adb-shell) verify it."""
    header = HEADER.pack(packet.command, packet.arg0, packet.arg1, len(packet.data),
                         checksum(packet.data), packet.command ^ 0xFFFFFFFF)
    return header + packet.data


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes, or DeviceGoneError when the peer closes first.
    The socket's own timeout bounds each wait."""
    chunks = []
    remaining = size
    while remaining:
        try:
            chunk = sock.recv(min(remaining, 1 << 20))
        except socket.timeout:
            raise
        except OSError as exc:
            raise DeviceGoneError(f"connection lost: {exc}") from None
        if not chunk:
            raise DeviceGoneError("peer closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_packet(sock: socket.socket, max_data: int, checksum_required: bool) -> Packet:
    """One packet, validated. ``checksum_required`` is True until both sides agreed on a
    protocol version that lets a zero checksum through."""
    header = recv_exact(sock, HEADER.size)
    command, arg0, arg1, length, data_check, magic = HEADER.unpack(header)
    if command not in COMMAND_NAMES:
        raise AdbProtocolError(f"unknown command 0x{command:08x}")
    if magic != command ^ 0xFFFFFFFF:
        raise AdbProtocolError(f"{COMMAND_NAMES[command]}: magic 0x{magic:08x} does not match the command")
    if length > max_data:
        raise AdbProtocolError(f"{COMMAND_NAMES[command]}: data length {length} above the maximum {max_data}")
    data = recv_exact(sock, length) if length else b""
    if (data_check != 0 or checksum_required) and data_check != checksum(data):
        raise AdbProtocolError(f"{COMMAND_NAMES[command]}: checksum {data_check} != {checksum(data)}")
    return Packet(command, arg0, arg1, data)


def shell_v2_packet(kind: int, payload: bytes) -> bytes:
    return struct.pack("<BI", kind, len(payload)) + payload
