"""The loopback device's ``sync:`` service: STAT/STA2/LST2, LIST/LIS2, SEND, RECV, QUIT.

Files come from and go to the root folder (``rootfs``); a pushed file is written under
a temporary name beside its target (always inside the root) and renamed after DONE,
so an interrupted push leaves nothing half-written behind, and it never keeps a
setuid, setgid or sticky bit. Every failure of a push (a directory as target, no
permission, a full disk, a name too long) is answered with FAIL and the reason as
soon as the client has sent its data, never with silence. Record layouts are in ``android_harness.sync_protocol``. Faults
for tests (drop the connection part-way through a push, a full disk) come from the
daemon's ``FaultPlan``. Not for: shell commands.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
import tempfile

from android_harness.loopback.rootfs import PathEscapeError, RootFolder
from android_harness.loopback.streams import Stream, StreamClosed, StreamReader
from android_harness.sync_protocol import (
    DENT_V1, DENT_V2, ID_DATA, ID_DENT, ID_DNT2, ID_DONE, ID_FAIL, ID_LIS2, ID_LIST, ID_LST2, ID_OKAY, ID_QUIT,
    ID_RECV, ID_SEND, ID_STA2, ID_STAT, REQUEST, STAT_V1, STAT_V2, SYNC_DATA_MAX, SYNC_PATH_MAX)

__all__ = ["run_sync_service"]

# A sync client may sit idle between requests (adb keeps the service open while it
# walks a directory); after this long without a request the service closes.
_IDLE_TIMEOUT_S = 300.0


class _Abort(Exception):
    """Stop serving this stream (protocol violation or injected fault)."""


def run_sync_service(stream: Stream, rootfs: RootFolder, faults, request_counts=None) -> None:
    """Serve sync requests until QUIT or close; ``request_counts`` (a Counter) records each
    request id, so tests can see which protocol version a client chose."""
    reader = StreamReader(stream, timeout=_IDLE_TIMEOUT_S)
    try:
        while True:
            sync_id, length = REQUEST.unpack(reader.read_exact(REQUEST.size))
            if request_counts is not None:
                request_counts[sync_id.decode("latin-1")] += 1
            if sync_id == ID_QUIT:
                return
            if length > SYNC_PATH_MAX:
                _fail(stream, f"path length {length} above {SYNC_PATH_MAX}")
                return
            path = reader.read_exact(length).decode("utf-8", "surrogateescape")
            if sync_id == ID_STAT:
                stream.write(_stat_v1(rootfs, path))
            elif sync_id in (ID_STA2, ID_LST2):
                stream.write(_stat_v2(rootfs, path, sync_id, follow=sync_id == ID_STA2))
            elif sync_id in (ID_LIST, ID_LIS2):
                _list(stream, rootfs, path, v2=sync_id == ID_LIS2)
            elif sync_id == ID_SEND:
                _receive_file(stream, reader, rootfs, path, faults)
            elif sync_id == ID_RECV:
                _send_file(stream, rootfs, path)
            else:
                _fail(stream, f"unknown sync request {sync_id!r}")
                return
    except (StreamClosed, TimeoutError, _Abort):
        pass
    except (OSError, ValueError) as exc:
        # Whatever went wrong on this side, the client hears why instead of waiting for a timeout.
        try:
            _fail(stream, f"sync: {_reason(exc)}")
        except StreamClosed:
            pass
    finally:
        stream.close()


def _fail(stream: Stream, message: str) -> None:
    encoded = message.encode("utf-8")
    stream.write(REQUEST.pack(ID_FAIL, len(encoded)) + encoded)


def _lstat(rootfs: RootFolder, path: str, follow: bool = False) -> os.stat_result | None:
    try:
        host = rootfs.host_path(path, follow_last=follow)
        return os.stat(host) if follow else os.lstat(host)
    except (OSError, PathEscapeError):
        return None


def _stat_v1(rootfs: RootFolder, path: str) -> bytes:
    st = _lstat(rootfs, path)
    if st is None:
        return STAT_V1.pack(ID_STAT, 0, 0, 0)
    return STAT_V1.pack(ID_STAT, st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF)


def _v2_fields(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            int(st.st_atime), int(st.st_mtime), int(st.st_ctime))


def _stat_v2(rootfs: RootFolder, path: str, sync_id: bytes, follow: bool) -> bytes:
    st = _lstat(rootfs, path, follow=follow)
    if st is None:
        return STAT_V2.pack(sync_id, errno.ENOENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return STAT_V2.pack(sync_id, 0, *_v2_fields(st))


def _list(stream: Stream, rootfs: RootFolder, path: str, v2: bool) -> None:
    try:
        with os.scandir(rootfs.host_path(path)) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                name = entry.name.encode("utf-8", "surrogateescape")
                if v2:
                    stream.write(DENT_V2.pack(ID_DNT2, 0, *_v2_fields(st), len(name)) + name)
                else:
                    stream.write(DENT_V1.pack(ID_DENT, st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                                              int(st.st_mtime) & 0xFFFFFFFF, len(name)) + name)
    except (OSError, PathEscapeError):
        pass  # adbd ends an unreadable directory's listing with DONE, like an empty one
    if v2:
        stream.write(DENT_V2.pack(ID_DONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    else:
        stream.write(DENT_V1.pack(ID_DONE, 0, 0, 0, 0))


def _open_partial(rootfs: RootFolder, path: str):
    """(target, temporary path, open file) for a push to ``path``; OSError when it cannot be."""
    target = rootfs.host_path(path)
    if target == rootfs.root or target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(os.fsencode(target.name)) > 255:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:50]}.", suffix=".partial")
    return target, partial, os.fdopen(handle, "wb")


def _receive_file(stream: Stream, reader: StreamReader, rootfs: RootFolder, spec: str, faults) -> None:
    """SEND: "path,mode" then DATA chunks then DONE(mtime); answer OKAY or FAIL after DONE.
    After the first error the data is read and dropped, so the client reaches DONE and reads FAIL."""
    path, _, mode_text = spec.rpartition(",")
    if not path:
        path, mode_text = spec, "33188"
    mode = int(mode_text) if mode_text.isdigit() else 0o100644
    error = None
    try:
        target, partial, output = _open_partial(rootfs, path)
    except (OSError, PathEscapeError) as exc:
        error, target, output, partial = f"{path}: {_reason(exc)}", None, None, None
    received = 0
    mtime = None
    try:
        while True:
            sync_id, length = REQUEST.unpack(reader.read_exact(REQUEST.size))
            if sync_id == ID_DONE:
                mtime = length
                break
            if sync_id != ID_DATA or length > SYNC_DATA_MAX:
                raise _Abort(f"SEND: unexpected {sync_id!r} of {length} bytes")
            data = reader.read_exact(length)
            received += length
            if faults.take_drop_during_push(received):
                stream.connection.abort("fault plan: connection dropped during a push")
                raise _Abort("dropped")
            if faults.disk_quota_bytes is not None and received > faults.disk_quota_bytes and error is None:
                error = f"{path}: No space left on device"
            if output is not None and error is None:
                try:
                    output.write(data)
                except OSError as exc:
                    error = f"{path}: {_reason(exc)}"
        if output is not None:
            try:
                output.close()
            except OSError as exc:
                error = error or f"{path}: {_reason(exc)}"
            output = None
            if error is None:
                try:
                    # Permission bits only: a pushed file never becomes setuid, setgid or sticky.
                    os.chmod(partial, (stat_module.S_IMODE(mode) & 0o777) or 0o644)
                    if mtime:
                        os.utime(partial, (mtime, mtime))
                    os.replace(partial, target)
                    partial = None
                except OSError as exc:
                    error = f"{path}: {_reason(exc)}"
    finally:
        if output is not None:
            try:
                output.close()
            except OSError:
                pass
        if partial is not None and os.path.exists(partial):
            os.unlink(partial)
    if error is not None:
        _fail(stream, error)
    else:
        stream.write(REQUEST.pack(ID_OKAY, 0))


def _send_file(stream: Stream, rootfs: RootFolder, path: str) -> None:
    """RECV: DATA chunks of at most 64 KiB, then DONE; FAIL when the file cannot be read."""
    try:
        host = rootfs.host_path(path)
        if host.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        source = open(host, "rb")
    except (OSError, PathEscapeError) as exc:
        _fail(stream, f"{path}: {_reason(exc)}")
        return
    # Several DATA records share one WRTE (up to the negotiated payload size): every WRTE
    # costs a round trip for its OKAY, so 64 KiB per WRTE would cap the pull rate.
    batch = bytearray()
    with source:
        while True:
            try:
                chunk = source.read(SYNC_DATA_MAX)
            except OSError as exc:   # e.g. EISDIR, EIO: the client still gets FAIL, not silence
                if not batch:
                    _fail(stream, f"{path}: {_reason(exc)}")
                    return
                raise _Abort(str(exc)) from None
            if not chunk:
                break
            record = REQUEST.pack(ID_DATA, len(chunk)) + chunk
            if batch and len(batch) + len(record) > stream.connection.max_data:
                stream.write(bytes(batch))
                batch.clear()
            batch += record
    stream.write(bytes(batch) + REQUEST.pack(ID_DONE, 0))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
