"""The ADB layer on a real phone: run by hand with a phone attached, `pytest tests_phone`.

Outside the default test paths (CI has no phone). Uses the host ADB server's only device,
or ``ANDROID_SERIAL``; set ``WBMM_PHONE_DIRECT=host:port`` to also check the adb-shell
transport against a phone in TCP mode (`adb tcpip 5555`).
"""

from __future__ import annotations

import os
import socket

import pytest

from android_harness.adbutils_transport import list_server_devices
from android_harness.device import Device, file_sha256
from android_harness.connect import open_transport
from wbmm_mobile.errors import DeviceNotFoundError

pytestmark = [pytest.mark.phone, pytest.mark.timeout(300)]
REMOTE_DIR = "/data/local/tmp/wbmm-phone-test"


def _ready_serials() -> list[str]:
    # Only ask a server that already runs: adbutils would otherwise start one as a side effect.
    port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return []
    try:
        return [d.serial for d in list_server_devices() if d.state == "device"]
    except DeviceNotFoundError:
        return []


@pytest.fixture(scope="module", params=["adb-server", "adb-shell"])
def device(request):
    if request.param == "adb-server":
        if not _ready_serials():
            pytest.skip("no phone attached to the ADB server")
        transport = open_transport(serial=os.environ.get("ANDROID_SERIAL"))
    else:
        address = os.environ.get("WBMM_PHONE_DIRECT")
        if not address:
            pytest.skip("set WBMM_PHONE_DIRECT=host:port to test adb-shell against a phone")
        transport = open_transport(direct=address)
    yield Device(transport)
    Device(transport).remove(REMOTE_DIR)
    transport.close()


def test_snapshot_reads_plausible_facts(device):
    snapshot = device.snapshot()
    assert snapshot.info.abi in ("arm64-v8a", "armeabi-v7a", "x86_64", "x86")
    assert snapshot.info.sdk_level >= 21 and snapshot.info.model
    assert snapshot.cpu.cores and all(c.max_freq_khz > 100_000 for c in snapshot.cpu.cores)
    assert 0 <= snapshot.battery.level_percent <= 100
    assert snapshot.problems == ()


def test_shell_exit_code_and_stderr(device):
    result = device.shell("echo out; echo err >&2; exit 9")
    assert (result.exit_code, result.stdout, result.stderr) == (9, "out\n", "err\n")


def test_sync_and_pull_20mb(device, tmp_path):
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(20 * 1000 * 1000))
    first = device.sync_file(local, f"{REMOTE_DIR}/payload.bin")
    assert first.pushed
    assert not device.sync_file(local, f"{REMOTE_DIR}/payload.bin").pushed
    device.pull(f"{REMOTE_DIR}/payload.bin", tmp_path / "back.bin")
    assert file_sha256(tmp_path / "back.bin") == first.sha256
