"""The loopback device under attack and at its limits (issue 18), and what it reveals of itself.

Adversarial traffic (``android_harness.loopback.stress``, which benchmarks/loopback_stress.py
times): 2,000 connections at once, a burst of 200 adb-shell clients, pushes onto
directories, garbage and huge declared lengths; after the storm the device still serves and
this process has no more threads or file descriptors than before. Then what a user is
promised: only the starting user's keys get in (``--insecure`` warns), the shell's
environment is minimal and starts in --root, pushed files never keep setuid/setgid bits,
SIGTERM ends every command the device started, the harness kills an interrupted benchmark
and leaves no temporary files, and the device describes this computer truthfully.
Everything is on 127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from android_harness.adbshell_transport import AdbShellTransport
from android_harness.loopback import LoopbackDevice
from android_harness.loopback.identity import LOOPBACK_MODEL, android_abi
from android_harness.loopback.stress import (
    open_connections, push_onto_directory, raise_fd_limit, resource_counts, shell_burst, sigterm_leaves_no_children,
    wait_until)
from android_harness.loopback.wire import A_CNXN, HEADER
from tests._adb_helpers import free_port
from wbmm_mobile.errors import DeviceError, DeviceUnauthorizedError

# Whole-device runs (tuning, storms, interrupts) of 5-15 s each: in `make test`, not `make test-fast`.
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def device(tmp_path):
    with LoopbackDevice(tmp_path / "root") as loopback:
        yield loopback


def _settled(device: LoopbackDevice, baseline: tuple[int, int], slack: int = 2) -> tuple[int, int]:
    """Wait (bounded) for the device's connections and threads to wind down; the counts then."""
    wait_until(lambda: device.connection_count == 0, 30)
    wait_until(lambda: resource_counts()[0] <= baseline[0] + slack and resource_counts()[1] <= baseline[1] + slack,
               15)
    return resource_counts()


@pytest.mark.slow
def test_storm_of_connections_clients_and_bad_packets_then_still_serving(device, key_path):
    if raise_fd_limit(8192) < 4000:   # 2,000 client ends + up to 1,024 served ends + slack
        pytest.skip("this process may not open 4,000 files (ulimit -Hn): no room for 2,000 connections")
    warm = AdbShellTransport("127.0.0.1", device.port, key_path=key_path)
    assert warm.shell("echo warm").stdout == "warm\n"
    warm.close()
    wait_until(lambda: device.connection_count == 0, 10)
    baseline = resource_counts()

    # 2,000 connections at once: each served (AUTH back) or refused cleanly past the cap.
    storm = open_connections(device.port, 2000)
    assert storm.clean, storm
    assert storm.served == min(2000, device.max_connections) and storm.refused == 2000 - storm.served, storm
    assert storm.reset == 0 and storm.unanswered == 0
    assert device.refused_connections == storm.refused

    # Garbage and huge declared lengths: each dropped, the device keeps serving.
    for opening in (os.urandom(4096), HEADER.pack(A_CNXN, 0x01000000, 4096, 0x7FFFFFFF, 0, A_CNXN ^ 0xFFFFFFFF)):
        with socket.create_connection(("127.0.0.1", device.port), timeout=10) as sock:
            sock.sendall(opening)
            sock.settimeout(15)
            try:
                answer = sock.recv(64)
            except ConnectionResetError:   # dropped with our garbage unread: a reset is fine here
                answer = b""
            assert answer == b""
    # A burst of 200 adb-shell clients released at once: all connect, authenticate and run.
    burst = shell_burst(device.port, 200, key_path)
    assert (burst.ok, burst.failed) == (200, 0), burst.errors

    threads, fds = _settled(device, baseline)
    assert threads <= baseline[0] + 2 and fds <= baseline[1] + 2, (baseline, (threads, fds))
    after = AdbShellTransport("127.0.0.1", device.port, key_path=key_path)
    assert after.shell("echo still-serving").stdout == "still-serving\n"
    after.close()


def test_connection_cap_refuses_cleanly_and_frees_slots(tmp_path, key_path):
    with LoopbackDevice(tmp_path / "root", max_connections=5) as capped:
        storm = open_connections(capped.port, 12)
        assert (storm.served, storm.refused, storm.reset) == (5, 7, 0), storm
        wait_until(lambda: capped.connection_count == 0, 15)
        transport = AdbShellTransport("127.0.0.1", capped.port, key_path=key_path)
        assert transport.shell("echo slot-free").stdout == "slot-free\n"
        transport.close()


def test_push_onto_a_directory_is_answered_fail_within_a_second(device, key_path):
    answers = push_onto_directory(device.port, key_path)
    for answer in answers:
        assert answer.failed and answer.seconds < 1.0, answer
        assert "Is a directory" in answer.message, answer
    # Other push failures are answered the same way, with their reason.
    long_name, = push_onto_directory(device.port, key_path, targets=("/data/local/tmp/" + "n" * 300,))
    assert long_name.failed and long_name.seconds < 1.0 and "File name too long" in long_name.message, long_name
    # Nothing written outside --root, no temporary file left inside it.
    assert not list(device.root.parent.glob(".*partial")) and not list(device.root.rglob("*.partial"))
    transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path)
    assert transport.shell("echo after-fail").stdout == "after-fail\n"      # the connection still works
    transport.close()


def test_pushed_files_never_keep_setuid_or_setgid(device, key_path, tmp_path):
    local = tmp_path / "tool"
    local.write_bytes(b"#!/bin/sh\necho hi\n")
    transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path)
    transport.push(local, "/data/local/tmp/tool", mode=0o6755)
    transport.close()
    mode = (device.root / "data/local/tmp/tool").stat().st_mode
    assert stat.S_IMODE(mode) == 0o755 and not mode & (stat.S_ISUID | stat.S_ISGID)


def test_shell_environment_is_minimal_and_starts_in_root(device, key_path, monkeypatch):
    monkeypatch.setenv("WBMM_TEST_SECRET_TOKEN", "do-not-leak")
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path)
    result = transport.shell("pwd; env")
    transport.close()
    lines = result.stdout.splitlines()
    assert lines[0] == str(device.rootfs.shell_root)
    names = {line.split("=", 1)[0] for line in lines[1:] if "=" in line}
    assert names <= {"PATH", "HOME", "SHELL", "LANG", "TMPDIR", "ANDROID_DATA", "ANDROID_ROOT", "EXTERNAL_STORAGE",
                     "WBMM_LOOPBACK_ROOT", "PWD", "SHLVL", "_", "OLDPWD"}, names
    assert "do-not-leak" not in result.stdout and "proxy.invalid" not in result.stdout


def test_only_the_starting_user_s_keys_get_in(tmp_path, stranger_key, monkeypatch):
    """Default: trusted are ~/.android/adbkey and $ADB_VENDOR_KEYS, read when a client signs in,
    so a key created after the device started counts too; any other key is unauthorized."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ADB_VENDOR_KEYS", raising=False)
    with LoopbackDevice(tmp_path / "root") as device:
        with pytest.raises(DeviceUnauthorizedError):
            AdbShellTransport("127.0.0.1", device.port, key_path=stranger_key, auth_timeout=2.0)
        # The user's key does not exist yet: the transport creates it (0600), as adb does.
        transport = AdbShellTransport("127.0.0.1", device.port)
        assert transport.key_path == home / ".android" / "adbkey"
        assert stat.S_IMODE(transport.key_path.stat().st_mode) == 0o600
        assert transport.shell("echo mine").stdout == "mine\n"
        transport.close()


def test_insecure_command_warns_and_lets_any_key_in(tmp_path, stranger_key):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "wbmm_mobile.cli", "loopback-device", "--root",
                                str(tmp_path / "root"), "--port", str(port), "--insecure"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert "no authentication (--insecure)" in process.stdout.readline()
        transport = AdbShellTransport("127.0.0.1", port, key_path=stranger_key)
        assert transport.shell("echo open").stdout == "open\n"
        transport.close()
    finally:
        process.terminate()
        process.wait(20)
    assert process.returncode == 0
    assert "WARNING: --insecure" in process.stderr.read()


def test_sigterm_leaves_no_command_alive_2s_later(key_path):
    figures = sigterm_leaves_no_children(key_path, commands=3, grace_s=2.0)
    assert figures["commands"] == 3 and figures["processes_before"] >= 6, figures
    assert figures["alive"] == 0 and figures["daemon_exit_code"] == 0, figures


def test_commands_end_with_their_stream(device, key_path):
    """A command cut off by its client (timeout) is killed with its background children, and
    the stderr file the transport used is removed once it connects again."""
    transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path, io_timeout=10)
    with pytest.raises(DeviceError):
        transport.shell("echo $$ > /data/local/tmp/cut.pid; sleep 200 & sleep 201", timeout=1.5)
    session = int((device.root / "data/local/tmp/cut.pid").read_text())
    assert wait_until(lambda: not device.processes.pids(), 5)
    from android_harness.loopback.stress import _session_members
    assert wait_until(lambda: not _session_members(session), 5)
    assert transport.shell("echo again").stdout == "again\n"
    assert not list((device.root / "data/local/tmp").glob(".wbmm-stderr-*"))
    transport.close()


def test_truthful_identity_by_default_in_getprop_and_adb_devices(device, key_path, adb_server):
    from android_harness.device import Device
    transport = AdbShellTransport("127.0.0.1", device.port, key_path=key_path)
    info = Device(transport).info()
    transport.close()
    assert info.is_loopback and info.model == LOOPBACK_MODEL and "loopback" in info.model
    assert info.abi == android_abi() and info.abi != "arm64-v8a" or os.uname().machine == "aarch64"
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), None)
    if cpu_model:
        assert info.soc_model == cpu_model
    assert "Pixel" not in info.model and info.sdk_level == 0
    adb_server.adb("connect", device.serial)
    listing = adb_server.adb("devices", "-l").stdout.decode()
    line = next(line for line in listing.splitlines() if line.startswith(device.serial))
    assert "model:wbmm_loopback__this_computer_" in line and line.split()[1] == "device"
    adb_server.adb("disconnect", device.serial, check=False)


def test_interrupted_profile_kills_its_benchmark_and_leaves_no_files(tmp_path, key_path):
    """Ctrl-C during a run: profile() raises KeyboardInterrupt within seconds, the benchmark it
    started (recorded pid) is dead, and no pid or stderr file is left on the device; a stale
    benchmark from a lost earlier profile is killed when the next one starts."""
    import signal as signal_module

    from android_harness.profile import REMOTE_DIR, ProfilePlan, profile

    model = tmp_path / "m.tflite"
    model.write_bytes(_tiny_model())
    binary = tmp_path / "benchmark_model"
    binary.write_text("#!/bin/sh\necho $$ > \"$WBMM_LOOPBACK_ROOT/data/local/tmp/bench.pid\"\nsleep 120\n")
    binary.chmod(0o755)
    with LoopbackDevice(tmp_path / "root", fixture_phone=True) as device:
        remote = device.root / REMOTE_DIR.lstrip("/")
        remote.mkdir(parents=True, exist_ok=True)
        stale = subprocess.Popen(["benchmark_model_stale", "60"], executable="/bin/sleep")
        (remote / "run-stale.pid").write_text(f"{stale.pid}\n")
        plan = ProfilePlan(models=(str(model),), out=str(tmp_path / "out"), devices=(device.serial,), direct=True,
                           configs=("xnnpack",), runs=2, warmup=0, benchmark_binary=str(binary))
        bench_pid = device.root / "data/local/tmp/bench.pid"

        def interrupt_when_running(signum, frame):
            raise KeyboardInterrupt

        previous = signal_module.signal(signal_module.SIGALRM, interrupt_when_running)
        watcher = threading.Thread(target=lambda: wait_until(bench_pid.exists, 60) and
                                   signal_module.pthread_kill(threading.main_thread().ident, signal_module.SIGALRM))
        watcher.start()
        started = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                profile(plan, progress=False)
        finally:
            signal_module.signal(signal_module.SIGALRM, previous)
            watcher.join(5)
        assert time.monotonic() - started < 60
        assert stale.wait(10) is not None                      # the lost profile's benchmark was ended
        pid = int(bench_pid.read_text())
        assert wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                          Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z", 3)
        assert wait_until(lambda: not list(remote.glob("run-*.pid")), 5), list(remote.glob("*"))
        assert not list((device.root / "data/local/tmp").glob(".wbmm-stderr-*"))


def _tiny_model() -> bytes:
    """A one-op .tflite built by the real TFLite converter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from converters.keras_convert import to_tflite
    inp = keras.Input((4, 4, 2), batch_size=1)
    return to_tflite(keras.Model(inp, keras.layers.DepthwiseConv2D(3, padding="same")(inp)))
