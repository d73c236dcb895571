"""Profile pieces on their own: config flags, ELF ABI check, power calibration and energy
arithmetic, rail meters, and the temperature cool-down on the loopback device."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from android_harness.listeners import CooldownListener, DeviceSession, RunContext
from android_harness.power import (
    PowerSample,
    decide_calibration,
    estimate_energy,
    parse_rail_snapshots,
    parse_samples,
    rail_energy,
)
from android_harness.profile import CONFIGS, config_flags, elf_abi, find_benchmark_binary
from wbmm_mobile.errors import DelegateNotBuiltError


def test_config_flags_table():
    assert list(CONFIGS) == ["cpu", "xnnpack", "nnapi", "gpu", "wbmm"]
    assert config_flags("cpu") == ["--use_xnnpack=false"]
    assert config_flags("xnnpack") == ["--use_xnnpack=true"]
    assert config_flags("nnapi", nnapi_accelerator="google-edgetpu", nnapi_preference="sustained_speed") == [
        "--use_nnapi=true", "--nnapi_accelerator_name=google-edgetpu",
        "--nnapi_execution_preference=sustained_speed"]
    assert config_flags("gpu") == ["--use_gpu=true"]
    assert config_flags("wbmm", delegate_remote="/data/local/tmp/wbmm/lib/arm64-v8a/libwbmm_delegate.so",
                        delegate_options="threads:2") == [
        "--external_delegate_path=/data/local/tmp/wbmm/lib/arm64-v8a/libwbmm_delegate.so",
        "--external_delegate_options=threads:2", "--use_xnnpack=true"]  # ours first: applied first
    # The run's thread count reaches the delegate's own pool (default 1) unless the user set it.
    remote = "/data/local/tmp/wbmm/libwbmm_delegate.so"
    assert config_flags("wbmm", delegate_remote=remote, threads=4)[1] == "--external_delegate_options=num_threads:4"
    assert config_flags("wbmm", delegate_remote=remote, threads=4, delegate_options="spin_us:0")[1] == \
        "--external_delegate_options=num_threads:4;spin_us:0"
    assert config_flags("wbmm", delegate_remote=remote, threads=4, delegate_options="spin_us:0; num_threads:2")[1] \
        == "--external_delegate_options=spin_us:0;num_threads:2"
    with pytest.raises(DelegateNotBuiltError):
        config_flags("wbmm")
    with pytest.raises(ValueError, match="choose from"):
        config_flags("tpu")


def elf_header(machine: int) -> bytes:
    # e_ident (64-bit, little endian), e_type ET_DYN, e_machine.
    return b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + struct.pack("<HH", 3, machine)


@pytest.mark.parametrize("machine, abi", [(0xB7, "arm64-v8a"), (0x3E, "x86_64"), (0x28, "armeabi-v7a")])
def test_elf_abi(tmp_path, machine, abi):
    path = tmp_path / "lib.so"
    path.write_bytes(elf_header(machine) + b"\x00" * 64)
    assert elf_abi(path) == abi


def test_elf_abi_of_the_host_build_and_of_a_script(tmp_path):
    built = Path(__file__).resolve().parent.parent / "build" / "delegates" / "libwbmm_delegate.so"
    if built.is_file():
        assert elf_abi(built) == "x86_64"
    script = tmp_path / "benchmark_model"
    script.write_text("#!/bin/sh\n")
    assert elf_abi(script) is None


def test_benchmark_binary_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr("android_harness.profile.BENCHMARK_CACHE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        find_benchmark_binary("arm64-v8a")
    cached = tmp_path / "arm64-v8a" / "benchmark_model"
    cached.parent.mkdir()
    cached.write_bytes(elf_header(0xB7))
    assert find_benchmark_binary("arm64-v8a") == cached


@pytest.mark.parametrize("currents, voltages, unit_i, unit_v, sign", [
    ([-412000, -405000, -420000], [4012000, 4011000, 4013000], "uA", "uV", -1),   # Pixel-like
    ([412, 398, 430], [4012, 4011, 4013], "mA", "mV", 1),                        # mA/mV, discharge positive
    ([350000, 361000], [3850, 3849], "uA", "mV", 1),                             # mixed units
])
def test_calibration_units_and_sign(currents, voltages, unit_i, unit_v, sign):
    calibration = decide_calibration("/sys/class/power_supply/battery", currents, voltages, charging=False)
    assert (calibration.current_unit, calibration.voltage_unit, calibration.sign) == (unit_i, unit_v, sign)
    amps = calibration.sign * currents[0] * calibration.current_scale
    volts = voltages[0] * calibration.voltage_scale
    assert 0.3 < amps < 0.5 and 3.8 < volts < 4.1
    assert unit_i in calibration.method and "sign" in calibration.method


def test_calibration_without_readings_is_a_power_error():
    from wbmm_mobile.errors import PowerMeasurementError
    with pytest.raises(PowerMeasurementError, match="no battery readings"):
        decide_calibration("/sys/class/power_supply/battery", [], [], charging=False)


def samples(start: float, stop: float, step: float, current: float, voltage: float) -> list[PowerSample]:
    count = int(round((stop - start) / step))
    return [PowerSample(round(start + i * step, 6), current, voltage) for i in range(count)]


def test_energy_per_inference_formula():
    calibration = decide_calibration("bat", [-500000], [4000000], charging=False)
    running = samples(102.0, 106.0, 0.05, -1500000, 4000000)
    # A live gauge moves: alternate 1.4 A and 1.6 A (mean 1.5 A over the 80 samples).
    running = [PowerSample(s.uptime_s, -1400000 if i % 2 else -1600000, s.voltage_raw) for i, s in enumerate(running)]
    data = samples(100.0, 102.0, 0.05, -500000, 4000000) + running
    estimate = estimate_energy(data, bench_start=102.0, bench_end=106.0, calibration=calibration,
                               inference_avg_ms=8.0)
    assert estimate.idle_power_mw == pytest.approx(2000.0, rel=1e-12)     # 0.5 A x 4 V
    assert estimate.run_power_mw == pytest.approx(6000.0, rel=1e-12)      # 1.5 A x 4 V
    assert estimate.energy_per_inference_mj == pytest.approx(4000.0 * 8.0 / 1000.0, rel=1e-12)   # 32 mJ
    assert estimate.sample_rate_hz == pytest.approx(20.0, rel=1e-6)
    assert estimate.refused is None and estimate.flags == ()


def test_energy_refusals_and_flags():
    calibration = decide_calibration("bat", [-500000], [4000000], charging=False)
    slow = samples(100.0, 102.0, 0.5, -500000, 4000000) + samples(102.0, 106.0, 0.5, -500000, 4000000)
    estimate = estimate_energy(slow, 102.0, 106.0, calibration, 8.0)
    assert any("sample rate 2.0 Hz" in f for f in estimate.flags)
    assert any("did not change" in f for f in estimate.flags)
    assert any("not above idle" in f for f in estimate.flags)
    charging = estimate_energy(slow, 102.0, 106.0, calibration, 8.0, charging=True)
    assert charging.energy_per_inference_mj is None and "charging" in charging.refused
    short = estimate_energy(slow, 102.0, 102.2, calibration, 8.0)
    assert short.energy_per_inference_mj is None and "too few samples" in short.refused


def test_sampler_lines_skip_a_partial_last_line():
    text = "1234.50 -412000 4012000\n1234.55 -413000 4011000\n1234.6"
    assert parse_samples(text) == [PowerSample(1234.5, -412000, 4012000), PowerSample(1234.55, -413000, 4011000)]


RAILS = """@@RAILS idle
t=1000
CH0(T=1000)[S4M_VDD_CPUCL0], 1000000
CH1(T=1000)[S3M_VDD_CPUCL1], 500000
@@RAILS start
t=3000
CH0(T=3000)[S4M_VDD_CPUCL0], 1200000
CH1(T=3000)[S3M_VDD_CPUCL1], 600000
@@RAILS end
t=7000
CH0(T=7000)[S4M_VDD_CPUCL0], 5200000
CH1(T=7000)[S3M_VDD_CPUCL1], 800000
"""


def test_rail_energy_from_odpm_counters():
    snapshots = parse_rail_snapshots(RAILS)
    assert snapshots["start"]["S4M_VDD_CPUCL0"] == (3000.0, 1200000.0)
    rails = {r.rail: r for r in rail_energy(snapshots, inference_avg_ms=10.0)}
    big = rails["S4M_VDD_CPUCL0"]
    assert big.idle_power_mw == pytest.approx(100.0)       # 200000 uWs / 2000 ms
    assert big.run_power_mw == pytest.approx(1000.0)       # 4000000 uWs / 4000 ms
    assert big.energy_per_inference_mj == pytest.approx(9.0)   # 900 mW x 10 ms
    assert rails["S3M_VDD_CPUCL1"].energy_per_inference_mj == pytest.approx(0.0)


def test_temperature_cooldown_waits_on_the_loopback_device(tmp_path):
    """Baseline read before the first run (BIG 41.2 C); the phone then heats to 47 C; the listener
    polls until the fixture cools back within 1 C of the baseline."""
    from android_harness.device import Device
    from android_harness.loopback.daemon import LoopbackDevice
    from android_harness.connect import open_transport

    with LoopbackDevice(tmp_path / "root", fixture_phone=True) as phone:
        thermal = phone.root / "system/etc/wbmm_fixture/dumpsys_thermalservice.txt"
        original = thermal.read_text()
        device = Device(open_transport(direct=phone.serial))
        readings = iter(["mValue=45.0, mType=0, mName=BIG", "mValue=42.0, mType=0, mName=BIG"])
        sleeps = []

        def cool_a_little(seconds: float) -> None:
            sleeps.append(seconds)
            thermal.write_text(original.replace("mValue=41.2, mType=0, mName=BIG", next(readings)))

        listener = CooldownListener(mode="temp", timeout_s=60, poll_s=7, sleep=cool_a_little)
        session = DeviceSession(device=device, info=device.info(), remote_dir="/data/local/tmp/wbmm")
        facts = listener.start_session(session)
        assert facts["baseline_c"] == 41.2
        thermal.write_text(original.replace("mValue=41.2, mType=0, mName=BIG", "mValue=47.0, mType=0, mName=BIG"))
        run = RunContext(session, "r1", "m", "xnnpack", 1, 5, 1)
        listener.before_run(run)
        block = listener.after_run(run, None)
        assert sleeps == [7, 7]                   # 47 -> 45 -> 42.0 (within 1 C of 41.2)
        assert block["reached"] is True and block["temperature_c"] == 42.0
        device.transport.close()


def test_latency_block_from_an_op_profiling_run():
    from android_harness.benchmark_output import parse_benchmark_output
    from android_harness.listeners import latency_block

    text = (Path(__file__).parent / "fixtures" / "benchmark_model" / "op_profiling_csv.txt").read_text()
    block = latency_block(parse_benchmark_output(text))
    assert (block["count"], block["median_ms"], block["p5_ms"], block["p95_ms"]) == (751, 1.315, 1.29, 1.412)
    assert block["avg_ms"] == pytest.approx(1.33052, rel=1e-12) and block["first_ms"] == 1.95
    assert block["op_types"] == [
        {"node_type": "WBMM", "count": 1, "avg_ms": 0.801, "percent": 60.82},
        {"node_type": "TfLiteXNNPackDelegate", "count": 2, "avg_ms": 0.516, "percent": 39.18}]
    assert block["delegates"] == [{"delegate": "XNNPACK", "coverage": "partial", "kernels": 2}]
