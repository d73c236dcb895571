"""Run ``wbmm_kernel_bench`` (delegates/bench/kernel_bench.cc) on an Android device.

The kernels alone (float32, or int8 with ``--int8`` among the flags), without a TFLite
runtime: on 1 thread, N threads and N independent 1-thread runs (the device's capacity to
scale at that moment). The binary must be built for
the device's ABI (``make delegate-arm64 ANDROID_NDK_HOME=...`` builds the arm64 one); on the
loopback test device, which runs commands on this computer, the host build is used.
"""

from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from android_harness.device import Device
from android_harness.profile import REMOTE_DIR, check_built_for
from delegates import KERNEL_BENCH_NAME, built_file
from wbmm_mobile.errors import BenchmarkFailedError, BenchmarkOutputError, DelegateNotBuiltError

ROOT = Path(__file__).resolve().parent.parent
# Where `make delegate-arm64` puts the phone build (a checkout only). The host build is
# delegates.built_file's: the wheel's copy, or `make delegate`'s in a checkout.
BUILT_BINARIES = {"arm64-v8a": ROOT / "build" / "android-arm64" / "wbmm_kernel_bench"}
REMOTE_BINARY = f"{REMOTE_DIR}/bin/wbmm_kernel_bench"
REMOTE_JSON = f"{REMOTE_DIR}/kernel_bench.json"


@dataclass
class KernelBenchResult:
    """One run of wbmm_kernel_bench: where it ran, what it printed, and its JSON report."""
    serial: str
    abi: str
    binary: str
    report: dict = field(default_factory=dict)
    printed: str = ""


def _host_abi() -> str:
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}.get(
        platform.machine().lower(), platform.machine())


def choose_binary(device_abi: str, given: str | Path | None = None) -> Path:
    """The benchmark binary for ``device_abi``: ``given``, else the host build (the wheel's or
    ``make delegate``'s) for this machine's ABI, else this checkout's ``make delegate-arm64`` build."""
    if given:
        path = Path(given)
    elif device_abi == _host_abi():
        path = built_file(KERNEL_BENCH_NAME) or Path("build") / "delegates" / KERNEL_BENCH_NAME
    else:
        path = BUILT_BINARIES.get(device_abi)
    if path is None:
        raise DelegateNotBuiltError(f"no wbmm_kernel_bench build for ABI {device_abi!r}: pass --binary PATH")
    if not path.is_file():
        hint = "make delegate-arm64 ANDROID_NDK_HOME=<NDK> builds it" if device_abi == "arm64-v8a" \
            else "make delegate builds it"
        raise DelegateNotBuiltError(f"{path}: wbmm_kernel_bench not found ({hint})")
    check_built_for(path, device_abi)
    return path


def run_kernel_bench(device: Device, args: Sequence[str], *, binary: str | Path | None = None,
                     timeout: float = 600.0) -> KernelBenchResult:
    """Push the benchmark to ``device``, run it with ``args`` (its own flags, e.g.
    ``["--window", "7", "--int8", "--threads", "4"]``, without ``--json``) and return its report."""
    if any(arg == "--json" for arg in args):
        raise ValueError("run_kernel_bench writes the JSON itself; leave --json out of args")
    info = device.info()
    abi = _host_abi() if info.is_loopback else info.abi
    local = choose_binary(abi, binary)
    device.sync_file(local, REMOTE_BINARY, mode=0o755)
    device.run(["chmod", "755", REMOTE_BINARY], timeout=60)
    device.run(["rm", "-f", REMOTE_JSON], timeout=60)  # never read a previous run's report
    result = device.shell([REMOTE_BINARY, *args, "--json", REMOTE_JSON], timeout=timeout)
    if not result.ok:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise BenchmarkFailedError(f"wbmm_kernel_bench exited with {result.exit_code} on {device.serial}: "
                                   f"{reason[-1] if reason else 'no output'}")
    with tempfile.TemporaryDirectory() as scratch:
        pulled = Path(scratch) / "kernel_bench.json"
        device.pull(REMOTE_JSON, pulled)
        try:
            report = json.loads(pulled.read_text())
        except (OSError, ValueError) as exc:
            raise BenchmarkOutputError(f"wbmm_kernel_bench on {device.serial} wrote no readable JSON: {exc}") from exc
    return KernelBenchResult(serial=device.serial, abi=abi, binary=str(local), report=report, printed=result.stdout)
