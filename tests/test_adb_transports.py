"""Both transports and the Device API, end to end on the loopback device.

``adb-server``: AdbServerTransport through a private Debian adb server (adbutils on
the host side). ``adb-shell``: AdbShellTransport straight to the device (adb-shell
on the host side, no server). Facts are checked against the fixture phone's files.
"""

from __future__ import annotations

import concurrent.futures
import os
import stat
import time

import pytest

from android_harness.adbshell_transport import AdbShellTransport
from android_harness.adbutils_transport import AdbServerTransport
from android_harness.device import Device, file_sha256
from android_harness.loopback import LoopbackDevice
from android_harness.transport import ShellResult
from wbmm_mobile.errors import DeviceCommandError, DeviceError, DeviceNoSpaceError, DeviceTimeoutError

pytestmark = pytest.mark.timeout(240)
HOSTILE = "we ird'name\";touch PWNED;$(touch PWNED2)`touch PWNED3`$HOME,mode.bin"


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    with LoopbackDevice(tmp_path_factory.mktemp("loopback-root"), fixture_phone=True) as device:
        yield device


@pytest.fixture(scope="module", params=["adb-server", "adb-shell"])
def transport(request, loopback, key_path):
    if request.param == "adb-server":
        server = request.getfixturevalue("adb_server")
        made = AdbServerTransport(serial=loopback.serial, server=server.address)
    else:
        made = AdbShellTransport("127.0.0.1", loopback.port, key_path=key_path)
    yield made
    made.close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    path = tmp_path_factory.mktemp("payload") / "payload.bin"
    path.write_bytes(os.urandom(20 * 1000 * 1000))
    return path


def test_shell_exit_code_stdout_stderr(transport):
    result = transport.shell("echo out-line; echo err-line >&2; exit 7")
    assert isinstance(result, ShellResult)
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out-line\n", "err-line\n")
    with pytest.raises(DeviceCommandError) as caught:
        result.check()
    assert caught.value.exit_code == 7 and caught.value.stderr == "err-line\n"
    assert transport.shell(["echo", "a b", "c"]).stdout == "a b c\n"


def test_push_pull_20mb_and_stat(transport, loopback, payload, tmp_path):
    remote = f"/data/local/tmp/{type(transport).__name__}/payload.bin"
    transport.shell(["mkdir", "-p", os.path.dirname(remote)]).check()
    pushed = transport.push(payload, remote, mode=0o640)
    assert pushed.size == 20 * 1000 * 1000
    assert (loopback.root / remote.lstrip("/")).read_bytes() == payload.read_bytes()
    info = transport.stat(remote)
    assert info.exists and info.is_file and info.size == 20 * 1000 * 1000
    assert stat.S_IMODE(info.mode) == 0o640
    back = tmp_path / "back.bin"
    assert transport.pull(remote, back).size == 20 * 1000 * 1000
    assert back.read_bytes() == payload.read_bytes()
    assert not transport.stat(remote + ".missing").exists
    names = [entry.name for entry in transport.list(os.path.dirname(remote))]
    assert names == ["payload.bin"]


def test_device_facts_match_the_fixture_phone(transport, loopback):
    snapshot = Device(transport).snapshot()
    info = snapshot.info
    assert (info.model, info.manufacturer, info.soc_model, info.board_platform) == \
        ("Pixel 7 (wbmm loopback fixture)", "Google", "Tensor G2", "gs201")
    assert (info.abi, info.sdk_level, info.android_version, info.is_loopback) == ("arm64-v8a", 34, "14", True)
    assert snapshot.cpu.clusters == ((0, 1, 2, 3), (4, 5), (6, 7))
    assert snapshot.cpu.big_core_mask == "f0" and snapshot.cpu.prime_core_mask == "c0"
    assert [c.max_freq_khz for c in snapshot.cpu.cores] == [1803000] * 4 + [2348000] * 2 + [2850000] * 2
    battery = snapshot.battery
    assert (battery.level_percent, battery.plugged, battery.temperature_c, battery.voltage_mv) == \
        (78, False, 31.2, 4012)
    assert snapshot.thermal.status_name == "light"
    assert snapshot.thermal.hottest("cpu").name == "BIG" and snapshot.thermal.hottest("cpu").value_c == 41.2
    assert "NPU" not in {t.name for t in snapshot.thermal.temperatures}   # NaN readings are dropped
    assert snapshot.problems == ()


def test_battery_follows_the_sysfs_fixture(transport, loopback):
    supply = loopback.root / "sys/class/power_supply"
    (supply / "battery/capacity").write_text("41\n")
    (supply / "usb/online").write_text("1\n")
    (supply / "battery/status").write_text("Charging\n")
    try:
        battery = Device(transport).battery()
        assert (battery.level_percent, battery.plugged, battery.plugged_sources, battery.status) == \
            (41, True, ("usb",), "charging")
    finally:
        (supply / "battery/capacity").write_text("78\n")
        (supply / "usb/online").write_text("0\n")
        (supply / "battery/status").write_text("Discharging\n")


def test_sync_file_pushes_only_changed_content(transport, loopback, tmp_path):
    device = Device(transport)
    local = tmp_path / "model.tflite"
    local.write_bytes(os.urandom(300_000))
    remote = f"/data/local/tmp/sync-{type(transport).__name__}/model.tflite"
    first = device.sync_file(local, remote)
    assert first.pushed and first.sha256 == file_sha256(local)
    on_device = loopback.root / remote.lstrip("/")
    inode = on_device.stat().st_ino
    second = device.sync_file(local, remote)
    assert not second.pushed
    assert on_device.stat().st_ino == inode          # the file was not rewritten
    local.write_bytes(os.urandom(300_000))
    third = device.sync_file(local, remote)
    assert third.pushed and on_device.read_bytes() == local.read_bytes()


def test_hostile_name_is_one_argument_everywhere(transport, loopback, tmp_path):
    """Spaces, quotes, ;, $( ), backticks and $HOME in a file name: pushed, hashed, listed and
    removed through quoted commands, and none of the embedded commands ran."""
    device = Device(transport)
    local = tmp_path / "plain.bin"
    local.write_bytes(b"payload with a hostile name")
    folder = f"/data/local/tmp/hostile-{type(transport).__name__}"
    remote = f"{folder}/{HOSTILE}"
    result = device.sync_file(local, remote)
    assert result.pushed
    assert (loopback.root / remote.lstrip("/")).read_bytes() == b"payload with a hostile name"
    assert device.remote_sha256(remote) == file_sha256(local)
    listing = device.run(["ls", folder]).stdout.splitlines()
    assert listing == [HOSTILE]
    device.remove(remote)
    assert not (loopback.root / remote.lstrip("/")).exists()
    for where in (loopback.root, tmp_path, os.getcwd()):
        assert not [p for p in os.listdir(where) if p.startswith("PWNED")]
    assert not list(loopback.root.rglob("PWNED*"))


def test_concurrent_shells_on_one_device(transport, loopback):
    """Several streams open at once: each command waits until all have started."""
    tag = f"meet-{type(transport).__name__}"
    commands = [f"mkdir -p /data/local/tmp/{tag} && touch /data/local/tmp/{tag}/{n}; i=0; "
                f"while [ $(ls /data/local/tmp/{tag} | wc -l) -lt 3 ]; do i=$((i+1)); "
                f"[ $i -gt 300 ] && exit 1; sleep 0.1; done; echo met-{n}" for n in range(3)]
    if isinstance(transport, AdbShellTransport):
        # adb-shell serialises calls on one connection: use one connection per stream.
        extra = [AdbShellTransport("127.0.0.1", loopback.port, key_path=transport.key_path) for _ in range(2)]
        runners = [transport, *extra]
    else:
        runners, extra = [transport] * 3, []
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda pair: pair[0].shell(pair[1], timeout=90), zip(runners, commands)))
    finally:
        for made in extra:
            made.close()
    assert [r.exit_code for r in results] == [0, 0, 0]
    assert [r.stdout.strip() for r in results] == ["met-0", "met-1", "met-2"]


def test_full_disk_is_a_no_space_error(transport, loopback, tmp_path):
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(200_000))
    loopback.faults.disk_quota_bytes = 100_000
    try:
        with pytest.raises(DeviceNoSpaceError) as caught:
            transport.push(local, "/data/local/tmp/full.bin")
        assert "No space left on device" in str(caught.value)
    finally:
        loopback.faults.disk_quota_bytes = None
    assert not (loopback.root / "data/local/tmp/full.bin").exists()
    assert transport.shell("echo still-here").stdout == "still-here\n"


def test_path_outside_root_is_refused(transport, loopback, tmp_path):
    escape = loopback.root / "data/local/tmp/escape"
    if not escape.exists():
        escape.symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "secret.txt").write_text("outside")
    with pytest.raises(DeviceError) as caught:
        transport.pull("/data/local/tmp/escape/secret.txt", tmp_path / "got.txt")
    assert "outside the loopback root" in str(caught.value)
    assert not (tmp_path / "got.txt").exists()
    assert transport.shell("echo next").stdout == "next\n"


def test_command_past_its_timeout_is_killed(transport, loopback):
    """A command running past its timeout: DeviceTimeoutError, the process on the device is
    killed (the stream closes), and the transport keeps working."""
    pid_file = loopback.root / f"data/local/tmp/pid-{type(transport).__name__}"
    with pytest.raises(DeviceTimeoutError):
        transport.shell(f"echo $$ > /data/local/tmp/{pid_file.name}; exec sleep 60", timeout=2)
    pid = int(pid_file.read_text())
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the timed-out command (pid {pid}) is still running")
    assert transport.shell("echo after").stdout == "after\n"


def test_exit_code_marker_for_devices_without_shell_v2(loopback, adb_server):
    """Old devices lack shell_v2: the adb-server transport falls back to ``shell:`` plus a marker
    (adb-shell always works that way, so every adb-shell test above covers its marker)."""
    transport = AdbServerTransport(serial=loopback.serial, server=adb_server.address)
    transport._features = transport.features() - {"shell_v2"}
    result = transport.shell("echo plain; exit 4")
    assert (result.exit_code, result.stdout) == (4, "plain\n")


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 5])
def test_push_pull_sizes_around_the_64k_chunk(transport, loopback, size, tmp_path):
    data = os.urandom(size)
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    remote = f"/data/local/tmp/sizes-{type(transport).__name__}-{size}.bin"
    transport.push(local, remote)
    assert (loopback.root / remote.lstrip("/")).read_bytes() == data
    transport.pull(remote, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert transport.stat(remote).size == size


def test_sync_file_without_sha256sum_on_the_device(transport, loopback, tmp_path):
    """Old toybox has no sha256sum (exit 127): sync_file pushes every time and checks the size."""
    shadow = loopback.root / "system/bin/sha256sum"
    shadow.write_text("#!/bin/sh\necho 'sha256sum: not found' >&2\nexit 127\n")
    shadow.chmod(0o755)
    try:
        device = Device(transport)
        local = tmp_path / "f.bin"
        local.write_bytes(os.urandom(1000))
        remote = f"/data/local/tmp/nohash-{type(transport).__name__}.bin"
        assert device.sync_file(local, remote).pushed
        assert device.sync_file(local, remote).pushed        # cannot tell it is unchanged
        assert (loopback.root / remote.lstrip("/")).read_bytes() == local.read_bytes()
    finally:
        shadow.unlink()


def test_devices_command_through_the_adb_server(loopback, adb_server, tmp_path, monkeypatch, capsys):
    """`wbmm-mobile devices --adb HOST:PORT`: the ready fixture phone with its facts, and a
    device whose key prompt went unanswered listed as unauthorized with the hint."""
    from wbmm_mobile.cli import main as cli_main
    monkeypatch.setenv("COLUMNS", "400")
    adb_server.adb("connect", loopback.serial)
    with LoopbackDevice(tmp_path / "locked", trust_user_keys=False) as locked:
        adb_server.adb("connect", locked.serial, check=False)
        code = cli_main(["devices", "--adb", adb_server.address])
        adb_server.adb("disconnect", locked.serial, check=False)
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert "Pixel 7" in rows[loopback.serial] and "Tensor G2" in rows[loopback.serial]
    assert "unauthorized" in rows[locked.serial] and "accept" in rows[locked.serial]
