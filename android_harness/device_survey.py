"""Every reachable device with its facts, for ``wbmm-mobile devices``.

Walks the ADB server's device list (and any direct ``host:port`` adbd addresses),
reads a ``DeviceSnapshot`` from each ready device, and reports the others with their
state (unauthorized, offline) or the error that stopped the read, one row each: one
bad device never hides the rest. Not for: choosing a device to benchmark on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from android_harness.device import Device
from android_harness.device_facts import DeviceSnapshot
from wbmm_mobile.errors import DeviceError, DeviceNotFoundError

__all__ = ["SurveyRow", "survey_devices"]


@dataclass(frozen=True)
class SurveyRow:
    serial: str
    via: str                          # "adb server host:port" or "direct"
    state: str                        # "device", "unauthorized", "offline", "error" ...
    snapshot: DeviceSnapshot | None   # None unless the device answered
    problem: str = ""                 # why there is no snapshot, in one line


def survey_devices(adb_server: str | None = None, direct: Sequence[str] = (),
                   use_server: bool = True, timeout: float = 20.0) -> list[SurveyRow]:
    """Rows for every device on the ADB server (unless ``use_server`` is False) and every
    ``direct`` address. Raises DeviceNotFoundError when there is nothing at all to list."""
    from android_harness.adbutils_transport import AdbServerTransport, list_server_devices
    from android_harness.adbshell_transport import AdbShellTransport
    from android_harness.transport import parse_host_port

    rows: list[SurveyRow] = []
    server_problem = ""
    if use_server:
        try:
            listed = list_server_devices(adb_server, timeout=timeout)
        except DeviceNotFoundError as exc:
            listed, server_problem = [], str(exc)
        via = f"adb server {adb_server or 'default'}"
        for entry in listed:
            if entry.state != "device":
                rows.append(SurveyRow(entry.serial, via, entry.state, None, _state_hint(entry.state)))
                continue
            try:
                transport = AdbServerTransport(serial=entry.serial, server=adb_server, io_timeout=timeout,
                                               connect_timeout=timeout)
                with transport:
                    rows.append(SurveyRow(entry.serial, via, "device", Device(transport).snapshot()))
            except DeviceError as exc:
                rows.append(SurveyRow(entry.serial, via, "error", None, _one_line(exc)))
    for address in direct:
        host, port = parse_host_port(address, default_port=5555)
        try:
            with AdbShellTransport(host, port, io_timeout=timeout, auth_timeout=timeout) as transport:
                rows.append(SurveyRow(transport.serial, "direct", "device", Device(transport).snapshot()))
        except DeviceError as exc:
            rows.append(SurveyRow(f"{host}:{port}", "direct", "error", None, _one_line(exc)))
    if not rows:
        raise DeviceNotFoundError(server_problem or "no devices: none attached to the ADB server"
                                  + (" and no --direct address given" if not direct else ""))
    return rows


def _state_hint(state: str) -> str:
    if state == "unauthorized":
        return "accept the 'Allow USB debugging?' prompt on the phone"
    if state == "offline":
        return "device offline: replug it or restart adbd"
    return f"state {state}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
