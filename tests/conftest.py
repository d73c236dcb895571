"""Shared test settings: quiet TensorFlow, a hypothesis profile sized for a 2-core CI machine."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests._adb_helpers import DEBIAN_ADB, start_adb_server  # noqa: E402

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory):
    """A private Debian adb server (own port, own HOME) for one test module."""
    if not os.path.exists(DEBIAN_ADB):
        pytest.skip("Debian's adb is not installed (make system-deps)")
    server = start_adb_server(DEBIAN_ADB, tmp_path_factory.mktemp("adb-home"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key_path(tmp_path_factory):
    """Where a module's adb-shell RSA key is created (never the user's ~/.android)."""
    return tmp_path_factory.mktemp("keys") / "adbkey"
