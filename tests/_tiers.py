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


# The tiers the running test reached for (conftest turns its failure into a skip: the skip
# exception may be swallowed on the way, e.g. by the CLI's error reporting or a worker thread).
REACHED: set[str] = set()


def skip_reason(tier: str) -> str:
    return f"{TIERS[tier]}: runs in `make test`, not `make test-fast`"


def skip_in_fast_tier(tier: str) -> None:
    """Skip the running test (or the whole module, when called at import) in the fast tier."""
    REACHED.add(tier)
    raise pytest.skip.Exception(skip_reason(tier), allow_module_level=True)
