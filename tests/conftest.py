"""Shared test settings: quiet TensorFlow, a hypothesis profile sized for a 2-core CI machine."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests._adb_helpers import DEBIAN_ADB, start_adb_server  # noqa: E402
from tests._tiers import FAST, REACHED, TIERS, skip_in_fast_tier, skip_reason  # noqa: E402

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- Test tiers ---------------------------------------------------------------------------------
# `make test` runs every test. `make test-fast` (WBMM_TEST_FAST=1, -m "not (toolchain or qemu or
# system or slow)") runs those that need no C++ build, no qemu and no Debian packages, and are not
# slow. Nobody has to remember a marker; tests are classified:
#  - at collection, by what their module runs (cmake -> toolchain, qemu-aarch64 -> qemu), by
#    their fixtures (adb_server -> system) and by how long they took last time (pytest's cache,
#    kept by every run: more than SLOW_SECONDS -> slow);
#  - at run time in the fast tier: a test (or fixture) that reaches for the built delegate
#    library or kernel benchmark (delegates.built_file / library_path), or starts an adb
#    server (tests/_adb_helpers.start_adb_server), is skipped there, with the reason.
SLOW_SECONDS = 5.0
_SOURCE_SIGNALS = {"toolchain": ("\"cmake\"",), "qemu": ("qemu-aarch64",)}
_FIXTURE_SIGNALS = {"adb_server": "system"}
_DURATIONS_KEY = "wbmm/durations"


def pytest_configure(config):
    for name, meaning in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning} (set automatically, see tests/conftest.py)")
    if FAST:
        import delegates

        os.environ.pop(delegates.LIBRARY_ENV_VAR, None)

        def no_build(name: str):
            skip_in_fast_tier("toolchain")

        delegates._places = no_build   # every lookup of the library or the benchmark goes through it


def pytest_collection_modifyitems(config, items):
    cache = getattr(config, "cache", None)   # None under -p no:cacheprovider
    durations = cache.get(_DURATIONS_KEY, {}) if cache is not None else {}
    sources: dict = {}
    for item in items:
        path = item.path
        if path not in sources:
            sources[path] = path.read_text() if path.suffix == ".py" else ""
        for tier, words in _SOURCE_SIGNALS.items():
            if any(word in sources[path] for word in words):
                item.add_marker(tier)
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _FIXTURE_SIGNALS:
                item.add_marker(_FIXTURE_SIGNALS[fixture])
        if durations.get(item.nodeid, 0.0) > SLOW_SECONDS:
            item.add_marker("slow")


def pytest_runtest_setup(item):
    REACHED.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if FAST and REACHED and report.failed:
        # The test reached for what the fast tier lacks; whatever it made of the refusal, skip it.
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {skip_reason(sorted(REACHED)[0])}")


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if report.when in ("setup", "call") and report.passed:
        _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    cache = getattr(session.config, "cache", None)
    if cache is not None and _measured:
        known = cache.get(_DURATIONS_KEY, {})
        known.update(_measured)
        cache.set(_DURATIONS_KEY, known)


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
