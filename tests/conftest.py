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


@pytest.fixture(scope="session", autouse=True)
def adb_test_key(tmp_path_factory):
    """One adb RSA key for the whole test session, named in ``$ADB_VENDOR_KEYS`` (restored
    afterwards): loopback devices trust it as the starting user's key, adb servers and
    adb-shell sign with it, and the user's real ~/.android is never read for signing or written."""
    from android_harness.adbshell_transport import load_or_create_adb_key
    key = load_or_create_adb_key(tmp_path_factory.mktemp("adb-test-key") / "adbkey")
    saved = os.environ.get("ADB_VENDOR_KEYS")
    os.environ["ADB_VENDOR_KEYS"] = str(key)
    yield key
    if saved is None:
        os.environ.pop("ADB_VENDOR_KEYS", None)
    else:
        os.environ["ADB_VENDOR_KEYS"] = saved


@pytest.fixture(scope="module")
def key_path(adb_test_key):
    """The adb-shell RSA key tests sign with: the session's trusted key (never the user's ~/.android)."""
    return adb_test_key


@pytest.fixture
def stranger_key(tmp_path):
    """A fresh adb key no loopback device trusts (for the 'unauthorized' cases)."""
    return tmp_path / "stranger" / "adbkey"
