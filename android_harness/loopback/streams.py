"""One ADB stream (an OPENed service) on the loopback device, with the protocol's flow control.

Each side may have one WRTE in flight per stream: ``write`` sends a packet and waits
for the peer's OKAY before the next; ``read`` hands over one received WRTE and only
then acknowledges it, so a slow service slows the sender down instead of buffering
without bound. Every wait has a timeout, and a closed stream or connection wakes all
waiters with ``StreamClosed``. Not for: framing (``wire``) or services.
"""

from __future__ import annotations

import queue
import threading

from android_harness.loopback.wire import A_CLSE, A_OKAY, A_WRTE, Packet

__all__ = ["Stream", "StreamClosed", "StreamReader", "WRITE_ACK_TIMEOUT_S"]

# How long a peer may take to acknowledge a WRTE before the stream gives up on it.
WRITE_ACK_TIMEOUT_S = 120.0
# The protocol allows one unacknowledged WRTE per stream; a little slack for peers that
# pipeline, then the connection is dropped.
_MAX_UNACKNOWLEDGED = 32


class StreamClosed(Exception):
    """The peer closed the stream, or the connection under it went away."""


class Stream:
    def __init__(self, connection, local_id: int, remote_id: int):
        self.connection = connection
        self.local_id = local_id
        self.remote_id = remote_id
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._acked = threading.Event()
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._close_sent = False
        self._close_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- called by the connection's reader thread --------------------------------------------
    def on_data(self, data: bytes) -> bool:
        """Queue a WRTE; False when the peer has far more unacknowledged writes in flight than
        the protocol's one (it ignores flow control, and would fill memory)."""
        if self._inbox.qsize() >= _MAX_UNACKNOWLEDGED:
            return False
        self._inbox.put(data)
        return True

    def on_okay(self) -> None:
        self._acked.set()

    def on_peer_closed(self) -> None:
        self._closed.set()
        self._inbox.put(None)
        self._acked.set()

    # -- called by the service -----------------------------------------------------------------
    def write(self, data: bytes, timeout: float = WRITE_ACK_TIMEOUT_S) -> None:
        """Send ``data`` as WRTE packets of at most the negotiated size, each acknowledged."""
        with self._write_lock:
            view = memoryview(data)
            step = self.connection.max_data
            for start in range(0, len(view), step):
                if self.closed:
                    raise StreamClosed("stream closed")
                self._acked.clear()
                self.connection.send(Packet(A_WRTE, self.local_id, self.remote_id, bytes(view[start:start + step])))
                if not self._acked.wait(timeout):
                    raise StreamClosed(f"peer did not acknowledge a write within {timeout:.0f} s")
                if self.closed:
                    raise StreamClosed("stream closed")

    def read(self, timeout: float) -> bytes:
        """The next WRTE payload (acknowledged on hand-over); StreamClosed when closed,
        TimeoutError when nothing came in ``timeout`` seconds."""
        try:
            data = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no data from the peer within {timeout:.0f} s") from None
        if data is None:
            self._inbox.put(None)   # later readers see the close too
            raise StreamClosed("stream closed by the peer")
        if not self.closed:
            self.connection.send(Packet(A_OKAY, self.local_id, self.remote_id))
        return data

    def close(self) -> None:
        """Close our side: CLSE exactly once, also as the answer to the peer's CLSE (adbd answers
        a CLSE with a CLSE, and adb-shell waits for it)."""
        with self._close_lock:
            if self._close_sent:
                return
            self._close_sent = True
        self._closed.set()
        self._acked.set()
        self.connection.send(Packet(A_CLSE, self.local_id, self.remote_id), ignore_errors=True)
        self.connection.forget_stream(self.local_id)


class StreamReader:
    """Byte-exact reads over a stream's packets (the sync protocol does not align to WRTEs)."""

    def __init__(self, stream: Stream, timeout: float):
        self.stream = stream
        self.timeout = timeout
        self._buffer = bytearray()

    def read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self.stream.read(self.timeout)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
