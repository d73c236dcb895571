"""``open_transport``: the transport for one device, picking the client.

Kept apart from the ``Transport`` interface (``android_harness.transport``) because it
imports both implementations, which import the interface: here the imports point one way.
"""

from __future__ import annotations

from android_harness.transport import Transport, parse_host_port
from wbmm_mobile.errors import DeviceNotFoundError

__all__ = ["open_transport"]


def open_transport(serial: str | None = None, adb_server: str | None = None,
                   direct: str | None = None, **kwargs) -> Transport:
    """The transport for one device.

    ``direct="host:port"`` talks to the device's adbd itself through adb-shell (no
    platform-tools needed); otherwise the host ADB server is used (``adb_server``
    "host:port", default ``$ANDROID_ADB_SERVER_HOST``/``$ANDROID_ADB_SERVER_PORT`` or
    127.0.0.1:5037), picking ``serial`` or the only device attached.
    """
    if direct and adb_server:
        raise DeviceNotFoundError("give either a direct device address or an ADB server, not both")
    if direct:
        from android_harness.adbshell_transport import AdbShellTransport
        host, port = parse_host_port(direct, default_port=5555)
        return AdbShellTransport(host, port, **kwargs)
    from android_harness.adbutils_transport import AdbServerTransport
    return AdbServerTransport(serial=serial, server=adb_server, **kwargs)
