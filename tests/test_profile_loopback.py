"""End to end on the loopback ADB device: convert -> profile -> compare, energy, and the faults.

The loopback device (issue 5) speaks the real ADB protocol and runs commands on this
machine in a fixture-phone root; its benchmark binary is a small script that execs
``wbmm-mobile-benchmark`` from this venv. Models come from the real TFLite converter.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from android_harness.loopback.daemon import LoopbackDevice
from android_harness.profile import ProfilePlan, profile
from android_harness.results import load_records
from wbmm_mobile.cli import main as cli_main
from wbmm_mobile.compare import compare

pytestmark = pytest.mark.timeout(300)

DELEGATE = Path(__file__).resolve().parent.parent / "build" / "delegates" / "libwbmm_delegate.so"
# xnnpack and wbmm when the delegate is built (make test builds it), else xnnpack and cpu.
CONFIGS = ("xnnpack", "wbmm") if DELEGATE.is_file() else ("xnnpack", "cpu")
RUNNER = f'exec "{sys.executable}" -m android_harness.linux_benchmark "$@"'


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A kernel-size sweep of tiny depthwise models, converted by the real TFLite converter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from converters.keras_convert import to_tflite

    folder = tmp_path_factory.mktemp("models")
    paths = []
    for k in (3, 7):
        inp = keras.Input((12, 12, 8), batch_size=1)
        out = keras.layers.Conv2D(8, 1)(keras.layers.DepthwiseConv2D(k, padding="same")(inp))
        path = folder / f"dw_k{k}.tflite"
        path.write_bytes(to_tflite(keras.Model(inp, out)))
        paths.append(str(path))
    return paths


@pytest.fixture
def phone(tmp_path):
    device = LoopbackDevice(tmp_path / "phone-root", fixture_phone=True).start()
    yield device
    device.stop()


def test_convert_profile_compare_end_to_end(models, phone, tmp_path, capsys):
    binary = write_script(tmp_path / "benchmark_model", RUNNER)
    out = tmp_path / "results"
    code = cli_main(["profile", "--models", *models, "--device", phone.serial, "--direct",
                     "--configs", ",".join(CONFIGS), "--threads", "1", "--runs", "20", "--warmup", "2", "--run-timeout", "120",
                     "--benchmark-binary", str(binary), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    records = load_records(out)
    assert len(records) == 2 * len(CONFIGS)
    assert all(r.status == "ok" for r in records), [r.error for r in records]
    first = records[0]
    assert first.device["loopback"] is True and first.device["abi"] == "arm64-v8a"
    assert first.device["soc"].startswith("Tensor G2")
    assert first.pinning == "taskset f0 (big cores)"   # cores 4-7 of the fixture Pixel 7
    assert first.latency["count"] >= 20   # benchmark_model also runs for at least min_secs (1 s)
    assert first.thermal["before"]["status"] == 1 and first.thermal["throttled"] is False
    assert first.plugged is False
    # The pushed model is byte-identical (content-addressed on the device).
    remote = phone.root / "data/local/tmp/wbmm/models" / f"{first.model['sha256'][:16]}.tflite"
    assert remote.read_bytes() == Path(first.model["path"]).read_bytes()

    code = cli_main(["compare", str(out)])
    table = capsys.readouterr().out
    assert code == 0
    comparison = compare(out, plots=False, report=False)
    # The table's numbers are the runner's: the median each record parsed from its output.
    by_key = {(r.model["name"], r.config): r for r in records}
    for row in comparison.rows:
        record = by_key[(row.model, row.config)]
        assert row.median_ms == record.latency["median_ms"]
        assert f"{row.median_ms:.3f}" in table
        reference = by_key[(row.model, "xnnpack")].latency["median_ms"]
        assert row.speedup == pytest.approx(reference / row.median_ms, rel=1e-12)
    assert "loopback device: this computer's numbers" in table
    assert (out / f"latency_{phone.serial.replace(':', '_')}.png").stat().st_size > 1000
    sweep = list(out.glob("sweep_kernel_*.png"))
    assert len(sweep) == 1 and sweep[0].read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| dw_k7 |" in report and "latency_127.0.0.1_" in report


def test_energy_from_the_fixture_power_supply(models, phone, tmp_path):
    """The binary raises the fixture battery current while it runs: idle 412 mA, running 900 mA,
    at 4.012 V, reported negative (discharge) in uA/uV as some vendors do. A thread plays a
    Pixel ODPM rail meter (energy_value counters in uWs): 100 mW idle, 700 mW while the
    benchmark's flag file exists."""
    supply = "$WBMM_LOOPBACK_ROOT/sys/class/power_supply/battery/current_now"
    flag = "$WBMM_LOOPBACK_ROOT/benchmark_running"
    binary = write_script(tmp_path / "benchmark_model", "\n".join([
        f"echo -900000 > {supply}; touch {flag}",
        f'"{sys.executable}" -m android_harness.linux_benchmark "$@"; rc=$?',
        f"rm -f {flag}; echo -412000 > {supply}",
        "exit $rc"]))
    meter_dir = phone.root / "sys/bus/iio/devices/iio:device0"
    meter_dir.mkdir(parents=True)
    stop = threading.Event()

    def rail_meter() -> None:
        energy_uws, last, began = 0.0, time.monotonic(), time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            power_mw = 700.0 if (phone.root / "benchmark_running").exists() else 100.0
            energy_uws += power_mw * (now - last) * 1e3     # mW x ms = uWs
            last = now
            t_ms = int((now - began) * 1e3)
            staged = meter_dir / "energy_value.tmp"
            staged.write_text(f"t={t_ms}\nCH0(T={t_ms})[S4M_VDD_CPUCL2], {int(energy_uws)}\n")
            os.replace(staged, meter_dir / "energy_value")
            time.sleep(0.01)

    meter = threading.Thread(target=rail_meter, daemon=True)
    meter.start()
    try:
        plan = ProfilePlan(models=(models[0],), out=str(tmp_path / "results"), devices=(phone.serial,),
                           direct=True, configs=("xnnpack",), runs=300, warmup=2, power=True,
                           benchmark_binary=str(binary), idle_seconds=1.0)
        report = profile(plan, progress=False)
    finally:
        stop.set()
        meter.join()
    assert report.complete and not report.by_status("failed"), report
    record = load_records(tmp_path / "results")[0]
    energy = record.energy
    assert energy["calibration"]["current_unit"] == "uA" and energy["calibration"]["voltage_unit"] == "uV"
    assert energy["calibration"]["sign"] == -1
    assert energy["idle_power_mw"] == pytest.approx(412 * 4.012, abs=1e-6)
    # Most running samples see 900 mA; the first and last may still read idle.
    assert 0.8 * 900 * 4.012 < energy["run_power_mw"] <= 900 * 4.012 + 1e-6
    assert energy["idle_samples"] >= 5 and energy["run_samples"] >= 2
    assert energy["sample_rate_hz"] >= 10            # the floor; ~19 Hz with a 50 ms period
    assert energy["energy_per_inference_mj"] == pytest.approx(
        (energy["run_power_mw"] - energy["idle_power_mw"]) * record.latency["avg_ms"] / 1e3, rel=1e-9)
    assert energy["refused"] is None and energy["charging"] is False
    assert record.extra["session"]["energy"]["rails_readable"] is True
    (rail,) = energy["rails"]
    assert rail["rail"] == "S4M_VDD_CPUCL2"
    assert rail["idle_power_mw"] == pytest.approx(100.0, rel=0.05)
    assert 500.0 < rail["run_power_mw"] <= 700.0 * 1.05
    assert rail["energy_per_inference_mj"] == pytest.approx(
        (rail["run_power_mw"] - rail["idle_power_mw"]) * record.latency["avg_ms"] / 1e3, rel=1e-9)


def test_charging_readings_are_refused(models, phone, tmp_path):
    battery = phone.root / "sys/class/power_supply/battery"
    (battery / "status").write_text("Charging\n")
    (phone.root / "sys/class/power_supply/usb/online").write_text("1\n")
    binary = write_script(tmp_path / "benchmark_model", RUNNER)
    plan = ProfilePlan(models=(models[0],), out=str(tmp_path / "results"), devices=(phone.serial,), direct=True,
                       configs=("xnnpack",), runs=5, warmup=1, power=True, benchmark_binary=str(binary),
                       idle_seconds=0.5)
    profile(plan, progress=False)
    record = load_records(tmp_path / "results")[0]
    assert record.status == "ok" and record.plugged is True
    assert record.energy["energy_per_inference_mj"] is None
    assert "charging" in record.energy["refused"]
    # The fixture's dumpsys has no suspend_input: recorded as unavailable, not applied.
    assert record.extra["session"]["energy"]["suspend_input"].startswith("unavailable")


def test_crash_garbage_and_throttling_are_recorded_and_the_rest_goes_on(models, phone, tmp_path, capsys):
    """cpu config: the binary prints garbage and dies (SIGSEGV exit code); xnnpack: the thermal status
    rises from light to severe during the run."""
    thermal = "$WBMM_LOOPBACK_ROOT/system/etc/wbmm_fixture/dumpsys_thermalservice.txt"
    binary = write_script(tmp_path / "benchmark_model", "\n".join([
        'case "$*" in *--use_xnnpack=false*) echo "xK garbage from a broken build"; exit 139;; esac',
        f"sed -i 's/^Thermal Status: 1/Thermal Status: 3/' {thermal}",
        RUNNER]))
    out = tmp_path / "results"
    plan = ProfilePlan(models=tuple(models), out=str(out), devices=(phone.serial,), direct=True,
                       configs=("cpu", "xnnpack"), runs=5, warmup=1, benchmark_binary=str(binary))
    report = profile(plan, progress=False)
    assert len(report.by_status("failed")) == 2 and len(report.by_status("ok")) == 2
    records = load_records(out)
    failed = [r for r in records if r.status == "failed"]
    assert {r.config for r in failed} == {"cpu"}
    assert all("garbage from a broken build" in r.output for r in failed)
    assert all("no timing summary" in r.error for r in failed)
    ok = [r for r in records if r.status == "ok"]
    assert ok[0].thermal["before"]["status"] == 1 and ok[0].thermal["after"]["status"] == 3
    assert ok[0].thermal["status_rose"] and ok[0].thermal["throttled"]
    comparison = compare(out, plots=False, report=False)
    assert all(row.throttled for row in comparison.rows)
    assert {(f.model, f.config) for f in comparison.failed} == {("dw_k3", "cpu"), ("dw_k7", "cpu")}
    assert cli_main(["compare", str(out), "--no-plots"]) == 0
    table = capsys.readouterr().out
    assert "THROTTLED (thermal status light -> severe)" in table
    assert "FAILED" in table and "no timing summary" in table


def test_device_disappears_mid_run_then_resume_completes(models, tmp_path):
    root = tmp_path / "phone-root"
    phone = LoopbackDevice(root, fixture_phone=True).start()
    port, serial = phone.port, phone.serial
    binary = write_script(tmp_path / "benchmark_model", RUNNER)
    out = tmp_path / "results"
    plan = ProfilePlan(models=tuple(models), out=str(out), devices=(serial,), direct=True,
                       configs=("xnnpack", "cpu"), runs=5, warmup=1, benchmark_binary=str(binary))
    seen = []

    def pull_the_cable(label: str) -> None:
        seen.append(label)
        if label.startswith("ok") and len(seen) == 1:
            phone.stop()   # the device vanishes after its first finished run

    report = profile(plan, progress=pull_the_cable)
    assert len(report.by_status("ok")) == 1
    missing = report.by_status("missing")
    assert len(missing) == 3 and serial in report.device_errors
    assert {m.label for m in missing} == {f"{serial} dw_k3 cpu 1t", f"{serial} dw_k7 xnnpack 1t", f"{serial} dw_k7 cpu 1t"}
    assert len(load_records(out)) == 1          # the finished run is on disk

    back = LoopbackDevice(root, port=port, fixture_phone=True).start()   # back on the same address
    try:
        report = profile(replace_resume(plan), progress=False)
    finally:
        back.stop()
    assert len(report.by_status("skipped")) == 1 and len(report.by_status("ok")) == 3
    records = load_records(out)
    assert len(records) == 4 and all(r.status == "ok" for r in records)
    assert len({(r.model["name"], r.config) for r in records}) == 4
    assert all(json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines())


def replace_resume(plan: ProfilePlan) -> ProfilePlan:
    from dataclasses import replace
    return replace(plan, resume=True)


def test_all_devices_through_a_real_adb_server_run_in_parallel(models, tmp_path):
    """Two loopback phones behind a private adb server (Debian's adb); --all finds both and one
    worker per device writes to the same results file without tearing a line."""
    from tests._adb_helpers import adb_binaries, start_adb_server

    binaries = adb_binaries()
    if not binaries:
        pytest.skip("no adb binary on this machine (make test installs Debian's adb)")
    server = start_adb_server(binaries[0][1], tmp_path / "adb-home")
    phones = [LoopbackDevice(tmp_path / f"root{i}", fixture_phone=True).start() for i in range(2)]
    serials = sorted(p.serial for p in phones)
    try:
        for phone in phones:
            server.adb("connect", phone.serial, timeout=60)
            server.adb("-s", phone.serial, "wait-for-device", timeout=60)
        binary = write_script(tmp_path / "benchmark_model", RUNNER)
        out = tmp_path / "results"
        code = cli_main(["profile", "--models", models[0], "--all", "--adb", server.address,
                         "--configs", "xnnpack", "--runs", "5", "--warmup", "1",
                         "--benchmark-binary", str(binary), "--out", str(out)])
        assert code == 0
    finally:
        server.stop()
        for phone in phones:
            phone.stop()
    records = load_records(out)
    assert sorted(r.key.serial for r in records) == serials
    assert all(r.status == "ok" and r.latency["count"] >= 5 for r in records)


def test_a_hanging_benchmark_times_out_as_a_failed_run_and_the_rest_goes_on(models, phone, tmp_path):
    binary = write_script(tmp_path / "benchmark_model", "\n".join([
        'case "$*" in *--use_xnnpack=false*) sleep 30;; esac',
        RUNNER]))
    out = tmp_path / "results"
    plan = ProfilePlan(models=(models[0],), out=str(out), devices=(phone.serial,), direct=True,
                       configs=("cpu", "xnnpack"), runs=5, warmup=1, benchmark_binary=str(binary),
                       run_timeout_s=3.0)
    report = profile(plan, progress=False)
    assert [s.status for s in report.runs] == ["failed", "ok"] and report.complete
    hung, fine = load_records(out)
    assert hung.config == "cpu" and "no result within --run-timeout 3 s" in hung.error
    assert hung.thermal is None and fine.latency["count"] >= 5


def test_demo_profiles_here_when_no_phone_is_connected(models, tmp_path):
    from android_harness.profile import profile_phone_or_here
    from tests._adb_helpers import free_port

    where, report = profile_phone_or_here(models[:1], tmp_path / "results", adb_server=f"127.0.0.1:{free_port()}",
                                          configs=("xnnpack",), runs=5, warmup=1, progress=False)
    assert where == "this computer (loopback device): no phone connected"
    assert [s.status for s in report.runs] == ["ok"]
    comparison = compare(tmp_path / "results", plots=False, report=False)
    from android_harness.loopback.identity import android_abi
    assert comparison.rows[0].device.startswith(f"loopback device: this computer's numbers ({android_abi()}, ")
    assert comparison.rows[0].device.endswith("not a phone's") and comparison.rows[0].loopback


@pytest.mark.skipif(not DELEGATE.is_file(), reason="needs the host delegate (make delegate)")
def test_the_wbmm_config_passes_the_thread_count_to_the_delegate(models, phone, tmp_path):
    """The command line the device ran: ``--threads 2`` reaches the delegate as num_threads:2
    (its own pool defaults to 1 thread), merged with the user's options; a num_threads the
    user wrote wins. The benchmark script on the device records its argv before exec."""
    argv_file = tmp_path / "argv.txt"
    binary = write_script(tmp_path / "benchmark_model",
                          f'printf "%s\\n" "$@" >> "{argv_file}"; echo "--" >> "{argv_file}"\n{RUNNER}')

    def device_argvs(out: Path, *extra: str) -> list[list[str]]:
        argv_file.unlink(missing_ok=True)
        code = cli_main(["profile", "--models", models[1], "--device", phone.serial, "--direct",
                         "--configs", "wbmm", "--threads", "1,2", "--runs", "3", "--warmup", "1",
                         "--run-timeout", "120", "--benchmark-binary", str(binary), "--out", str(out), *extra])
        assert code == 0
        assert all(r.status == "ok" for r in load_records(out))
        runs = argv_file.read_text().split("--\n")
        return [run.splitlines() for run in runs if run]

    def option_flags(argv: list[str]) -> list[str]:
        return [a for a in argv if a.startswith(("--num_threads=", "--external_delegate_options="))]

    runs = device_argvs(tmp_path / "plain")
    assert [option_flags(argv) for argv in runs] == [
        ["--num_threads=1", "--external_delegate_options=num_threads:1"],
        ["--num_threads=2", "--external_delegate_options=num_threads:2"]]
    runs = device_argvs(tmp_path / "merged", "--delegate-options", "spin_us:0")
    assert [option_flags(argv) for argv in runs] == [
        ["--num_threads=1", "--external_delegate_options=num_threads:1;spin_us:0"],
        ["--num_threads=2", "--external_delegate_options=num_threads:2;spin_us:0"]]
    runs = device_argvs(tmp_path / "user", "--delegate-options", "num_threads:3")
    assert [option_flags(argv) for argv in runs] == [
        ["--num_threads=1", "--external_delegate_options=num_threads:3"],
        ["--num_threads=2", "--external_delegate_options=num_threads:3"]]
