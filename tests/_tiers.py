"""The test tiers (see tests/conftest.py): what keeps a test out of `make test-fast`."""

from __future__ import annotations

import os

import pytest

FAST = os.environ.get("WBMM_TEST_FAST") == "1"
TIERS = {
    "toolchain": "needs the C++ build: CMake, the delegate library or the kernel benchmark",
    "qemu": "runs arm64 code under qemu-user",
    "system": "needs Debian packages (adb) that make system-deps installs",
}


def skip_in_fast_tier(tier: str) -> None:
    """Skip the running test (or the whole module, when called at import) in the fast tier."""
    raise pytest.skip.Exception(f"{TIERS[tier]}: runs in `make test`, not `make test-fast`", allow_module_level=True)
