"""How samplers hook into a benchmark run: the listener interface, and the latency,
thermal, cool-down and screen listeners.

A profile run is one shell command on the device. Listeners see it at fixed points
(TFLite's ``BenchmarkListener`` idea): once per device session (``start_session`` /
``end_session``), before the command (``before_run``, host side: read the
temperature, wait for a cool-down), inside the command (``shell_before`` /
``shell_after``: shell lines around the benchmark, so a power sampler runs in the
same command as the benchmark), and after it (``after_run``: turn what was measured
into one block of the result record). The run loop calls every listener at every
point, in order, with no per-listener branches; a listener that has nothing to do
at a point returns ``""`` or ``None``. Power sampling lives in
``android_harness.power``; not here: pushing files, building flags, records.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from android_harness.benchmark_output import BenchmarkOutput, parse_benchmark_output

__all__ = [
    "DeviceSession",
    "RunContext",
    "RunOutcome",
    "RunListener",
    "LatencyListener",
    "ThermalListener",
    "CooldownListener",
    "ScreenOnListener",
    "thermal_block",
]


@dataclass
class DeviceSession:
    """One device for the length of a profile: its facts and what listeners learnt once."""

    device: Any                  # android_harness.device.Device
    info: Any                    # DeviceInfo
    remote_dir: str              # e.g. /data/local/tmp/wbmm
    notes: dict[str, Any] = field(default_factory=dict)   # per-session facts listeners share


@dataclass
class RunContext:
    """One (model, config, threads) run on one device."""

    session: DeviceSession
    run_id: str
    model_name: str
    config: str
    threads: int
    runs: int
    warmup: int
    blocks: dict[str, Any] = field(default_factory=dict)   # record blocks produced so far, by listener

    @property
    def device(self):
        return self.session.device


@dataclass(frozen=True)
class RunOutcome:
    """What the shell command returned. ``markers`` are the ``@@WBMM name value`` lines the
    run loop prints around the benchmark (device uptime in seconds)."""

    exit_code: int
    output: str
    markers: dict[str, float]

    @property
    def benchmark_seconds(self) -> float | None:
        start, end = self.markers.get("bench_start"), self.markers.get("bench_end")
        return None if start is None or end is None else end - start


class RunListener:
    """Base listener: every hook does nothing. Subclasses override what they need."""

    name = "listener"

    def start_session(self, session: DeviceSession) -> dict | None:
        """Once per device before the first run; may return session facts to record."""
        return None

    def before_run(self, run: RunContext) -> None:
        """Host side, before the run's shell command."""

    def shell_before(self, run: RunContext) -> str:
        """Shell lines run in the same command, before the benchmark starts."""
        return ""

    def shell_after(self, run: RunContext) -> str:
        """Shell lines run in the same command, after the benchmark ends."""
        return ""

    def after_run(self, run: RunContext, outcome: RunOutcome) -> dict | None:
        """The block this listener adds to the run's record (None: no block).
        Raising a ``BenchmarkError`` marks the run failed."""
        return None

    def end_session(self, session: DeviceSession) -> None:
        """Once per device after the last run (also after a failure): undo what start_session did."""


class LatencyListener(RunListener):
    """Parses benchmark_model's output into the ``latency`` block (all statistics, ms)."""

    name = "latency"

    def after_run(self, run: RunContext, outcome: RunOutcome) -> dict:
        parsed = parse_benchmark_output(outcome.output)  # raises BenchmarkError with the device's words
        run.blocks["_parsed"] = parsed
        return latency_block(parsed)


def _ms(value_us: float | None) -> float | None:
    return None if value_us is None else value_us / 1e3


def latency_block(parsed: BenchmarkOutput) -> dict:
    """The record's latency statistics in milliseconds, plus delegate coverage and memory."""
    stats = parsed.inference
    block = {
        "summary_format": parsed.summary_format,
        "init_ms": _ms(parsed.init_us),
        "first_ms": _ms(parsed.first_inference_us),
        "warmup_avg_ms": _ms(parsed.warmup_avg_us),
        "avg_ms": _ms(parsed.inference_avg_us),
        "count": stats.count if stats else None,
    }
    for key in ("min", "max", "std", "p5", "median", "p95"):
        block[f"{key}_ms"] = _ms(getattr(stats, f"{key}_us")) if stats else None
    block["warmup_count"] = parsed.warmup.count if parsed.warmup else None
    block["delegates"] = [asdict(d) for d in parsed.delegates]
    block["replacements"] = [asdict(r) for r in parsed.replacements]
    block["memory"] = asdict(parsed.memory) if parsed.memory else None
    block["model_size_mb"] = parsed.model_size_mb
    # Op profiling (when asked for): time per node type over the regular runs, slowest first.
    block["op_types"] = [{"node_type": t.node_type, "count": t.count, "avg_ms": t.avg_ms, "percent": t.percent}
                         for t in parsed.op_types if t.section == "regular"]
    return block


def thermal_block(thermal) -> dict:
    """A ThermalStatus as plain data: status code and name, hottest sensor overall and per type."""
    hottest = thermal.hottest()
    return {
        "status": thermal.status,
        "status_name": thermal.status_name,
        "hottest_c": hottest.value_c if hottest else None,
        "hottest_sensor": hottest.name if hottest else None,
        "cpu_c": (thermal.hottest("cpu").value_c if thermal.hottest("cpu") else None),
        "skin_c": (thermal.hottest("skin").value_c if thermal.hottest("skin") else None),
    }


class ThermalListener(RunListener):
    """Thermal status before and after each run; ``throttled`` when the status rose or is
    at least "moderate" (2) after the run."""

    name = "thermal"

    def before_run(self, run: RunContext) -> None:
        run.blocks["_thermal_before"] = thermal_block(run.device.thermal())

    def after_run(self, run: RunContext, outcome: RunOutcome) -> dict:
        before = run.blocks.get("_thermal_before") or {}
        after = thermal_block(run.device.thermal())
        status_before, status_after = before.get("status"), after.get("status")
        rose = status_before is not None and status_after is not None and status_after > status_before
        return {"before": before, "after": after, "status_rose": rose,
                "throttled": rose or (status_after is not None and status_after >= 2)}


class CooldownListener(RunListener):
    """Waits before each run: a fixed number of seconds, or (``mode='temp'``) until the
    hottest CPU/skin temperature is back within ``tolerance_c`` of the value read before
    the session's first run, giving up after ``timeout_s``."""

    name = "cooldown"

    def __init__(self, seconds: float = 0.0, mode: str = "fixed", tolerance_c: float = 1.0,
                 timeout_s: float = 300.0, poll_s: float = 5.0, sleep: Callable[[float], None] = time.sleep):
        if mode not in ("fixed", "temp"):
            raise ValueError(f"cooldown mode must be 'fixed' or 'temp', got {mode!r}")
        self.seconds, self.mode, self.tolerance_c = seconds, mode, tolerance_c
        self.timeout_s, self.poll_s, self.sleep = timeout_s, poll_s, sleep

    @staticmethod
    def _temperature(device) -> float | None:
        thermal = device.thermal()
        sensor = thermal.hottest("cpu") or thermal.hottest("skin") or thermal.hottest()
        return sensor.value_c if sensor else None

    def start_session(self, session: DeviceSession) -> dict:
        baseline = self._temperature(session.device) if self.mode == "temp" else None
        session.notes["cooldown_baseline_c"] = baseline
        session.notes["cooldown_runs"] = 0
        return {"mode": self.mode, "seconds": self.seconds, "baseline_c": baseline,
                "tolerance_c": self.tolerance_c, "timeout_s": self.timeout_s}

    def before_run(self, run: RunContext) -> None:
        notes = run.session.notes
        first = notes.get("cooldown_runs", 0) == 0
        notes["cooldown_runs"] = notes.get("cooldown_runs", 0) + 1
        began = time.monotonic()
        reached, temperature = True, None
        if self.mode == "fixed":
            if not first and self.seconds > 0:
                self.sleep(self.seconds)
        else:
            baseline = notes.get("cooldown_baseline_c")
            temperature = self._temperature(run.device)
            reached = baseline is None or temperature is None or temperature <= baseline + self.tolerance_c
            while not reached and time.monotonic() - began < self.timeout_s:
                self.sleep(self.poll_s)
                temperature = self._temperature(run.device)
                reached = temperature is None or temperature <= baseline + self.tolerance_c
        run.blocks["_cooldown"] = {"waited_s": round(time.monotonic() - began, 3), "reached": reached,
                                   "temperature_c": temperature}

    def after_run(self, run: RunContext, outcome: RunOutcome) -> dict:
        return run.blocks.get("_cooldown", {})


class ScreenOnListener(RunListener):
    """Keeps the screen on for the session (``svc power stayon true``) and restores it.
    Some builds (and the loopback device) have no ``svc``: that is recorded, not fatal."""

    name = "screen"

    def start_session(self, session: DeviceSession) -> dict:
        stayon = session.device.shell("svc power stayon true", timeout=30)
        wake = session.device.shell("input keyevent KEYCODE_WAKEUP", timeout=30)
        session.notes["screen_stayon_set"] = stayon.ok
        return {"stay_on": stayon.ok, "wakeup": wake.ok,
                "detail": "" if stayon.ok else (stayon.stderr or stayon.stdout).strip()[:200]}

    def end_session(self, session: DeviceSession) -> None:
        if session.notes.get("screen_stayon_set"):
            session.device.shell("svc power stayon false", timeout=30)
