"""The loopback ADB device against ADB clients written outside this project.

Debian's ``adb`` (29) and the adb that adbutils bundles (36) each run their own
server on a private port, ``adb connect`` to the loopback device, and then push,
pull, list and run shell commands through it: if the wire protocol were wrong, these
binaries would refuse. adb-shell, the third client, is driven in test_adb_transports.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import time

import pytest

from android_harness.loopback import LoopbackDevice
from tests._adb_helpers import adb_binaries, start_adb_server

pytestmark = pytest.mark.timeout(240)

BINARIES = adb_binaries()
if not BINARIES:
    pytest.skip("no adb binary installed (make system-deps installs Debian's adb)", allow_module_level=True)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    with LoopbackDevice(tmp_path_factory.mktemp("loopback-root"), fixture_phone=True) as loopback:
        yield loopback


@pytest.fixture(scope="module", params=BINARIES, ids=[name for name, _ in BINARIES])
def adb(request, device, tmp_path_factory):
    _, binary = request.param
    server = start_adb_server(binary, tmp_path_factory.mktemp("adb-home"))
    try:
        answer = server.adb("connect", device.serial, timeout=30).stdout.decode()
        assert f"connected to {device.serial}" in answer
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """20 MB of random bytes (random so a dropped or repeated chunk cannot go unnoticed)."""
    path = tmp_path_factory.mktemp("payload") / "payload.bin"
    path.write_bytes(os.urandom(20 * 1000 * 1000))
    return path


def test_devices_lists_the_loopback_banner(adb, device):
    """`adb devices -l` shows the model getprop answers (the fixture says it is a loopback one)."""
    listing = adb.adb("devices", "-l").stdout.decode()
    line = next(line for line in listing.splitlines() if line.startswith(device.serial))
    assert line.split()[1] == "device"
    model = adb.adb("-s", device.serial, "shell", "getprop ro.product.model").stdout.decode().strip()
    assert model == "Pixel 7 (wbmm loopback fixture)"
    # adb prints the banner's model with every character other than [A-Za-z0-9.-] as '_'.
    assert "model:Pixel_7__wbmm_loopback_fixture_" in line and "loopback" in line
    features = adb.adb("-s", device.serial, "features").stdout.decode().split()
    assert "shell_v2" in features


def test_shell_v2_exit_code_and_separate_stderr(adb, device):
    result = adb.adb("-s", device.serial, "shell", "echo to-out; echo to-err >&2; exit 42", check=False)
    assert result.returncode == 42
    assert result.stdout == b"to-out\n"
    assert result.stderr == b"to-err\n"
    ok = adb.adb("-s", device.serial, "shell", "true", check=False)
    assert ok.returncode == 0


def test_shell_reads_fixture_phone_files(adb, device):
    out = adb.adb("-s", device.serial, "shell", "getprop ro.soc.model; cat /sys/class/power_supply/battery/capacity")
    assert out.stdout.decode().splitlines() == ["Tensor G2", "78"]


def test_push_pull_20mb_byte_for_byte(adb, device, payload, tmp_path):
    remote = f"/data/local/tmp/{adb.port}/payload.bin"
    adb.adb("-s", device.serial, "push", str(payload), remote)
    on_device = device.root / remote.lstrip("/")
    assert on_device.read_bytes() == payload.read_bytes()
    back = tmp_path / "back.bin"
    adb.adb("-s", device.serial, "pull", remote, str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert back.stat().st_size == 20 * 1000 * 1000


def test_ls_shows_pushed_files(adb, device, tmp_path):
    folder = device.root / "data/local/tmp" / f"ls-{adb.port}"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"12345")
    (folder / "sub").mkdir()
    before = device.sync_requests.copy()
    lines = adb.adb("-s", device.serial, "ls", f"/data/local/tmp/ls-{adb.port}").stdout.decode().splitlines()
    assert (device.sync_requests - before)["LIS2"] == 1     # ls_v2 is offered, so adb lists with LIS2
    by_name = {line.split()[-1]: line.split() for line in lines}
    assert int(by_name["a.txt"][1], 16) == 5            # adb ls prints mode, size, mtime in hex
    assert int(by_name["sub"][0], 16) & 0o170000 == 0o040000


def test_concurrent_shell_streams(adb, device):
    """Four adb shells at once, each waiting until all four have started: if the device
    served one stream at a time, the first would wait in vain and exit 1."""
    tag = f"rendezvous-{adb.port}"
    script = (f"mkdir -p /data/local/tmp/{tag}; touch /data/local/tmp/{tag}/$0; i=0; "
              f"while [ $(ls /data/local/tmp/{tag} | wc -l) -lt 4 ]; do "
              f"i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.1; done; echo done-$0")

    def one(n: int) -> subprocess.CompletedProcess:
        return adb.adb("-s", device.serial, "shell", f"sh -c '{script}' s{n}", check=False, timeout=90)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert sorted(r.stdout.decode().strip() for r in results) == [f"done-s{n}" for n in range(4)]


def test_hostile_file_name_pushes_as_one_file_and_runs_nothing(adb, device, tmp_path):
    name = "a b'c\";touch PWNED;$(touch PWNED2)$HOME.txt"
    local = tmp_path / name
    local.write_bytes(b"hostile but harmless")
    remote = f"/data/local/tmp/hostile-{adb.port}/{name}"
    adb.adb("-s", device.serial, "push", str(local), remote)
    back = tmp_path / "back.txt"
    adb.adb("-s", device.serial, "pull", remote, str(back))
    assert back.read_bytes() == b"hostile but harmless"
    assert (device.root / remote.lstrip("/")).read_bytes() == b"hostile but harmless"
    assert not list(device.root.rglob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))


def test_clients_speak_stat_v2_because_the_banner_offers_it(adb, device, tmp_path):
    """The banner announces stat_v2/ls_v2, so adb must switch to STA2/LST2 records: proves those
    replies parse in a real client (a wrong layout makes push/pull fail)."""
    before = device.sync_requests.copy()
    local = tmp_path / "small.txt"
    local.write_bytes(b"v2")
    adb.adb("-s", device.serial, "push", str(local), f"/data/local/tmp/v2-{adb.port}.txt")
    adb.adb("-s", device.serial, "pull", f"/data/local/tmp/v2-{adb.port}.txt", str(tmp_path / "back.txt"))
    used = device.sync_requests - before
    assert used["STA2"] + used["LST2"] >= 1, used
    assert used["STAT"] == 0, used
    assert used["SEND"] == 1 and used["RECV"] == 1, used
    assert (tmp_path / "back.txt").read_bytes() == b"v2"


def test_pull_a_directory_tree(adb, device, tmp_path):
    tree = device.root / "data/local/tmp" / f"tree-{adb.port}"
    (tree / "inner").mkdir(parents=True)
    (tree / "top.bin").write_bytes(os.urandom(70_000))          # more than one 64 KiB chunk
    (tree / "inner" / "leaf.txt").write_bytes(b"leaf")
    adb.adb("-s", device.serial, "pull", f"/data/local/tmp/tree-{adb.port}", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "top.bin").read_bytes() == (tree / "top.bin").read_bytes()
    assert (tmp_path / "copy" / "inner" / "leaf.txt").read_bytes() == b"leaf"


def test_stdin_reaches_the_command_through_shell_v2(adb, device):
    result = subprocess.run([adb.binary, "-s", device.serial, "shell", "cat; echo end"], env=adb.env,
                            input=b"piped line\n", capture_output=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, b"piped line\nend\n")


def test_shell_v1_and_exec_out(adb, device):
    """`adb shell -x` turns the shell protocol off (plain ``shell:``: one mixed stream, no exit
    code); `adb exec-out` uses ``exec:`` (stdout only)."""
    v1 = adb.adb("-s", device.serial, "shell", "-x", "echo one; echo two >&2; exit 3", check=False)
    assert v1.stdout.splitlines() == [b"one", b"two"] and v1.stderr == b""
    out = adb.adb("-s", device.serial, "exec-out", "cat /sys/class/power_supply/battery/capacity; echo e >&2")
    assert out.stdout == b"78\n"


def test_fixture_taskset_checks_the_mask(adb, device):
    pinned = adb.adb("-s", device.serial, "shell", "taskset f0 echo pinned")
    assert pinned.stdout == b"pinned\n"
    too_wide = adb.adb("-s", device.serial, "shell", "taskset 100 echo never", check=False)
    assert too_wide.returncode == 1 and b"does not fit 8 cores" in too_wide.stderr


def test_adb_push_fails_cleanly_when_the_device_drops_then_reconnects(adb, device, payload):
    """Last in the file: it drops the device, then connects it again for whatever runs next."""
    device.faults.drop_push_after_bytes = 2_000_000
    failed = adb.adb("-s", device.serial, "push", str(payload), f"/data/local/tmp/drop-{adb.port}.bin",
                     check=False, timeout=60)
    assert failed.returncode != 0
    assert not (device.root / f"data/local/tmp/drop-{adb.port}.bin").exists()
    for _ in range(50):
        adb.adb("connect", device.serial, check=False)
        state = adb.adb("-s", device.serial, "get-state", check=False).stdout.decode().strip()
        if state == "device":
            break
        time.sleep(0.2)
    assert adb.adb("-s", device.serial, "shell", "echo reconnected").stdout == b"reconnected\n"
