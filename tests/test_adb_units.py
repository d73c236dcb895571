"""Small pieces of the ADB layer on their own: output parsers, path mapping, keys, framing, CLI.

The parsers get text in the shape real phones print (several blocks, missing
fields, NaN sensors); the loopback root's path mapping gets escapes; the CLI runs
through ``wbmm_mobile.cli.main`` against a loopback device.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from android_harness.adbshell_transport import AdbShellTransport, load_or_create_adb_key
from android_harness.device_facts import (
    CpuCore, cpu_topology, device_info_from_props, parse_cpu_max_freqs, parse_dumpsys_battery,
    parse_dumpsys_thermalservice, parse_getprop)
from android_harness.loopback import LoopbackDevice
from android_harness.loopback.auth import parse_android_public_key, verify_token_signature
from android_harness.loopback.rootfs import PathEscapeError, RootFolder
from android_harness.transport import command_line, parse_host_port
from tests._adb_helpers import free_port
from wbmm_mobile.cli import main as cli_main
from wbmm_mobile.errors import DeviceNotFoundError

pytestmark = pytest.mark.timeout(120)

GETPROP = """[dalvik.vm.heapsize]: [512m]
[ro.board.platform]: [kalama]
[ro.build.version.release]: [13]
[ro.build.version.sdk]: [33]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.manufacturer]: [samsung]
[ro.product.model]: [SM-S911B]
[ro.soc.model]: [SM8550]
[persist.sys.locale]: [en-GB]
"""

DUMPSYS_BATTERY_USB = """Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3061000
  status: 2
  health: 2
  present: true
  level: 87
  scale: 100
  voltage: 4224
  temperature: 301
  technology: Li-ion
"""

THERMAL = """IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
Thermal Status: 3
Cached temperatures:
\tTemperature{mValue=99.0, mType=0, mName=cached-cpu, mStatus=6}
HAL Ready: true
HAL connection:
\tThermalHAL 2.0 connected: yes
Current temperatures from HAL:
\tTemperature{mValue=44.5, mType=0, mName=cpu-1-0, mStatus=2}
\tTemperature{mValue=47.25, mType=0, mName=cpu-1-1, mStatus=3}
\tTemperature{mValue=33.0, mType=3, mName=skin, mStatus=0}
\tTemperature{mValue=NaN, mType=9, mName=npu, mStatus=0}
Current cooling devices from HAL:
\tCoolingDevice{mValue=2, mType=2, mName=cpufreq-cpu4}
"""


def test_getprop_and_device_info():
    props = parse_getprop(GETPROP)
    assert props["persist.sys.locale"] == "en-GB"
    info = device_info_from_props("R5CW", props)
    assert (info.model, info.manufacturer, info.abi, info.sdk_level, info.android_version) == \
        ("SM-S911B", "samsung", "arm64-v8a", 33, "13")
    assert info.soc == "SM8550 (kalama)" and not info.is_loopback
    bare = device_info_from_props("x", {"ro.board.platform": "mt6789"})
    assert (bare.soc, bare.sdk_level) == ("mt6789", 0)


def test_battery_parser_reads_plug_level_and_tenths_of_degrees():
    battery = parse_dumpsys_battery(DUMPSYS_BATTERY_USB)
    assert (battery.level_percent, battery.plugged, battery.plugged_sources) == (87, True, ("usb",))
    assert (battery.temperature_c, battery.voltage_mv, battery.status) == (30.1, 4224, "charging")
    with pytest.raises(ValueError):
        parse_dumpsys_battery("Can't find service: battery")


def test_thermal_parser_reads_only_the_hal_block():
    thermal = parse_dumpsys_thermalservice(THERMAL)
    assert thermal.status == 3 and thermal.status_name == "severe"
    names = [t.name for t in thermal.temperatures]
    assert names == ["cpu-1-0", "cpu-1-1", "skin"]          # not the cached block, not the NaN
    assert thermal.hottest("cpu").value_c == 47.25
    assert thermal.hottest("skin").type_name == "skin"
    assert parse_dumpsys_thermalservice("Can't find service: thermalservice").status_name == "unavailable"


def test_cpu_clusters_and_masks():
    text = "\n".join(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq {f}"
                     for i, f in enumerate([2016000] * 4 + [2803200] * 3 + [3187200]))
    topology = cpu_topology(parse_cpu_max_freqs(text))
    assert topology.clusters == ((0, 1, 2, 3), (4, 5, 6), (7,))
    assert topology.big_core_mask == "f0" and topology.prime_core_mask == "80"
    single = cpu_topology([CpuCore(i, 1800000) for i in range(4)])
    assert single.big_cores == (0, 1, 2, 3) and single.big_core_mask == "f"


def test_rootfs_maps_device_paths_and_refuses_escapes(tmp_path):
    root = RootFolder(tmp_path / "root with space")
    assert root.host_path("/data/local/tmp/x") == root.root / "data/local/tmp/x"
    assert root.host_path("/../../etc/passwd") == root.root / "etc/passwd"   # clamped at the root
    (root.root / "data/out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(PathEscapeError):
        root.host_path("/data/out/anything")
    rewritten = root.rewrite_command("cat /sys/class/x 'y=/data/a b' >/dev/null; ls /sdcard; echo a/sys /system")
    shell_root = root.shell_root
    assert " " not in shell_root                             # root has a space: a plain-named alias is used
    assert rewritten == (f"cat {shell_root}/sys/class/x 'y={shell_root}/data/a b' >/dev/null; "
                         f"ls {shell_root}/sdcard; echo a/sys {shell_root}/system")
    root.close()


def test_generated_key_is_private_and_loads(tmp_path):
    key = load_or_create_adb_key(tmp_path / "dot-android" / "adbkey")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_or_create_adb_key(key) == key                 # reused, not regenerated
    public = parse_android_public_key(open(str(key) + ".pub").read())
    assert public.exponent == 65537 and public.modulus.bit_length() == 2048
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner
    token = os.urandom(20)
    signature = PythonRSASigner.FromRSAKeyPath(str(key)).Sign(token)
    assert verify_token_signature(public, token, signature)
    assert not verify_token_signature(public, os.urandom(20), signature)


def test_command_quoting_and_addresses():
    assert command_line(["ls", "a b", "x;rm -rf /", "$HOME"]) == "ls 'a b' 'x;rm -rf /' '$HOME'"
    assert command_line("echo $HOME") == "echo $HOME"
    assert parse_host_port("10.0.0.2:5037", 1) == ("10.0.0.2", 5037)
    assert parse_host_port("phone.lan", 5555) == ("phone.lan", 5555)
    with pytest.raises(DeviceNotFoundError):
        parse_host_port("host:notaport", 1)


def test_loopback_refuses_ports_the_adb_server_scans(tmp_path):
    with pytest.raises(ValueError, match="5555-5585"):
        LoopbackDevice(tmp_path, port=5565)


def test_devices_command_shows_the_fixture_phone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "220")
    with LoopbackDevice(tmp_path / "root", fixture_phone=True) as device:
        code = cli_main(["devices", "--no-server", "--direct", device.serial])
    out = capsys.readouterr().out
    assert code == 0
    for expected in ("Pixel 7", "Tensor G2 (gs201)", "arm64-v8a", "14 (SDK 34)", "78% unplugged", "light",
                     "BIG 41.2 C", "f0 (4/8)", "loopback test device"):
        assert expected in out, (expected, out)


def test_devices_command_reports_an_unauthorized_device(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    # A device that trusts none of this user's keys: the CLI signs with its own, unknown key.
    with LoopbackDevice(tmp_path / "root", trust_user_keys=False) as device:
        code = cli_main(["devices", "--no-server", "--direct", device.serial, "--timeout", "2"])
    out = capsys.readouterr().out
    assert code == 2
    assert "prompt on the phone" in out


def test_loopback_device_command_serves_until_interrupted(tmp_path, key_path):
    port = free_port()
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    help_text = subprocess.run([sys.executable, "-m", "wbmm_mobile.cli", "loopback-device", "--help"],
                               capture_output=True, text=True, timeout=60, env=env).stdout
    help_text = " ".join(help_text.split())
    assert "tests and dry runs" in help_text and "not a phone" in help_text and "(default: 17555)" in help_text
    process = subprocess.Popen([sys.executable, "-m", "wbmm_mobile.cli", "loopback-device", "--root",
                                str(tmp_path / "root"), "--port", str(port), "--fixture-phone"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = process.stdout.readline()
        assert f"127.0.0.1:{port}" in banner and "not a phone" in banner
        transport = AdbShellTransport("127.0.0.1", port, key_path=key_path)   # in $ADB_VENDOR_KEYS: trusted
        assert transport.shell(["getprop", "ro.product.model"]).stdout == "Pixel 7 (wbmm loopback fixture)\n"
        transport.close()
    finally:
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, process.stderr.read()


def test_usb_without_device_or_extra_is_a_clear_not_found(tmp_path):
    """No USB phone on CI (and maybe no libusb extra): either way a DeviceNotFoundError that says
    what is missing, not an ImportError or a libusb traceback."""
    with pytest.raises(DeviceNotFoundError, match="usb|USB"):
        AdbShellTransport.usb(key_path=tmp_path / "adbkey")


def test_open_transport_picks_the_client(tmp_path, key_path):
    from android_harness.connect import open_transport
    with LoopbackDevice(tmp_path / "root") as device:
        with open_transport(direct=device.serial, key_path=key_path) as transport:
            assert isinstance(transport, AdbShellTransport) and transport.serial == device.serial
            assert transport.shell("echo via-direct").stdout == "via-direct\n"
    with pytest.raises(DeviceNotFoundError, match="no ADB server answers at 127.0.0.1:1"):
        open_transport(adb_server="127.0.0.1:1")           # never starts a server on the wrong port
    with pytest.raises(DeviceNotFoundError, match="not both"):
        open_transport(direct="127.0.0.1:17555", adb_server="127.0.0.1:5037")


def test_silent_peer_is_gone_not_unauthorized(tmp_path):
    """A TCP port that accepts but never speaks ADB: DeviceGoneError within the timeout, not the
    'accept the prompt' message (no key was ever offered)."""
    import socket as socket_module
    from wbmm_mobile.errors import DeviceGoneError
    listener = socket_module.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        with pytest.raises(DeviceGoneError, match="no ADB answer"):
            AdbShellTransport("127.0.0.1", listener.getsockname()[1], key_path=tmp_path / "adbkey",
                              io_timeout=1.0, auth_timeout=1.0)
    finally:
        listener.close()


def test_adb_shell_socket_has_tcp_nodelay(tmp_path, key_path):
    import socket as socket_module
    with LoopbackDevice(tmp_path / "root") as device:
        for wanted in (True, False):
            transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path,
                                          tcp_nodelay=wanted)
            sock = transport._device._io_manager._transport._connection   # adb-shell keeps it private
            assert bool(sock.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY)) is wanted
            transport.close()
