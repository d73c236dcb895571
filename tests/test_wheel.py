"""The wheel: built by the package build (setup.py's CMake step), installed outside the checkout, used.

Builds the wheel from a copy of the checkout's files (what git tracks or would track, so
nothing from build/ or an older build/lib leaks in), offline (--no-build-isolation: this
venv's setuptools, --no-index: nothing downloaded), installs it with --no-deps into a
fresh venv in a temporary folder whose dependencies (tensorflow, ai-edge-litert...) come
from this venv's site-packages through a .pth path line (a path added that way has its
own .pth files ignored, so this venv's editable install of the checkout stays off), and
there, with no PYTHONPATH and the temporary folder as working directory: checks that
every import comes from the fresh venv, that ``delegates.library_path()`` is the wheel's
copy, runs ``wbmm-mobile rewrite --target wbmm`` on a model with a 7x7 depthwise conv
(verified through the wheel's delegate) and runs the result through the delegate against
the original model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wbmm_mobile", "converters", "delegates", "android_harness")
SOURCE_SUFFIXES = {".py", ".cc", ".h", ".cmake"}

pytestmark = [pytest.mark.slow, pytest.mark.toolchain, pytest.mark.timeout(900)]


def _source_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=False)
    if listed.returncode == 0:
        return [name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]
    # Not a git checkout (an unpacked archive): everything but build outputs and environments.
    skip = {".venv", "build", ".git", "results", "__pycache__", ".pytest_cache", ".hypothesis"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)]


def _package_data_files() -> set[str]:
    """Files in the four packages that are neither Python nor C++ sources: what the code reads."""
    return {name for name in _source_files()
            if name.split("/")[0] in PACKAGES and Path(name).suffix not in SOURCE_SUFFIXES
            and Path(name).name != "CMakeLists.txt"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.fail(f"setuptools {setuptools.__version__} cannot build this project offline (needs >= 77): "
                    "run `make setup` (the test extra installs it)")
    source = tmp_path_factory.mktemp("source")
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = "2"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--wheel-dir", str(dist), str(source)], capture_output=True, text=True, env=env,
                           timeout=840)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = list(dist.glob("wbmm_mobile-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # Dependencies from this venv, after the wheel is installed (pip never sees the checkout's install).
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Every site folder of this interpreter (its venv's, and any that venv chains to), none of the checkout.
    folders = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (site / "_dependencies_from_the_test_venv.pth").write_text("".join(f"{p}\n" for p in folders))
    return folder


def _run(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WBMM_DELEGATE_LIB")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_ships_the_delegate_the_kernel_bench_and_every_data_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: info for info in archive.infolist()}
    for binary in ("delegates/bin/libwbmm_delegate.so", "delegates/bin/wbmm_kernel_bench"):
        assert binary in entries, sorted(entries)
        assert entries[binary].external_attr >> 16 & 0o111, f"{binary} is not executable in the wheel"
    data = _package_data_files()
    assert "converters/strategy_measurements.json" in data
    assert "android_harness/loopback/fixture_phone/system/bin/getprop" in data
    assert not data - set(entries), f"data files missing from the wheel: {sorted(data - set(entries))}"
    assert not [name for name in entries if name.endswith((".cc", ".h"))]   # binaries, not sources
    assert "-linux_" in wheel.name or "-macosx_" in wheel.name   # a platform wheel, not 'any'


def test_rewrite_for_the_wbmm_delegate_and_a_delegate_load_from_the_installed_wheel(venv, tmp_path):
    import keras

    from converters.keras_convert import to_tflite

    inp = keras.Input((16, 16, 8), batch_size=1)
    out = keras.layers.Conv2D(8, 1)(keras.layers.DepthwiseConv2D(7, padding="same")(inp))
    model = tmp_path / "dw7.tflite"
    model.write_bytes(to_tflite(keras.Model(inp, out)))
    work = tmp_path / "elsewhere"
    work.mkdir()

    where = _run(venv, [str(venv / "bin" / "python"), "-c", (
        "import json, wbmm_mobile, converters, delegates, android_harness, ai_edge_litert;"
        "print(json.dumps({'modules': [m.__file__ for m in (wbmm_mobile, converters, delegates, android_harness)],"
        " 'library': str(delegates.library_path()), 'checkout': str(delegates.checkout_root()),"
        " 'litert': ai_edge_litert.__file__}))")], work)
    assert where.returncode == 0, where.stderr
    facts = json.loads(where.stdout)
    site = str(venv)
    assert all(path.startswith(site) for path in facts["modules"]), facts
    assert facts["library"].startswith(site) and facts["library"].endswith("delegates/bin/libwbmm_delegate.so")
    assert facts["checkout"] == "None"
    assert not facts["litert"].startswith(site)   # the dependency really comes through the .pth line

    rewritten = tmp_path / "dw7_wbmm.tflite"
    report = tmp_path / "report.json"
    done = _run(venv, [str(venv / "bin" / "wbmm-mobile"), "rewrite", str(model), "-o", str(rewritten),
                       "--target", "wbmm", "--json", str(report)], work)
    assert done.returncode == 0, done.stdout + done.stderr
    layers = json.loads(report.read_text())["layers"]
    assert [layer["rewritten"] for layer in layers] == [True]

    check = _run(venv, [str(venv / "bin" / "python"), "-c", f"""
import json, numpy as np, delegates
from ai_edge_litert.interpreter import Interpreter
def run(path, delegate=None):
    it = Interpreter(model_path=path, experimental_delegates=[delegate] if delegate else None)
    it.allocate_tensors()
    x = np.random.default_rng(3).standard_normal(it.get_input_details()[0]['shape']).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]['index'], x)
    it.invoke()
    return it, it.get_tensor(it.get_output_details()[0]['index'])
_, reference = run({str(model)!r})
delegate = delegates.load(num_threads=2)
it, got = run({str(rewritten)!r}, delegate)
claimed = delegates.delegation_report(it, delegate)
print(json.dumps({{'max_abs': float(np.abs(got - reference).max()), 'scale': float(np.abs(reference).max()),
                  'claimed': list(claimed.claimed_ops), 'threads': claimed.num_threads}}))
"""], work)
    assert check.returncode == 0, check.stderr
    result = json.loads(check.stdout)
    assert result["claimed"] and result["threads"] == 2, result
    assert result["max_abs"] <= 1e-4 * max(1.0, result["scale"]), result
    np.testing.assert_array_less(0, result["scale"])
