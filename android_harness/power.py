"""Energy per inference on a phone: a battery sampler and per-rail meters, as a run listener.

With ``--power`` each run's shell command starts a sampler loop on the device
(shell builtins only: ``read`` of ``current_now``/``voltage_now`` and ``/proc/uptime``
every 50 ms, so >= 10 Hz even on slow phones), lets it record an idle baseline
for a few seconds, runs the benchmark, and stops it. Then

    energy per inference = (mean power while running - mean idle power) x run time / runs

with run time / runs = the benchmark's average inference time. Vendors differ in
units (uA or mA, uV or mV) and sign (discharge negative on some): ``calibrate``
reads the supply once per device, decides both from the magnitudes (a Li-ion cell
is 3-4.6 V; a phone that is on draws well above 10 mA) and the sign of the idle
current, and every record carries that calibration and how it was decided.
Readings taken while the phone charges are refused (energy None, with the reason):
``dumpsys battery suspend_input`` is tried first where the build has it, and undone
(``dumpsys battery reset``) at the end of the session. Where the per-rail meters
(``/sys/bus/iio/devices/iio:device*/energy_value``, Pixel 6 and later) are readable,
energy per rail is computed the same way from their counters.

Not for: latency, thermal state (``listeners``) or running the benchmark (``profile``).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, field, replace

from android_harness.listeners import DeviceSession, RunContext, RunListener, RunOutcome
from wbmm_mobile.errors import PowerMeasurementError

__all__ = [
    "SUPPLY_CANDIDATES",
    "Calibration",
    "PowerSample",
    "EnergyEstimate",
    "RailEnergy",
    "decide_calibration",
    "parse_samples",
    "parse_rail_snapshots",
    "estimate_energy",
    "rail_energy",
    "PowerListener",
]

SUPPLY_CANDIDATES = ("/sys/class/power_supply/battery", "/sys/class/power_supply/bms",
                     "/sys/class/power_supply/Battery", "/sys/class/power_supply/main-battery")
RAIL_GLOB = "/sys/bus/iio/devices/iio:device*/energy_value"
MIN_RATE_HZ = 10.0
SAMPLE_PERIOD_S = 0.05


@dataclass(frozen=True)
class Calibration:
    """How raw battery readings become amperes and volts on this device."""

    supply: str
    current_scale: float      # raw current x scale = A
    current_unit: str         # "uA" or "mA"
    voltage_scale: float
    voltage_unit: str         # "uV" or "mV"
    sign: int                 # +1 or -1: makes discharge current positive
    method: str               # how the three were decided, in words
    raw_current_median: float
    raw_voltage_median: float
    charging_at_calibration: bool


@dataclass(frozen=True)
class PowerSample:
    uptime_s: float
    current_raw: float
    voltage_raw: float


@dataclass(frozen=True)
class RailEnergy:
    rail: str
    idle_power_mw: float
    run_power_mw: float
    energy_per_inference_mj: float


@dataclass(frozen=True)
class EnergyEstimate:
    """One run's energy figures. ``energy_per_inference_mj`` is None when refused (``refused``
    says why); ``flags`` lists doubts that did not refuse the figure."""

    energy_per_inference_mj: float | None
    idle_power_mw: float | None
    run_power_mw: float | None
    idle_samples: int
    run_samples: int
    sample_rate_hz: float | None
    refused: str | None = None
    flags: tuple[str, ...] = ()
    rails: tuple[RailEnergy, ...] = field(default=())


def decide_calibration(supply: str, raw_currents: list[float], raw_voltages: list[float],
                       charging: bool) -> Calibration:
    """Units and sign from idle readings. Voltage: a Li-ion cell reads 3.0-4.6 V, i.e.
    3e6-4.6e6 in uV or 3000-4600 in mV. Current: a phone that is on draws > 10 mA, so a
    magnitude >= 10000 can only be uA. Sign: the idle (discharging) current must come out
    positive."""
    if not raw_currents or not raw_voltages:
        raise PowerMeasurementError(f"{supply}: no battery readings to calibrate from")
    current = statistics.median(raw_currents)
    voltage = statistics.median(raw_voltages)
    if abs(voltage) >= 1e5:
        voltage_scale, voltage_unit = 1e-6, "uV"
    else:
        voltage_scale, voltage_unit = 1e-3, "mV"
    if abs(current) >= 1e4:
        current_scale, current_unit = 1e-6, "uA"
    else:
        current_scale, current_unit = 1e-3, "mA"
    sign = -1 if current < 0 else 1
    method = (f"median of {len(raw_currents)} idle readings: voltage {voltage:g} -> {voltage_unit} "
              f"(Li-ion 3-4.6 V), current {current:g} -> {current_unit} (|I| >= 1e4 only fits uA), "
              f"sign {sign:+d} so that discharge is positive")
    if charging:
        method += "; WARNING: calibrated while charging, sign may be inverted"
    return Calibration(supply, current_scale, current_unit, voltage_scale, voltage_unit, sign, method,
                       current, voltage, charging)


_SAMPLE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s+(-?[0-9]+)\s+(-?[0-9]+)\s*$")


def parse_samples(text: str) -> list[PowerSample]:
    """Sampler lines "uptime current voltage"; partial lines (the sampler was killed mid-write)
    are skipped."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples.append(PowerSample(float(match[1]), float(match[2]), float(match[3])))
    return samples


def _power_w(sample: PowerSample, calibration: Calibration) -> float:
    amps = calibration.sign * sample.current_raw * calibration.current_scale
    volts = sample.voltage_raw * calibration.voltage_scale
    return amps * volts


def estimate_energy(samples: list[PowerSample], bench_start: float, bench_end: float,
                    calibration: Calibration, inference_avg_ms: float | None, *,
                    charging: bool = False) -> EnergyEstimate:
    """Energy per inference (mJ) from samples before ``bench_start`` (idle) and between the
    markers (running): (P_run - P_idle) x average inference time."""
    idle = [s for s in samples if s.uptime_s < bench_start]
    running = [s for s in samples if bench_start <= s.uptime_s <= bench_end]
    flags: list[str] = []
    rate = None
    if len(running) >= 2:
        span = running[-1].uptime_s - running[0].uptime_s
        rate = (len(running) - 1) / span if span > 0 else None
    idle_mw = statistics.fmean(_power_w(s, calibration) for s in idle) * 1e3 if idle else None
    run_mw = statistics.fmean(_power_w(s, calibration) for s in running) * 1e3 if running else None
    refused = None
    if charging:
        refused = "the battery was charging: its current is not the phone's consumption"
    elif not idle or len(running) < 2:
        refused = f"too few samples (idle {len(idle)}, running {len(running)}): the run is shorter than the sampler period"
    elif inference_avg_ms is None:
        refused = "no average inference time to divide by"
    if rate is not None and rate < MIN_RATE_HZ:
        flags.append(f"sample rate {rate:.1f} Hz below {MIN_RATE_HZ:g} Hz")
    if len({s.current_raw for s in running}) == 1 and len(running) > 2:
        flags.append("current_now did not change during the run (the fuel gauge may update slowly)")
    energy = None
    if refused is None:
        energy = (run_mw - idle_mw) * inference_avg_ms / 1e3  # mW x ms = uJ; / 1e3 -> mJ
        if energy <= 0:
            flags.append("running power not above idle power: below what this battery meter resolves")
    return EnergyEstimate(energy, idle_mw, run_mw, len(idle), len(running), rate, refused, tuple(flags))


# Pixel ODPM: "t=<ms>" then lines "CH<n>(T=<ms>)[<rail name>], <energy uWs>".
_RAIL_LINE = re.compile(r"^CH\d+\(T=(?P<t>\d+)\)\[(?P<rail>[^\]]+)\],\s*(?P<energy>\d+)\s*$")
_PHASE = re.compile(r"^@@RAILS (?P<phase>\w+)$")


def parse_rail_snapshots(text: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``@@RAILS <phase>`` headers followed by energy_value contents ->
    {phase: {rail: (t_ms, energy_uws)}}."""
    snapshots: dict[str, dict[str, tuple[float, float]]] = {}
    phase = None
    for line in text.splitlines():
        line = line.strip()
        if match := _PHASE.match(line):
            phase = match["phase"]
            snapshots.setdefault(phase, {})
        elif phase and (match := _RAIL_LINE.match(line)):
            snapshots[phase][match["rail"]] = (float(match["t"]), float(match["energy"]))
    return snapshots


def rail_energy(snapshots: dict[str, dict[str, tuple[float, float]]],
                inference_avg_ms: float) -> tuple[RailEnergy, ...]:
    """Per rail: power over the idle window (idle -> start) and the run window (start -> end)
    from the counters (uWs / ms = mW), then (P_run - P_idle) x average inference time."""
    idle, start, end = (snapshots.get(k, {}) for k in ("idle", "start", "end"))
    results = []
    for rail in sorted(set(idle) & set(start) & set(end)):
        (t0, e0), (t1, e1), (t2, e2) = idle[rail], start[rail], end[rail]
        if t1 <= t0 or t2 <= t1:
            continue
        idle_mw = (e1 - e0) / (t1 - t0)
        run_mw = (e2 - e1) / (t2 - t1)
        results.append(RailEnergy(rail, idle_mw, run_mw, (run_mw - idle_mw) * inference_avg_ms / 1e3))
    return tuple(results)


class PowerListener(RunListener):
    """Battery sampler and rail meters around every run (see the module docstring)."""

    name = "energy"

    def __init__(self, idle_seconds: float = 2.0, calibration_samples: int = 10):
        self.idle_seconds = idle_seconds
        self.calibration_samples = calibration_samples

    # -- session -------------------------------------------------------------------------------
    def start_session(self, session: DeviceSession) -> dict:
        device = session.device
        supply = None
        for candidate in SUPPLY_CANDIDATES:
            probe = device.shell(f"cat {candidate}/current_now {candidate}/voltage_now", timeout=30)
            if probe.ok and len(probe.stdout.split()) == 2:
                supply = candidate
                break
        facts: dict = {"supply": supply}
        session.notes["power_supply"] = supply
        if supply is None:
            facts["problem"] = "no readable battery current_now/voltage_now"
            return facts
        battery = device.battery()
        facts["plugged_at_start"] = battery.plugged
        suspended = False
        if battery.plugged:
            # Stops charging while USB stays connected, on builds that have it (Android 12+ userdebug,
            # many Pixels); elsewhere dumpsys answers with an error or unknown command.
            result = device.shell("dumpsys battery suspend_input", timeout=30)
            # Trust the battery, not dumpsys' answer: it worked only if the cell now discharges.
            session.notes["power_suspended_input"] = result.ok
            suspended = result.ok and not self._charging(session)
            if suspended:
                facts["suspend_input"] = "applied"
            else:
                text = " ".join((result.stdout + result.stderr).split())[:120]
                facts["suspend_input"] = (f"unavailable: the battery still charges after "
                                          f"`dumpsys battery suspend_input` (exit {result.exit_code}: {text})")
        session.notes.setdefault("power_suspended_input", suspended)
        try:
            calibration = self._calibrate(session, supply, charging=self._charging(session))
        except PowerMeasurementError as exc:
            # Latency still gets measured; every record says why it has no energy.
            facts["problem"] = str(exc)
            return facts
        session.notes["power_calibration"] = calibration
        facts["calibration"] = asdict(calibration)
        rails = device.shell(f"cat {RAIL_GLOB}", timeout=30)
        session.notes["power_rails"] = rails.ok and bool(parse_rail_snapshots("@@RAILS probe\n" + rails.stdout)
                                                         .get("probe"))
        facts["rails_readable"] = session.notes["power_rails"]
        return facts

    def _charging(self, session: DeviceSession) -> bool:
        status = session.device.shell(f"cat {session.notes['power_supply']}/status", timeout=30)
        return status.ok and status.stdout.strip().lower() == "charging"

    def _calibrate(self, session: DeviceSession, supply: str, charging: bool) -> Calibration:
        n = self.calibration_samples
        script = (f"i=0; while [ $i -lt {n} ]; do read c < {supply}/current_now; read v < {supply}/voltage_now; "
                  f"echo \"0 $c $v\"; i=$((i+1)); sleep 0.1; done")
        result = session.device.shell(script, timeout=60)
        if not result.ok:
            raise PowerMeasurementError(f"{supply}: reading the battery failed: {result.stderr.strip()[:160]}")
        samples = parse_samples(result.stdout)
        return decide_calibration(supply, [s.current_raw for s in samples], [s.voltage_raw for s in samples],
                                  charging)

    def end_session(self, session: DeviceSession) -> None:
        if session.notes.get("power_suspended_input"):
            session.device.shell("dumpsys battery reset", timeout=30)

    # -- runs ------------------------------------------------------------------------------------
    def _paths(self, run: RunContext) -> tuple[str, str]:
        base = f"{run.session.remote_dir}/power/{run.run_id}"
        return f"{base}.samples", f"{base}.rails"

    def before_run(self, run: RunContext) -> None:
        if run.session.notes.get("power_supply"):
            run.blocks["_charging"] = self._charging(run.session)

    def shell_before(self, run: RunContext) -> str:
        supply = run.session.notes.get("power_supply")
        if not supply:
            return ""
        samples, rails = self._paths(run)
        rail_snapshot = (f"echo '@@RAILS {{phase}}' >> {rails}; cat {RAIL_GLOB} >> {rails} 2>/dev/null"
                         if run.session.notes.get("power_rails") else "true")
        return "\n".join([
            f"mkdir -p {run.session.remote_dir}/power; rm -f {samples} {rails}",
            # The sampler: builtins only, so one iteration costs no fork but the sleep.
            # `kill -0 $$`: the loop ends with the run's shell even if the host lost the connection.
            f"( while kill -0 $$ 2>/dev/null; do read up _ < /proc/uptime; read c < {supply}/current_now; "
            f"read v < {supply}/voltage_now; echo \"$up $c $v\"; sleep {SAMPLE_PERIOD_S}; done ) > {samples} 2>/dev/null &",
            "WBMM_SAMPLER=$!",
            rail_snapshot.format(phase="idle"),
            f"sleep {self.idle_seconds}",
            rail_snapshot.format(phase="start"),
        ])

    def shell_after(self, run: RunContext) -> str:
        if not run.session.notes.get("power_supply"):
            return ""
        _, rails = self._paths(run)
        rail_snapshot = (f"echo '@@RAILS end' >> {rails}; cat {RAIL_GLOB} >> {rails} 2>/dev/null"
                         if run.session.notes.get("power_rails") else "true")
        return "\n".join([rail_snapshot, "kill $WBMM_SAMPLER 2>/dev/null; wait $WBMM_SAMPLER 2>/dev/null"])

    def after_run(self, run: RunContext, outcome: RunOutcome) -> dict:
        calibration: Calibration | None = run.session.notes.get("power_calibration")
        if calibration is None:
            return {"energy_per_inference_mj": None,
                    "refused": "no battery calibration: no readable current_now/voltage_now"}
        samples_path, rails_path = self._paths(run)
        samples = parse_samples(run.device.shell(f"cat {samples_path}", timeout=60).stdout)
        latency = run.blocks.get("latency") or {}
        avg_ms = latency.get("avg_ms")
        start, end = outcome.markers.get("bench_start"), outcome.markers.get("bench_end")
        if start is None or end is None:
            estimate = EnergyEstimate(None, None, None, 0, 0, None, refused="run markers missing")
        else:
            estimate = estimate_energy(samples, start, end, calibration, avg_ms,
                                       charging=bool(run.blocks.get("_charging")))
        if run.session.notes.get("power_rails") and avg_ms is not None:
            rails = rail_energy(parse_rail_snapshots(run.device.shell(f"cat {rails_path}", timeout=60).stdout),
                                avg_ms)
            estimate = replace(estimate, rails=rails)
        run.device.shell(f"rm -f {samples_path} {rails_path}", timeout=30)
        block = asdict(estimate)
        block["charging"] = bool(run.blocks.get("_charging"))
        block["calibration"] = {"current_unit": calibration.current_unit, "voltage_unit": calibration.voltage_unit,
                                "sign": calibration.sign, "method": calibration.method}
        return block
