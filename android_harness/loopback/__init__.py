"""A loopback ADB device for tests and dry runs: a Python adbd on 127.0.0.1 serving a folder.

Not a phone and not a sandbox; see ``daemon`` for what it implements."""

from android_harness.loopback.daemon import (
    ADB_SCANNED_PORTS, DEFAULT_PORT, FIXTURE_PHONE_DIR, FaultPlan, LoopbackDevice, install_fixture_phone)

__all__ = ["LoopbackDevice", "FaultPlan", "DEFAULT_PORT", "ADB_SCANNED_PORTS", "FIXTURE_PHONE_DIR",
           "install_fixture_phone"]
