"""The delegate's kernels timed on a real phone: run by hand with a phone attached and the
Android build made (`make delegate-arm64 ANDROID_NDK_HOME=...`), `pytest tests_phone`.

This is the NEON speed CI cannot measure (no arm64 hardware there): the figures to add to
BENCHMARKS.md, per phone.
"""

from __future__ import annotations

import os

import pytest

from android_harness.device import Device
from android_harness.kernel_bench import BUILT_BINARIES, run_kernel_bench
from android_harness.connect import open_transport
from tests_phone.test_phone_adb import _ready_serials

pytestmark = [pytest.mark.phone, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def phone():
    if not _ready_serials():
        pytest.skip("no phone attached to the ADB server")
    if not BUILT_BINARIES["arm64-v8a"].is_file():
        pytest.skip("no Android build: make delegate-arm64 ANDROID_NDK_HOME=<NDK>")
    transport = open_transport(serial=os.environ.get("ANDROID_SERIAL"))
    yield Device(transport)
    transport.close()


@pytest.mark.parametrize("flags", [["--window", "7"], ["--window", "14"], ["--kernel", "13"]])
def test_neon_kernels_run_and_scale_on_the_phone(phone, flags):
    result = run_kernel_bench(phone, [*flags, "--threads", "4", "--runs", "100"])
    report = result.report
    assert result.abi == "arm64-v8a" and report["isa"] == "neon"
    assert all(0 < v["best_ms"] <= v["median_ms"] for v in report["variants"])
    # Four big cores should give more than one core's speed; the figure itself goes to BENCHMARKS.md.
    assert report["threads_speedup"] > 1.2, result.printed
    print(result.printed)
