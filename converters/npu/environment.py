"""Find the NPU compilers of the ``npu`` extra and make Qualcomm's runnable, once per machine.

Qualcomm's compiler is LiteRT's ahead-of-time tool (``ai_edge_litert/tools/apply_plugin_main``)
with its Qualcomm plugin; the plugin loads Qualcomm's QNN host libraries, which no LiteRT
package ships but the ``onnxruntime-qnn`` wheel does (``libQnnHtp.so`` holds the HTP graph
preparer). Three things stand between the wheels and a working compiler, and this module
settles them in one folder of links under the user's cache
(``~/.cache/wbmm-mobile/qnn/<onnxruntime-qnn version>-<hash of its location>``):

- the QNN libraries must be found by name, so they are linked into the folder;
- they need the wheel's own C++ runtime (``onnxruntime_qnn.libs/libc++-*.so.1.0`` ...), which
  they find through ``$ORIGIN`` of the real file; a loader does not follow links for
  ``$ORIGIN``, so the runtime is linked into the same folder;
- the plugin also wants ``libQnnLpai.so`` (Qualcomm's low-power AI backend), which no wheel
  ships and the HTP path never calls: an empty shared library with that soname, built here
  with the C compiler that is on the machine, satisfies the loader.

The folder is built beside its final name and renamed into place, so two processes racing
to set it up never see half of it. ``LD_LIBRARY_PATH`` pointing at it is set only in the
compiler's subprocess environment (``qualcomm_env``), never in this process.

``ai-edge-litert-sdk-qualcomm`` (in the extra) downloads Qualcomm's SDK when installed without
``SKIP_SDK_DOWNLOAD=1``; nothing here needs that SDK, and nothing here downloads anything.

Not for: running the compilers or reading their output (``qualcomm.py``, ``ethos_u.py``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wbmm_mobile.errors import NpuExtraMissingError, NpuSetupError

__all__ = ["INSTALL_HINT", "QualcommTools", "qualcomm_tools", "qualcomm_env", "vela_command", "vela_version",
           "cache_root"]

# What to type when the extra is missing (the variable keeps the SDK package from downloading).
INSTALL_HINT = "SKIP_SDK_DOWNLOAD=1 pip install 'wbmm-mobile[npu]'"

# (import name, distribution) of what each compiler needs.
_QUALCOMM_NEEDS = (("ai_edge_litert", "ai-edge-litert"), ("onnxruntime_qnn", "onnxruntime-qnn"))
_VELA_NEEDS = (("ethosu.vela", "ethos-u-vela"),)

# The QNN libraries the plugin opens by name; the rest of the wheel's libraries are not needed.
_QNN_LIBRARIES = ("libQnnHtp.so", "libQnnSystem.so", "libQnnIr.so", "libQnnSaver.so", "libHtpPrepare.so",
                  "libQnnHtpNetRunExtensions.so")
_LPAI_STUB = "libQnnLpai.so"


@dataclass(frozen=True)
class QualcommTools:
    apply_plugin: Path          # ai_edge_litert/tools/apply_plugin_main
    plugin_dir: Path            # the folder holding libLiteRtCompilerPlugin_Qualcomm.so
    litert_dir: Path            # ai_edge_litert/ (libLiteRt.so)
    qnn_dir: Path               # the prepared folder of links and the stub
    version: str                # "ai-edge-litert 2.3.0, onnxruntime-qnn 2.7.0"


def _package_dir(module: str, distribution: str, what: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        spec = None
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise NpuExtraMissingError(f"{what} needs the npu extra ({distribution} is not installed): {INSTALL_HINT}")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cache_root() -> Path:
    """``$WBMM_MOBILE_CACHE``, else ``$XDG_CACHE_HOME/wbmm-mobile``, else ``~/.cache/wbmm-mobile``."""
    if os.environ.get("WBMM_MOBILE_CACHE"):
        return Path(os.environ["WBMM_MOBILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wbmm-mobile"


def qualcomm_tools(what: str = "the Qualcomm check") -> QualcommTools:
    """The compiler's paths, preparing the QNN folder on first use; NpuExtraMissingError without the extra."""
    litert = _package_dir(*_QUALCOMM_NEEDS[0], what)
    qnn_wheel = _package_dir(*_QUALCOMM_NEEDS[1], what)
    apply_plugin = litert / "tools" / "apply_plugin_main"
    plugin_dir = litert / "vendors" / "qualcomm" / "compiler"
    plugin = plugin_dir / "libLiteRtCompilerPlugin_Qualcomm.so"
    for needed in (apply_plugin, plugin):
        if not needed.exists():
            raise NpuSetupError(f"{needed} is missing from ai-edge-litert {_version('ai-edge-litert')}; the npu "
                                f"extra was tested with ai-edge-litert 2.3.0")
    qnn_version = _version("onnxruntime-qnn")
    where = hashlib.sha256(str(qnn_wheel.resolve()).encode()).hexdigest()[:8]
    folder = cache_root() / "qnn" / f"{qnn_version}-{where}"
    if not _folder_is_whole(folder):
        _build_folder(folder, qnn_wheel, plugin, litert)
    return QualcommTools(apply_plugin, plugin_dir, litert, folder,
                         f"ai-edge-litert {_version('ai-edge-litert')}, onnxruntime-qnn {qnn_version}")


def qualcomm_env(tools: QualcommTools) -> dict[str, str]:
    """The compiler subprocess's environment: this one plus the QNN folder and LiteRT on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(tools.qnn_dir), str(tools.litert_dir)]
                                             + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    return env


def _runtime_libraries(qnn_wheel: Path) -> list[Path]:
    # The wheel's C++ runtime sits next to the package, as auditwheel leaves it.
    libs = qnn_wheel.parent / f"{qnn_wheel.name}.libs"
    return sorted(libs.glob("*.so*")) if libs.is_dir() else []


def _folder_is_whole(folder: Path) -> bool:
    # Every link must still resolve: a removed or upgraded venv leaves dangling links behind.
    if not (folder / _LPAI_STUB).is_file():
        return False
    links = [folder / name for name in _QNN_LIBRARIES]
    return all(link.exists() for link in links)


def _c_compiler() -> str:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise NpuSetupError("the Qualcomm check builds an empty libQnnLpai.so once and needs a C compiler for it "
                        "(none of $CC, cc, gcc, clang was found): install one, e.g. apt-get install gcc")


def _build_folder(folder: Path, qnn_wheel: Path, plugin: Path, litert: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name in _QNN_LIBRARIES:
            source = qnn_wheel / name
            if not source.exists():
                raise NpuSetupError(f"{source} is missing: onnxruntime-qnn {_version('onnxruntime-qnn')} does not "
                                    f"ship {name} (the npu extra pins onnxruntime-qnn 2.7.0)")
            os.symlink(source.resolve(), staging / name)
        for runtime in _runtime_libraries(qnn_wheel):
            os.symlink(runtime.resolve(), staging / runtime.name)
        source = staging / "lpai_stub.c"
        source.write_text("/* Empty: satisfies the loader; the HTP path never calls LPAI. */\n")
        built = subprocess.run([_c_compiler(), "-shared", "-fPIC", f"-Wl,-soname,{_LPAI_STUB}", "-o",
                                str(staging / _LPAI_STUB), str(source)], capture_output=True, text=True, timeout=120)
        if built.returncode != 0:
            raise NpuSetupError(f"building the empty {_LPAI_STUB} failed: "
                                f"{(built.stderr.strip().splitlines() or ['no message'])[-1]}")
        source.unlink()
        _check_loadable(plugin, staging, litert)
        try:
            os.rename(staging, folder)
        except OSError:
            # Another process finished first (its folder is whole), or a stale folder is in the way.
            if _folder_is_whole(folder):
                return
            stale = folder.with_name(f".{folder.name}.stale.{os.getpid()}")
            os.rename(folder, stale)
            os.rename(staging, folder)
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_loadable(plugin: Path, folder: Path, litert: Path) -> None:
    """ldd must find every library of the plugin with the folder on the path (when ldd exists)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([str(folder), str(litert)]))
    listed = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, env=env, timeout=60).stdout
    missing = sorted({line.split("=>")[0].strip() for line in listed.splitlines() if "not found" in line})
    if missing:
        raise NpuSetupError(f"the Qualcomm plugin still misses {', '.join(missing)} with the QNN libraries of "
                            f"onnxruntime-qnn linked in {folder}")


def vela_command(what: str = "the Ethos-U check") -> list[str]:
    """How to run Vela (this Python, so the extra's own copy runs); NpuExtraMissingError without it."""
    _package_dir(*_VELA_NEEDS[0], what)
    return [sys.executable, "-m", "ethosu.vela"]


def vela_version() -> str:
    return f"ethos-u-vela {_version('ethos-u-vela')}"
