"""Device facts as dataclasses, and the parsers that read them from command output.

Pure text -> dataclass functions (``getprop``, ``dumpsys battery``, ``dumpsys
thermalservice``, cpufreq listings), kept apart from the code that runs the
commands (``android_harness.device``) so they can be tested on captured output
from real phones. Not for: running anything on a device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "DeviceInfo",
    "CpuCore",
    "CpuTopology",
    "BatteryStatus",
    "Temperature",
    "ThermalStatus",
    "DeviceSnapshot",
    "parse_getprop",
    "device_info_from_props",
    "parse_cpu_max_freqs",
    "cpu_topology",
    "parse_dumpsys_battery",
    "parse_dumpsys_thermalservice",
    "THERMAL_STATUS_NAMES",
    "TEMPERATURE_TYPE_NAMES",
]

# android.os.PowerManager THERMAL_STATUS_* values.
THERMAL_STATUS_NAMES = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical",
                        5: "emergency", 6: "shutdown"}
# android.os.Temperature TYPE_* values.
TEMPERATURE_TYPE_NAMES = {-1: "unknown", 0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port",
                          5: "power_amplifier", 6: "bcl_voltage", 7: "bcl_current", 8: "bcl_percentage",
                          9: "npu", 10: "tpu", 11: "display", 12: "modem", 13: "soc", 14: "wifi",
                          15: "camera", 16: "flashlight", 17: "speaker", 18: "ambient", 19: "pogo"}
# dumpsys battery status codes (BatteryManager.BATTERY_STATUS_*).
BATTERY_STATUS_NAMES = {1: "unknown", 2: "charging", 3: "discharging", 4: "not charging", 5: "full"}


@dataclass(frozen=True)
class DeviceInfo:
    """Who the device is: identity, SoC, ABI and Android level."""

    serial: str
    model: str
    manufacturer: str
    soc_model: str          # ro.soc.model (Android 12+), "" when absent
    board_platform: str     # ro.board.platform, e.g. "gs201", "kalama"
    abi: str                # ro.product.cpu.abi, e.g. "arm64-v8a"
    sdk_level: int          # ro.build.version.sdk, 0 when unknown
    android_version: str    # ro.build.version.release, e.g. "14"
    is_loopback: bool = False  # the wbmm loopback test device, not a phone

    @property
    def soc(self) -> str:
        """Best single SoC name: ro.soc.model, else the board platform."""
        if self.soc_model and self.board_platform and self.board_platform.lower() not in self.soc_model.lower():
            return f"{self.soc_model} ({self.board_platform})"
        return self.soc_model or self.board_platform or "unknown"


@dataclass(frozen=True)
class CpuCore:
    index: int
    max_freq_khz: int


@dataclass(frozen=True)
class CpuTopology:
    """CPU cores by cluster. ``big_cores`` = every core outside the slowest cluster (all cores
    on a single-cluster SoC); ``prime_cores`` = the fastest cluster alone."""

    cores: tuple[CpuCore, ...]
    clusters: tuple[tuple[int, ...], ...]   # core indices, slowest cluster first
    big_cores: tuple[int, ...]
    prime_cores: tuple[int, ...]

    @property
    def big_core_mask(self) -> str:
        """Hex mask for ``taskset`` (no 0x), e.g. "f0" for cores 4-7."""
        return _mask(self.big_cores)

    @property
    def prime_core_mask(self) -> str:
        return _mask(self.prime_cores)


def _mask(indices) -> str:
    value = 0
    for index in indices:
        value |= 1 << index
    return format(value, "x")


@dataclass(frozen=True)
class BatteryStatus:
    level_percent: int
    plugged: bool
    plugged_sources: tuple[str, ...]   # "ac", "usb", "wireless", "dock"
    temperature_c: float | None
    voltage_mv: int | None
    status: str                         # "charging", "discharging", ...


@dataclass(frozen=True)
class Temperature:
    name: str
    type: int
    value_c: float
    status: int

    @property
    def type_name(self) -> str:
        return TEMPERATURE_TYPE_NAMES.get(self.type, f"type{self.type}")


@dataclass(frozen=True)
class ThermalStatus:
    """``dumpsys thermalservice``: overall status and the "Current temperatures from HAL" block.
    ``status`` is None when the device has no thermal service (Android < 10)."""

    status: int | None
    temperatures: tuple[Temperature, ...] = ()

    @property
    def status_name(self) -> str:
        if self.status is None:
            return "unavailable"
        return THERMAL_STATUS_NAMES.get(self.status, f"status{self.status}")

    def hottest(self, type_name: str | None = None) -> Temperature | None:
        """The hottest sensor, optionally of one type ("cpu", "skin", ...)."""
        pool = [t for t in self.temperatures if type_name is None or t.type_name == type_name]
        return max(pool, key=lambda t: t.value_c) if pool else None


@dataclass(frozen=True)
class DeviceSnapshot:
    """Everything the ``devices`` table shows for one device."""

    info: DeviceInfo
    cpu: CpuTopology
    battery: BatteryStatus | None
    thermal: ThermalStatus
    problems: tuple[str, ...] = field(default=())   # facts that could not be read, and why


_GETPROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]\s*$")


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` output ("[key]: [value]" lines) -> dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        match = _GETPROP_LINE.match(line)
        if match:
            props[match.group(1)] = match.group(2)
    return props


def device_info_from_props(serial: str, props: dict[str, str]) -> DeviceInfo:
    sdk_text = props.get("ro.build.version.sdk", "")
    return DeviceInfo(
        serial=serial,
        model=props.get("ro.product.model", ""),
        manufacturer=props.get("ro.product.manufacturer", ""),
        soc_model=props.get("ro.soc.model", ""),
        board_platform=props.get("ro.board.platform", ""),
        abi=props.get("ro.product.cpu.abi", ""),
        sdk_level=int(sdk_text) if sdk_text.isdigit() else 0,
        android_version=props.get("ro.build.version.release", ""),
        is_loopback=props.get("ro.wbmm.loopback", "") == "1",
    )


_CPUFREQ_LINE = re.compile(r"cpu(\d+)/cpufreq/cpuinfo_max_freq\s+(\d+)\s*$")


def parse_cpu_max_freqs(text: str) -> list[CpuCore]:
    """Lines "<path>/cpuN/cpufreq/cpuinfo_max_freq <kHz>" -> cores sorted by index."""
    cores = {}
    for line in text.splitlines():
        match = _CPUFREQ_LINE.search(line.strip())
        if match:
            cores[int(match.group(1))] = CpuCore(int(match.group(1)), int(match.group(2)))
    return [cores[i] for i in sorted(cores)]


def cpu_topology(cores: list[CpuCore]) -> CpuTopology:
    """Group cores into clusters by max frequency (same max clock = same cluster)."""
    by_freq: dict[int, list[int]] = {}
    for core in cores:
        by_freq.setdefault(core.max_freq_khz, []).append(core.index)
    clusters = tuple(tuple(sorted(by_freq[f])) for f in sorted(by_freq))
    if len(clusters) > 1:
        big = tuple(sorted(i for cluster in clusters[1:] for i in cluster))
    else:
        big = tuple(core.index for core in cores)
    prime = clusters[-1] if clusters else ()
    return CpuTopology(cores=tuple(cores), clusters=clusters, big_cores=big, prime_cores=prime)


def _dumpsys_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def parse_dumpsys_battery(text: str) -> BatteryStatus:
    """``dumpsys battery`` -> BatteryStatus (temperature is reported in tenths of a degree)."""
    fields = _dumpsys_fields(text)
    if "level" not in fields:
        raise ValueError("no 'level:' line in dumpsys battery output")
    sources = tuple(name for name, key in (("ac", "ac powered"), ("usb", "usb powered"),
                                           ("wireless", "wireless powered"), ("dock", "dock powered"))
                    if fields.get(key) == "true")
    scale = int(fields.get("scale", "100") or 100)
    level = int(fields["level"])
    temperature = fields.get("temperature")
    voltage = fields.get("voltage")
    status_code = fields.get("status", "1")
    return BatteryStatus(
        level_percent=round(100 * level / scale) if scale else level,
        plugged=bool(sources),
        plugged_sources=sources,
        temperature_c=int(temperature) / 10.0 if temperature and temperature.lstrip("-").isdigit() else None,
        voltage_mv=int(voltage) if voltage and voltage.isdigit() else None,
        status=BATTERY_STATUS_NAMES.get(int(status_code) if status_code.isdigit() else 1, "unknown"),
    )


_TEMPERATURE = re.compile(
    r"Temperature\{mValue=(?P<value>[-0-9.eE]+|NaN), mType=(?P<type>-?\d+), "
    r"mName=(?P<name>[^,]*), mStatus=(?P<status>-?\d+)\}")


def parse_dumpsys_thermalservice(text: str) -> ThermalStatus:
    """Overall "Thermal Status:" and the sensors listed under "Current temperatures from HAL:".

    Other blocks ("Cached temperatures", cooling devices) are ignored on purpose: the
    cached block can be minutes old, the HAL block is read when dumpsys runs."""
    status_match = re.search(r"^\s*Thermal Status:\s*(-?\d+)", text, re.MULTILINE)
    if not status_match:
        return ThermalStatus(status=None)
    temperatures = []
    in_hal_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Current temperatures from HAL"):
            in_hal_block = True
            continue
        if in_hal_block:
            match = _TEMPERATURE.search(stripped)
            if match:
                if match.group("value") != "NaN":
                    temperatures.append(Temperature(match.group("name"), int(match.group("type")),
                                                    float(match.group("value")), int(match.group("status"))))
            elif stripped:
                break   # the next block starts
    return ThermalStatus(status=int(status_match.group(1)), temperatures=tuple(temperatures))
