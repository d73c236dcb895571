"""Who the loopback device says it is: this computer (the default) or the fixture phone.

By default the device tells the truth: ``getprop`` reports this computer's CPU
architecture as the ABI (``x86_64`` here), its CPU model as the SoC, ``loopback``
in the model name and ``ro.wbmm.loopback=1``; ``dumpsys battery`` reads this
computer's own power supply (a machine without a battery reads as on AC power, no
battery present); ``/sys/devices/system/cpu`` is this computer's, so the harness
pins to real cores (or to none when the machine has no cpufreq). The fixture phone
(``fixture_phone/``, a Pixel 7 profile) is only for tests that need a phone's
answers, and says in its model name that it is a loopback fixture. The ADB banner
(what ``adb devices -l`` shows) is built from the same properties as ``getprop``.

Each profile replaces the other's files in the root folder, so a root reused with the
other profile never answers half one, half the other. Not for: serving files or
running commands (``rootfs``, ``shell_service``).
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from wbmm_mobile.errors import DeviceError

__all__ = ["FIXTURE_PHONE_DIR", "install_fixture_phone", "install_host_profile", "host_properties",
           "read_properties", "android_abi", "LOOPBACK_MODEL"]

FIXTURE_PHONE_DIR = Path(__file__).with_name("fixture_phone")
PROPS_FILE = "system/etc/wbmm_fixture/getprop.txt"
LOOPBACK_MODEL = "wbmm loopback (this computer)"
# Files a profile puts in the root; both profiles remove all of them first.
_PROFILE_PATHS = ("system/bin/getprop", "system/bin/dumpsys", "system/bin/taskset", "system/etc/wbmm_fixture", "sys")
# Python's platform.machine() -> the Android ABI name of the same instruction set.
_ABIS = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a",
         "i686": "x86", "i386": "x86", "armv7l": "armeabi-v7a", "armv8l": "armeabi-v7a"}

_HOST_DUMPSYS = r"""#!/bin/sh
# dumpsys of the wbmm loopback device (THIS computer, not a phone): "battery" reads this
# computer's power supply in dumpsys's format (no battery: AC powered, level 100, not
# present); there is no thermal service, as on a phone before Android 10.
PS=/sys/class/power_supply
case "$1" in
battery)
    ac=false; present=false; level=100; status=1; volt=""
    for supply in "$PS"/*; do
        [ -r "$supply/type" ] || continue
        case "$(cat "$supply/type")" in
        Mains|USB) [ "$(cat "$supply/online" 2>/dev/null)" = 1 ] && ac=true ;;
        Battery)
            present=true
            level=$(cat "$supply/capacity" 2>/dev/null || echo 0)
            volt=$(( $(cat "$supply/voltage_now" 2>/dev/null || echo 0) / 1000 ))
            case "$(cat "$supply/status" 2>/dev/null)" in
                Charging) status=2 ;; Discharging) status=3 ;; "Not charging") status=4 ;; Full) status=5 ;;
            esac ;;
        esac
    done
    [ "$present" = false ] && ac=true
    echo "Current Battery Service state:"
    echo "  AC powered: $ac"
    echo "  USB powered: false"
    echo "  Wireless powered: false"
    echo "  Dock powered: false"
    echo "  status: $status"
    echo "  present: $present"
    echo "  level: $level"
    echo "  scale: 100"
    if [ -n "$volt" ]; then echo "  voltage: $volt"; fi
    ;;
*)
    echo "Can't find service: $1" >&2
    exit 1
    ;;
esac
"""


def _clear_profile(root: Path) -> None:
    for relative in _PROFILE_PATHS:
        path = root / relative
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def install_fixture_phone(root: Path, profile: Path = FIXTURE_PHONE_DIR) -> None:
    """Copy a fixture phone profile (getprop/dumpsys/taskset scripts, sysfs files) into root."""
    if not profile.is_dir():
        raise DeviceError(f"fixture phone profile {profile} is not a folder")
    _clear_profile(root)
    for source in profile.rglob("*"):
        if source.is_dir() or source.name in ("README.md", "__pycache__") or source.suffix == ".pyc":
            continue
        target = root / source.relative_to(profile)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if "bin" in source.relative_to(profile).parts:
            target.chmod(0o755)


def android_abi(machine: str | None = None) -> str:
    """This computer's instruction set under its Android ABI name (``x86_64``, ``arm64-v8a`` ...)."""
    machine = (machine or platform.machine()).lower()
    return _ABIS.get(machine, machine)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_properties() -> dict[str, str]:
    """``getprop`` of the default profile: this computer, described truthfully."""
    abi = android_abi()
    uname = platform.uname()
    return {
        "ro.product.model": LOOPBACK_MODEL,
        "ro.product.name": "wbmm_loopback",
        "ro.product.device": "wbmm_loopback",
        "ro.product.brand": "wbmm",
        "ro.product.manufacturer": "this computer",
        "ro.product.cpu.abi": abi,
        "ro.product.cpu.abilist": abi,
        "ro.soc.model": _cpu_model(),
        "ro.soc.manufacturer": "this computer",
        "ro.build.version.release": f"none ({uname.system} {uname.release}, not Android)",
        "ro.serialno": "WBMMLOOPBACK",
        "ro.wbmm.loopback": "1",
        "ro.wbmm.note": f"loopback ADB device on this computer ({os.cpu_count()} CPUs); not a phone",
    }


def install_host_profile(root: Path) -> None:
    """The default identity: getprop from ``host_properties``, dumpsys reading this computer's
    power supply, and this computer's ``/sys/devices/system/cpu`` (a link) for the CPU facts."""
    _clear_profile(root)
    props = root / PROPS_FILE
    props.parent.mkdir(parents=True, exist_ok=True)
    props.write_text("".join(f"[{key}]: [{value}]\n" for key, value in host_properties().items()))
    bin_dir = root / "system/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURE_PHONE_DIR / "system/bin/getprop", bin_dir / "getprop")
    (bin_dir / "dumpsys").write_text(_HOST_DUMPSYS)
    for script in ("getprop", "dumpsys"):
        (bin_dir / script).chmod(0o755)
    cpu = Path("/sys/devices/system/cpu")
    if cpu.is_dir():
        (root / "sys/devices/system").mkdir(parents=True, exist_ok=True)
        (root / "sys/devices/system/cpu").symlink_to(cpu, target_is_directory=True)


def read_properties(root: Path) -> dict[str, str]:
    """The properties the installed profile's ``getprop`` prints (empty when none is installed)."""
    from android_harness.device_facts import parse_getprop
    try:
        return parse_getprop((root / PROPS_FILE).read_text())
    except OSError:
        return {}
