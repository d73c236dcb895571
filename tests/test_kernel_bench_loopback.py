"""``wbmm-mobile kernel-bench`` over ADB on the loopback device: the C++ kernel benchmark is
pushed byte for byte, run (the loopback device runs it on this computer, so the host build
is used), and its JSON report comes back; wrong binaries and bad input get one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from android_harness.loopback.daemon import LoopbackDevice
from tests._adb_helpers import free_port
from wbmm_mobile.cli import main

pytestmark = pytest.mark.timeout(300)

BENCH = Path(__file__).resolve().parent.parent / "build" / "delegates" / "wbmm_kernel_bench"


@pytest.fixture()
def phone(tmp_path):
    if not BENCH.is_file():
        pytest.fail(f"{BENCH} is missing: `make delegate` builds it (make test does)")
    device = LoopbackDevice(tmp_path / "phone-root", fixture_phone=True).start()
    yield device
    device.stop()


def test_kernel_bench_runs_on_the_device_and_keeps_its_report(phone, tmp_path, capsys):
    out = tmp_path / "results" / "kernel_bench.json"
    code = main(["kernel-bench", "--window", "7", "--shape", "14x14x16", "--threads", "2", "--runs", "5",
                 "--direct", "--device", phone.serial, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["serial"] == phone.serial and report["abi"] == "x86_64"
    assert report["dtype"] == "float32" and report["isa"] != ""
    assert report["window"] == 7 and report["shape"] == [14, 14, 16] and report["threads"] == 2
    assert report["fmas"] == 14 * 14 * 16 * 49
    assert [v["name"] for v in report["variants"]] == ["1 thread", "2 threads", "2 x 1 thread, independent"]
    assert all(0 < v["best_ms"] <= v["median_ms"] for v in report["variants"])
    assert "2 threads vs 1:" in printed and f"wrote {out}" in printed
    pushed = phone.root / "data/local/tmp/wbmm/bin/wbmm_kernel_bench"
    assert pushed.read_bytes() == BENCH.read_bytes()


def test_int8_kernel_bench_runs_the_int8_kernel_on_the_device(phone, tmp_path, capsys):
    out = tmp_path / "results" / "kernel_bench_int8.json"
    code = main(["kernel-bench", "--kernel", "13", "--int8", "--shape", "20x18x24", "--threads", "3", "--runs", "4",
                 "--direct", "--device", phone.serial, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["dtype"] == "int8" and report["kernel"] == 13 and report["shape"] == [20, 18, 24]
    assert report["macs"] == 20 * 18 * 24 * 169 and "fmas" not in report
    assert [v["name"] for v in report["variants"]] == ["1 thread", "3 threads", "3 x 1 thread, independent"]
    assert all(0 < v["best_ms"] <= v["median_ms"] for v in report["variants"])
    assert "int8 depthwise kernel 13, 20x18x24" in printed and "GMAC/s" in printed and "GFMA/s" not in printed


def test_a_binary_for_another_abi_is_refused_before_it_is_pushed(phone, tmp_path, capsys):
    # An ELF header for aarch64 (e_machine 183): what `make delegate-arm64` builds for phones.
    arm64 = tmp_path / "wbmm_kernel_bench"
    arm64.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(44))
    code = main(["kernel-bench", "--window", "7", "--direct", "--device", phone.serial, "--binary", str(arm64),
                 "--out", str(tmp_path / "kb.json")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "is built for arm64-v8a, the device is x86_64" in err
    assert not (phone.root / "data/local/tmp/wbmm/bin/wbmm_kernel_bench").exists()
    assert not (tmp_path / "kb.json").exists()


def test_the_benchmark_s_own_refusal_comes_back_in_one_line(phone, tmp_path, capsys):
    code = main(["kernel-bench", "--window", "7", "--isa", "sparc", "--direct", "--device", phone.serial,
                 "--out", str(tmp_path / "kb.json")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "wbmm_kernel_bench exited with 2" in err and "kernel set 'sparc' is not usable here" in err
    assert not (tmp_path / "kb.json").exists()


def test_bad_arguments_and_a_missing_device(tmp_path, capsys):
    with pytest.raises(SystemExit) as even:
        main(["kernel-bench", "--kernel", "4"])
    assert even.value.code == 2 and "needs an odd kernel" in capsys.readouterr().err
    with pytest.raises(SystemExit) as shape:
        main(["kernel-bench", "--window", "7", "--shape", "56x56"])
    assert shape.value.code == 2 and "expected HxWxC" in capsys.readouterr().err
    code = main(["kernel-bench", "--window", "7", "--direct", "--device", f"127.0.0.1:{free_port()}",
                 "--out", str(tmp_path / "kb.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("wbmm-mobile: device error") and len(err.splitlines()) == 1
