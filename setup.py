"""Package build step: CMake builds the C++ delegate and its kernel benchmark into the wheel.

Everything else about the package is in pyproject.toml. A wheel (``pip wheel .``,
``pip install .``) gets ``delegates/bin/libwbmm_delegate.so`` and
``delegates/bin/wbmm_kernel_bench`` for the machine it is built on, compiled from
delegates/CMakeLists.txt (Release, only those two targets, no C++ tests; ``-j`` from
$CMAKE_BUILD_PARALLEL_LEVEL, default 2). An editable install (``pip install -e .``, what
``make`` sets up) builds nothing here: the Makefile builds build/delegates, which
``delegates.library_path()`` finds in a checkout. The Android arm64 build is
``make delegate-arm64`` (NDK toolchain), not a wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 ships bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - older setuptools with the wheel package
    from wheel.bdist_wheel import bdist_wheel

ROOT = Path(__file__).resolve().parent
TARGETS = {"wbmm_delegate": "libwbmm_delegate.so", "wbmm_kernel_bench": "wbmm_kernel_bench"}


class BuildPyWithDelegate(build_py):
    """build_py, then the CMake build whose outputs go into the wheel's delegates/bin/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        build_temp = Path(self.get_finalized_command("build").build_temp) / "delegates"
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        self.announce(f"building the WBMM delegate with CMake in {build_temp}", level=2)
        subprocess.run(["cmake", "-S", str(ROOT / "delegates"), "-B", str(build_temp),
                        "-DCMAKE_BUILD_TYPE=Release", "-DWBMM_BUILD_TESTS=OFF"], check=True)
        subprocess.run(["cmake", "--build", str(build_temp), "-j", jobs, "--target", *TARGETS], check=True)
        destination = Path(self.build_lib) / "delegates" / "bin"
        destination.mkdir(parents=True, exist_ok=True)
        for file_name in TARGETS.values():
            shutil.copy2(build_temp / file_name, destination / file_name)   # keeps the benchmark's x bit


class BinaryDistribution(Distribution):
    """The wheel holds machine code (though no Python extension module): platlib, platform tag."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform   # no Python extension module: any CPython 3 on this platform


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithDelegate, "bdist_wheel": PlatformWheel})
