"""The delegate's C++ unit tests, on this host and cross-compiled for arm64 under qemu.

The host run covers the portable and AVX2 kernels (AVX-512 when the CPU has
it), the runtime layout check's refusals, the option table and the custom-op
reader. The arm64 runs (``make delegate-arm64-test``: Debian's
aarch64-linux-gnu-g++; ``make delegate-arm64-clang-test``: clang, the NDK's
compiler family; both under ``qemu-aarch64``) prove the NEON kernels, the code a
phone runs, against the same reference. Also checks wbmm_custom_ops.h against
converters/custom_ops.py, the single definition of the format.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import converters.custom_ops as custom_ops

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "delegates"


def _cmake_build(target: str) -> None:
    if not (BUILD / "CMakeCache.txt").is_file():
        subprocess.run(["cmake", "-S", str(ROOT / "delegates"), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"],
                       check=True, capture_output=True, text=True)
    subprocess.run(["cmake", "--build", str(BUILD), "-j", "2", "--target", target], check=True, capture_output=True,
                   text=True)


def _assert_all_passed(output: str) -> None:
    summary = re.search(r"(\d+) tests, (\d+) failed", output)
    assert summary, output
    assert int(summary.group(2)) == 0, output
    for name in ["WindowedMatchesDenseMForm", "PlainDepthwiseMatchesDirectLoops", "LayoutCheckRefusesShorterRegistration",
                 "HelpComesFromTheSameTable"]:
        assert f"[PASS] {name}" in output, output


def test_cpp_unit_tests_pass_on_the_host():
    _cmake_build("wbmm_kernel_tests")
    result = subprocess.run([str(BUILD / "wbmm_kernel_tests")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_all_passed(result.stdout)
    assert "portable" in result.stdout


def _kernel_bench(*args: str, runner: tuple[str, ...] = (), build: Path = BUILD) -> subprocess.CompletedProcess:
    return subprocess.run([*runner, str(build / "wbmm_kernel_bench"), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("mode, size, taps", [("--window", 7, 49), ("--kernel", 13, 169)])
def test_kernel_bench_times_three_variants_and_writes_json(tmp_path, mode, size, taps, dtype):
    _cmake_build("wbmm_kernel_bench")
    out = tmp_path / "bench.json"
    result = _kernel_bench(mode, str(size), "--shape", "20x21x19", "--threads", "2", "--runs", "5",
                           "--json", str(out), *(["--int8"] if dtype == "int8" else []))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["dtype"] == dtype
    assert report[mode[2:]] == size and report["shape"] == [20, 21, 19] and report["threads"] == 2
    # The dense form's count: d or K*K taps per output, FMAs in float32, multiply-accumulates in int8.
    assert report["fmas" if dtype == "float32" else "macs"] == 20 * 21 * 19 * taps
    assert ("GMAC/s" in result.stdout) == (dtype == "int8") and ("GFMA/s" in result.stdout) == (dtype == "float32")
    assert [v["name"] for v in report["variants"]] == ["1 thread", "2 threads", "2 x 1 thread, independent"]
    for variant in report["variants"]:
        assert 0 < variant["best_ms"] <= variant["median_ms"]
    assert report["threads_speedup"] > 0 and report["capacity"] > 0
    assert "2 threads vs 1:" in result.stdout


@pytest.mark.parametrize("args, reason", [
    (["--kernel", "4"], "--kernel wants an odd size"),
    (["--window", "7", "--kernel", "13"], "give exactly one of --window W and --kernel K"),
    (["--window", "0"], "--window wants a positive integer, got '0'"),
    (["--window", "7", "--shape", "56x56"], "--shape wants HxWxC"),
    (["--window", "7", "--isa", "sparc"], "kernel set 'sparc' is not usable here (usable: portable"),
    (["--kernel", "7", "--int8", "--isa", "sparc"], "kernel set 'sparc' is not usable here for int8 (usable: auto"),
    (["--window", "7", "--json", "/nonexistent-dir/x.json", "--runs", "1"], "cannot write /nonexistent-dir/x.json"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_kernel_bench_refuses_bad_input_in_one_line(args, reason):
    _cmake_build("wbmm_kernel_bench")
    result = _kernel_bench(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("target, build_dir, compiler, compiler_id", [
    ("delegate-arm64-test", "delegates-arm64", "aarch64-linux-gnu-g++", "GNU"),
    # clang is the NDK's compiler: it rejects flags GCC accepts and inlines differently.
    ("delegate-arm64-clang-test", "delegates-arm64-clang", "clang++", "Clang"),
])
def test_cpp_unit_tests_pass_on_arm64_under_qemu(target, build_dir, compiler, compiler_id):
    for tool in (compiler, "aarch64-linux-gnu-g++", "qemu-aarch64", "make"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: `make system-deps` installs g++-aarch64-linux-gnu, clang and qemu-user")
    result = subprocess.run(["make", "-s", target], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    _assert_all_passed(result.stdout)
    assert "kernel sets usable here: portable,neon" in result.stdout  # the NEON kernels ran, not just compiled
    build = ROOT / "build" / build_dir
    assert f'set(CMAKE_CXX_COMPILER_ID "{compiler_id}")' in "".join(
        path.read_text() for path in build.glob("CMakeFiles/*/CMakeCXXCompiler.cmake"))
    assert (build / "wbmm_kernel_tests").read_bytes()[18:20] == (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    assert (build / "libwbmm_delegate.so").is_file()
    # The kernel benchmark a phone would run: NEON kernels, 2 threads agreeing with 1.
    bench = _kernel_bench("--window", "7", "--shape", "14x14x16", "--runs", "2", runner=("qemu-aarch64",),
                          build=build)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "neon kernels" in bench.stdout
    # No phone here to time NEON, so check the code instead: the blocks a phone runs keep
    # their accumulators in registers (a spill is a q-register store to the stack).
    spills = _neon_stack_stores(build / "CMakeFiles" / "wbmm_kernels_neon.dir" / "kernels" / "windowed_depthwise.cc.o")
    hot = {name: count for name, count in spills.items()
           if re.fullmatch(r"FullWindowBlock<(\d+), (\d+)>", name) or name.startswith("PaddedBlock<")}
    assert len(hot) >= 14 + 9 + 2 * 16, sorted(hot)  # every FullWindowBlock and PaddedBlock instance was found
    assert {name: count for name, count in hot.items() if count} == {}


def _neon_stack_stores(obj: Path) -> dict[str, int]:
    """Per kernel block in an aarch64 object: how many q-register stores to [sp...] it has."""
    listing = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", "-C", str(obj)],
                             capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    name = None
    for line in listing.splitlines():
        header = re.match(r"[0-9a-f]+ <.*::(\w+<[^()]*>)\(.*>:$", line)
        if header:
            name = header.group(1)
            counts[name] = 0
        elif name and re.search(r"\bst(r|p|ur)\s+q\d+.*\[sp", line):
            counts[name] += 1
    return counts


def test_custom_op_header_mirrors_the_python_definition():
    header = (ROOT / "delegates" / "wbmm_custom_ops.h").read_text()
    constants = {name: int(value, 0) for name, value in
                 re.findall(r"constexpr int32_t (k\w+) = (0x[0-9A-Fa-f]+|\d+);", header)}
    names = dict(re.findall(r'constexpr const char\* (k\w+) = "(\w+)";', header))
    assert constants["kMagic"] == custom_ops.MAGIC
    assert constants["kFormatVersion"] == custom_ops.FORMAT_VERSION
    assert constants["kOptionWords"] == custom_ops.OPTION_WORDS
    assert constants["kFlagShortcut"] == custom_ops.FLAG_SHORTCUT
    assert (constants["kPaddingSame"], constants["kPaddingValid"]) == (custom_ops.PADDING_SAME, custom_ops.PADDING_VALID)
    assert (constants["kActivationNone"], constants["kActivationRelu"], constants["kActivationRelu6"]) == \
        custom_ops.SUPPORTED_ACTIVATIONS
    assert (names["kWbmmOpName"], names["kWbmmDepthwiseOpName"]) == custom_ops.CUSTOM_OP_NAMES
