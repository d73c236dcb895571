"""Profile models on Android devices: latency (and energy) per delegate config, with and without WBMM.

``profile(plan)`` runs every (device, model, config, threads) of a ``ProfilePlan``:
one worker thread per device, in parallel. A worker pushes what the device lacks
(models, the ``benchmark_model`` binary, the WBMM delegate for the wbmm config;
content hashes decide), keeps the screen on, then for each run lets the listeners
(``android_harness.listeners``, ``android_harness.power``) prepare, runs ONE shell
command (the listeners' lines, the benchmark pinned to the big cores with
``taskset``, the listeners' closing lines) and appends one record to the results
file the moment the run ends (``android_harness.results``). A benchmark that
crashes or prints garbage is recorded as failed with its output and the rest go
on; a device that disappears stops its worker, keeps what finished and reports
the runs it did not do, which ``resume=True`` completes later.

The benchmark never outlives the harness: its pid is recorded in a file on the device
(``REMOTE_DIR/run-<id>.pid``); an interrupted profile (Ctrl-C, SIGTERM) kills it over a
fresh connection, a run past ``--run-timeout`` is killed the same way, and a worker
that starts on a device kills what a lost earlier profile left running there (a device
runs one profile at a time). The worker removes its temporary files on the device on
every way out (power samples, pid files; the transport removes its own stderr files).

Configs map to benchmark_model flags through one ordered table (``CONFIGS``).
Not for: parsing output (``benchmark_output``), tables (``wbmm_mobile.compare``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import shlex
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from android_harness.device import Device, file_sha256
from android_harness.listeners import (
    CooldownListener, DeviceSession, LatencyListener, RunContext, RunListener, RunOutcome, ScreenOnListener,
    ThermalListener)
from android_harness.results import ResultsStore, RunKey, RunRecord
from wbmm_mobile.errors import (
    BenchmarkError, DelegateNotBuiltError, DeviceError, DeviceTimeoutError, ModelNotFoundError, WbmmError)
from wbmm_mobile.progress import ProgressBar

__all__ = [
    "CONFIGS",
    "ConfigSpec",
    "ProfilePlan",
    "ProfileReport",
    "RunSummary",
    "profile",
    "config_flags",
    "wbmm_delegate_options",
    "find_benchmark_binary",
    "delegate_for_device",
    "elf_abi",
    "check_built_for",
    "BENCHMARK_CACHE_DIR",
    "REMOTE_DIR",
    "runner_script",
    "profile_on_this_computer",
    "profile_phone_or_here",
    "wbmm_custom_ops",
    "attached_phones",
]

REMOTE_DIR = "/data/local/tmp/wbmm"
LOOPBACK_KEY_NOTE = "~/.android/adbkey, created if missing"
# The Android build of the delegate (`make delegate-arm64`, NDK), used for arm64 phones by default.
# Not build/delegates-arm64 (`make delegate-arm64-test`): that one links glibc and does not load on Android.
ARM64_DELEGATE = Path(__file__).resolve().parent.parent / "build" / "android-arm64" / "libwbmm_delegate.so"
# Where a user keeps benchmark_model builds per ABI; nothing is ever downloaded.
BENCHMARK_CACHE_DIR = Path(os.environ.get("WBMM_BENCHMARK_CACHE",
                                          Path.home() / ".cache" / "wbmm-mobile" / "benchmark_model"))


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    description: str
    needs_delegate: bool = False


# The one table of configs, in the order runs and tables use.
CONFIGS: dict[str, ConfigSpec] = {spec.name: spec for spec in [
    ConfigSpec("cpu", "TFLite builtin CPU kernels (--use_xnnpack=false)"),
    ConfigSpec("xnnpack", "XNNPACK delegate (--use_xnnpack=true)"),
    ConfigSpec("nnapi", "NNAPI delegate (--use_nnapi=true, accelerator and execution preference options)"),
    ConfigSpec("gpu", "GPU delegate (--use_gpu=true)"),
    ConfigSpec("wbmm", "the WBMM delegate for the device's ABI (--external_delegate_path) over XNNPACK",
               needs_delegate=True),
]}


def wbmm_delegate_options(threads: int | None, user_options: str | None = None) -> str | None:
    """The ``--external_delegate_options`` of the wbmm config: ``num_threads:<threads>`` merged
    into the user's ``K:V;K:V`` options. The delegate's own pool defaults to 1 thread whatever
    benchmark_model's ``--num_threads`` says, so without this an N-thread wbmm run would time N
    XNNPACK threads against 1 of ours. A ``num_threads`` the user wrote wins."""
    from delegates import parse_options

    options = parse_options(user_options or "")
    if threads is not None and "num_threads" not in options:
        options = {"num_threads": str(threads), **options}
    return ";".join(f"{key}:{value}" for key, value in options.items()) or None


def config_flags(config: str, *, delegate_remote: str | None = None, nnapi_accelerator: str | None = None,
                 nnapi_preference: str | None = None, delegate_options: str | None = None,
                 threads: int | None = None) -> list[str]:
    """benchmark_model flags of one config. ``threads`` (the run's --num_threads) also sets the
    wbmm delegate's num_threads unless ``delegate_options`` names one."""
    if config == "cpu":
        return ["--use_xnnpack=false"]
    if config == "xnnpack":
        return ["--use_xnnpack=true"]
    if config == "nnapi":
        flags = ["--use_nnapi=true"]
        if nnapi_accelerator:
            flags.append(f"--nnapi_accelerator_name={nnapi_accelerator}")
        if nnapi_preference:
            flags.append(f"--nnapi_execution_preference={nnapi_preference}")
        return flags
    if config == "gpu":
        return ["--use_gpu=true"]
    if config == "wbmm":
        if not delegate_remote:
            raise DelegateNotBuiltError("the wbmm config needs the delegate library (--delegate-lib)")
        # benchmark_model applies its delegates in the order their enabling flags appear on
        # the command line (each provider's rank is its flag's argv position), so the WBMM
        # delegate's flag comes first: it picks its nodes, XNNPACK takes the rest. The
        # other way round XNNPACK takes the depthwise convs and claim_depthwise gets none.
        flags = [f"--external_delegate_path={delegate_remote}"]
        options = wbmm_delegate_options(threads, delegate_options)
        if options:
            flags.append(f"--external_delegate_options={options}")
        return flags + ["--use_xnnpack=true"]
    raise ValueError(f"unknown config {config!r}; choose from {', '.join(CONFIGS)}")


# ELF e_machine -> Android ABI, to refuse a library built for another CPU before pushing it.
_ELF_MACHINES = {0x28: "armeabi-v7a", 0xB7: "arm64-v8a", 0x03: "x86", 0x3E: "x86_64"}


def elf_abi(path: str | Path) -> str | None:
    """The Android ABI an ELF file is built for (None when not ELF or unknown machine)."""
    with open(path, "rb") as handle:
        head = handle.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return _ELF_MACHINES.get(machine)


def check_built_for(path: str | Path, device_abi: str | None) -> str | None:
    """The ABI ``path`` is built for (None when unknown); DelegateNotBuiltError when it is known
    and differs from ``device_abi`` (None: any ABI goes)."""
    built_for = elf_abi(path)
    if device_abi and built_for and built_for != device_abi:
        raise DelegateNotBuiltError(f"{path} is built for {built_for}, the device is {device_abi}")
    return built_for


def delegate_for_device(given: str | Path | None, info) -> Path:
    """The delegate library the wbmm config pushes to the device ``info`` describes: ``given``, else
    on the loopback device this computer's build (`make delegate`), else for arm64 the Android build;
    DelegateNotBuiltError saying what to build when there is none."""
    if not given and info.is_loopback:
        # The loopback device runs on this machine: the host build of `make delegate`.
        from delegates import library_path
        given = library_path()
    elif not given and info.abi == "arm64-v8a" and ARM64_DELEGATE.is_file():
        given = ARM64_DELEGATE
    if not given:
        raise DelegateNotBuiltError("the wbmm config needs --delegate-lib PATH (the delegate built for "
                                    f"{info.abi}; `make delegate-arm64 ANDROID_NDK_HOME=...` builds the arm64 one)")
    lib = Path(given)
    if not lib.is_file():
        raise DelegateNotBuiltError(f"{lib}: delegate library not found")
    return lib


def find_benchmark_binary(abi: str, given: str | Path | None = None) -> Path:
    """The benchmark binary: the user's path, else ``BENCHMARK_CACHE_DIR/<abi>/benchmark_model``."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: benchmark binary not found")
        return path
    cached = BENCHMARK_CACHE_DIR / abi / "benchmark_model"
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        f"no benchmark_model for {abi}: pass --benchmark-binary PATH or put one at {cached} "
        "(TFLite's prebuilt android_aarch64_benchmark_model; nothing is downloaded)")


@dataclass(frozen=True)
class ProfilePlan:
    """Everything ``profile`` needs; the CLI builds one from its flags."""

    models: tuple[str, ...]
    out: str
    devices: tuple[str, ...] = ()           # serials; empty with all_devices=False = the only device
    all_devices: bool = False
    adb_server: str | None = None           # host:port of the ADB server
    direct: bool = False                    # devices are host:port adbd addresses, reached without a server
    configs: tuple[str, ...] = ("xnnpack", "wbmm")
    threads: tuple[int, ...] = (1,)
    runs: int = 50
    warmup: int = 5
    power: bool = False
    cooldown: str = "0"                     # seconds, or "temp"
    cooldown_timeout_s: float = 300.0
    benchmark_binary: str | None = None
    delegate_lib: str | None = None
    delegate_options: str | None = None
    nnapi_accelerator: str | None = None
    nnapi_preference: str | None = "sustained_speed"
    resume: bool = False
    run_timeout_s: float = 1800.0
    idle_seconds: float = 2.0
    op_profiling: bool = False


@dataclass(frozen=True)
class RunSummary:
    label: str
    status: str       # "ok", "failed", "skipped", "missing"
    detail: str = ""


@dataclass
class ProfileReport:
    out: str
    results_file: str
    runs: list[RunSummary] = field(default_factory=list)
    device_errors: dict[str, str] = field(default_factory=dict)

    def by_status(self, status: str) -> list[RunSummary]:
        return [r for r in self.runs if r.status == status]

    @property
    def complete(self) -> bool:
        return not self.by_status("missing") and not self.device_errors


@dataclass(frozen=True)
class _Model:
    path: str
    name: str
    sha256: str
    size: int
    wbmm_custom_ops: tuple[str, ...] = ()   # WBMM custom ops in the file: only the wbmm config can run it


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


_MARKER = re.compile(r"^@@WBMM (\w+) ([0-9.]+)\s*$", re.MULTILINE)


def _default_listeners(plan: ProfilePlan) -> list[RunListener]:
    """The ordered listener list: latency first (others read its block), energy after it."""
    if plan.cooldown == "temp":
        cooldown = CooldownListener(mode="temp", timeout_s=plan.cooldown_timeout_s)
    else:
        cooldown = CooldownListener(seconds=float(plan.cooldown), mode="fixed")
    listeners: list[RunListener] = [ScreenOnListener(), cooldown, ThermalListener(), LatencyListener()]
    if plan.power:
        from android_harness.power import PowerListener
        listeners.append(PowerListener(idle_seconds=plan.idle_seconds))
    return listeners


def _connect(serial: str | None, plan: ProfilePlan) -> Device:
    from android_harness.connect import open_transport
    if plan.direct:
        return Device(open_transport(direct=serial))
    return Device(open_transport(serial=serial, adb_server=plan.adb_server))


def _list_devices(plan: ProfilePlan) -> list[str]:
    """Serials of every device the ADB server sees as ready ("device" state)."""
    from android_harness.adbutils_transport import list_server_devices
    return [d.serial for d in list_server_devices(plan.adb_server) if d.state == "device"]


class ProfileInterrupted(Exception):
    """The profile was interrupted: the worker stops; the runs it did not do are reported missing."""


def _kill_pid_lines(pidfile: str) -> str:
    # Only a process that is still a benchmark is killed (its pid may have been reused since).
    return (f'p=$(cat {pidfile} 2>/dev/null); if [ -n "$p" ] && grep -q benchmark /proc/$p/cmdline 2>/dev/null; '
            f'then kill $p 2>/dev/null; sleep 0.2; kill -9 $p 2>/dev/null; fi; rm -f {pidfile}')


def end_recorded_benchmark(device: Device, pidfile: str) -> None:
    """Kill the benchmark whose pid ``pidfile`` on the device holds, and remove the file."""
    try:
        device.shell(_kill_pid_lines(pidfile), timeout=30)
    except (DeviceError, OSError):
        pass   # the device went away: the benchmark went with it, or the next session ends it


def _end_stale_benchmarks(device: Device) -> None:
    """Kill benchmarks an earlier, lost profile left running on the device (their pid files remain)."""
    device.shell(f'for f in {REMOTE_DIR}/run-*.pid; do [ -f "$f" ] || continue; '
                 + _kill_pid_lines('"$f"') + '; done', timeout=60)


def _remove_temporary_files(device: Device) -> None:
    """The worker's temporary files on the device: power samples and pid files (best effort)."""
    try:
        device.shell(f"rm -rf {REMOTE_DIR}/power; rm -f {REMOTE_DIR}/run-*.pid", timeout=30)
    except (DeviceError, OSError):
        pass


class _DeviceWorker:
    """Runs every planned run of one device, in order, appending records as they finish."""

    def __init__(self, serial: str | None, plan: ProfilePlan, models: list[_Model], store: ResultsStore,
                 report: ProfileReport, report_lock: threading.Lock, progress: ProgressBar,
                 listeners: list[RunListener], connect: Callable[[str | None, ProfilePlan], Device]):
        self.serial, self.plan, self.models, self.store = serial, plan, models, store
        self.report, self.report_lock, self.progress = report, report_lock, progress
        self.listeners, self.connect = listeners, connect
        self.interrupted = threading.Event()
        self.pidfile: str | None = None   # the running benchmark's pid file on the device
        self.device: Device | None = None

    def interrupt(self) -> None:
        """Called from another thread when the profile is interrupted: no further run starts, and
        the running benchmark is killed through a connection of its own (the worker's is busy)."""
        self.interrupted.set()
        pidfile, busy = self.pidfile, self.device
        if pidfile is None:
            return
        try:
            device = self.connect(self.serial, self.plan)
        except (DeviceError, OSError):
            device = None   # the device is gone: nothing runs there any more to kill
        if device is not None:
            try:
                end_recorded_benchmark(device, pidfile)
            finally:
                try:
                    device.transport.close()
                except (DeviceError, OSError):
                    pass
        if busy is not None and self.pidfile is not None:
            # Unblocks the worker even if the benchmark had not written its pid yet (a device
            # that does not end a command with its connection is swept at the next session).
            # Only while the worker is still inside the benchmark's command: once it has left it,
            # it sees `interrupted` by itself, and cutting its connection then would cut its
            # clean-up command instead, whose stderr file a late-starting shell can recreate.
            try:
                busy.transport.abort()
            except (DeviceError, OSError):
                pass

    def _note(self, summary: RunSummary) -> None:
        with self.report_lock:
            self.report.runs.append(summary)
        self.progress.advance(f"{summary.status}: {summary.label}")

    def _planned(self) -> list[tuple[_Model, str, int]]:
        return [(m, c, t) for m in self.models for c in self.plan.configs for t in self.plan.threads]

    def run(self) -> None:
        planned = self._planned()
        done_index = 0
        label_serial = self.serial or "device"
        device = None
        try:
            device = self.device = self.connect(self.serial, self.plan)
            info = device.info()
            label_serial = device.serial
            _end_stale_benchmarks(device)
            session = DeviceSession(device=device, info=info, remote_dir=REMOTE_DIR)
            binary, binary_remote, binary_hash = self._push_binary(device, info)
            delegate_remote, delegate_meta = self._push_delegate(device, info)
            model_remote = {m.sha256: self._push_model(device, m) for m in self.models}
            pinning_mask, pinning_note = self._pinning(device, binary_remote)
            done = self.store.done_keys() if self.plan.resume else set()
            session_facts: dict[str, Any] = {}
            try:
                for listener in self.listeners:
                    facts = listener.start_session(session)
                    if facts is not None:
                        session_facts[listener.name] = facts
                for done_index, (model, config, threads) in enumerate(planned):
                    if self.interrupted.is_set():
                        raise ProfileInterrupted("interrupted")
                    key = RunKey(serial=device.serial, model_sha256=model.sha256, config=config, threads=threads,
                                 runs=self.plan.runs, warmup=self.plan.warmup, binary_sha256=binary_hash,
                                 power=self.plan.power)
                    label = f"{device.serial} {model.name} {config} {threads}t"
                    if model.wbmm_custom_ops and not CONFIGS[config].needs_delegate:
                        # benchmark_model would fail to resolve the custom ops: no run, no failed record.
                        self._note(RunSummary(label, "skipped", f"its {', '.join(model.wbmm_custom_ops)} custom "
                                                                "ops run only with the wbmm config"))
                        continue
                    if key in done:
                        self._note(RunSummary(label, "skipped", "done before (--resume)"))
                        continue
                    record = self._one_run(session, key, model, model_remote[model.sha256], config, threads,
                                           binary, binary_remote, binary_hash, delegate_remote, delegate_meta,
                                           pinning_mask, pinning_note, session_facts)
                    if self.interrupted.is_set():
                        raise ProfileInterrupted("interrupted")   # a killed run is no result: not recorded
                    self.store.append(record)
                    self._note(RunSummary(label, record.status, record.error or ""))
                done_index = len(planned)
            finally:
                for listener in self.listeners:
                    try:
                        listener.end_session(session)
                    except (DeviceError, OSError):
                        pass  # the device is gone; nothing left to undo there
                _remove_temporary_files(device)
        except ProfileInterrupted as exc:
            reason = f"interrupted: {exc}"
            with self.report_lock:
                self.report.device_errors[label_serial] = reason
            for model, config, threads in planned[done_index:]:
                self._note(RunSummary(f"{label_serial} {model.name} {config} {threads}t", "missing", reason))
        except (DeviceError, OSError, BenchmarkError, WbmmError) as exc:
            # One line: transports quote the whole (multi-line) run script in their messages.
            message = re.sub(r"`[^`]{60,}`", "`<run script>`", str(exc), flags=re.DOTALL)
            reason = f"{type(exc).__name__}: {' '.join(message.split())}"
            if self.interrupted.is_set():
                reason = "interrupted"
            with self.report_lock:
                self.report.device_errors[label_serial] = reason
            for model, config, threads in planned[done_index:]:
                self._note(RunSummary(f"{label_serial} {model.name} {config} {threads}t", "missing", reason))
        finally:
            if device is not None:
                try:
                    device.transport.close()
                except (DeviceError, OSError):
                    pass

    # -- pushing -------------------------------------------------------------------------------
    def _push_binary(self, device: Device, info) -> tuple[Path, str, str]:
        abi = platform.machine() if info.is_loopback else info.abi
        binary = find_benchmark_binary(abi, self.plan.benchmark_binary)
        remote = f"{REMOTE_DIR}/bin/benchmark_model"
        synced = device.sync_file(binary, remote, mode=0o755)
        device.run(["chmod", "755", remote], timeout=60)
        return binary, remote, synced.sha256

    def _push_delegate(self, device: Device, info) -> tuple[str | None, dict | None]:
        if "wbmm" not in self.plan.configs:
            return None, None
        lib = delegate_for_device(self.plan.delegate_lib, info)
        self.plan = replace(self.plan, delegate_lib=str(lib))
        lib_abi = check_built_for(lib, None if info.is_loopback else info.abi)
        remote = f"{REMOTE_DIR}/lib/{lib_abi or 'unknown'}/{lib.name}"
        synced = device.sync_file(lib, remote, mode=0o755)
        return remote, {"path": str(lib), "sha256": synced.sha256, "abi": lib_abi, "remote": remote}

    def _push_model(self, device: Device, model: _Model) -> str:
        # Content-addressed name: the same bytes are never pushed twice, renamed files too.
        remote = f"{REMOTE_DIR}/models/{model.sha256[:16]}.tflite"
        device.sync_file(model.path, remote)
        return remote

    def _pinning(self, device: Device, binary_remote: str) -> tuple[str | None, str]:
        try:
            mask = device.cpu_topology().big_core_mask
        except DeviceError as exc:
            return None, f"unpinned: no CPU topology ({exc})"
        probe = device.shell(f"taskset {mask} true", timeout=30)
        if not probe.ok:
            return None, f"unpinned: taskset {mask} failed ({(probe.stderr or probe.stdout).strip()[:120]})"
        return mask, f"taskset {mask} (big cores)"

    # -- one run -------------------------------------------------------------------------------
    def _one_run(self, session: DeviceSession, key: RunKey, model: _Model, model_remote: str, config: str,
                 threads: int, binary: Path, binary_remote: str, binary_hash: str, delegate_remote: str | None,
                 delegate_meta: dict | None, mask: str | None, pinning_note: str,
                 session_facts: dict) -> RunRecord:
        plan = self.plan
        started = _now()
        run_id = f"{model.sha256[:8]}-{config}-{threads}t-{os.getpid()}-{threading.get_ident() % 10000}"
        run = RunContext(session=session, run_id=run_id, model_name=model.name, config=config, threads=threads,
                         runs=plan.runs, warmup=plan.warmup)
        info = session.info
        flags = config_flags(config, delegate_remote=delegate_remote, nnapi_accelerator=plan.nnapi_accelerator,
                             nnapi_preference=plan.nnapi_preference, delegate_options=plan.delegate_options,
                             threads=threads)
        if plan.op_profiling:
            # Per-op times (CSV tables) land in the record's latency block; they slow the runs a little.
            flags += ["--enable_op_profiling=true", "--op_profiling_output_mode=csv"]
        argv = [binary_remote, f"--graph={model_remote}", f"--num_threads={threads}",
                f"--num_runs={plan.runs}", f"--warmup_runs={plan.warmup}", *flags]
        benchmark = shlex.join(argv)
        pidfile = f"{REMOTE_DIR}/run-{run_id}.pid"
        if mask:
            benchmark = f"taskset {mask} {benchmark}"
        plugged = None
        record = RunRecord(
            key=key, status="ok",
            device={"serial": info.serial, "model": info.model, "manufacturer": info.manufacturer, "soc": info.soc,
                    "abi": info.abi, "sdk": info.sdk_level, "android_version": info.android_version,
                    "loopback": info.is_loopback},
            model=asdict(model), binary={"path": str(binary), "sha256": binary_hash, "remote": binary_remote},
            config=config, flags=flags, threads=threads, started_at=started, finished_at=started,
            pinning=pinning_note, delegate_lib=delegate_meta if config == "wbmm" else None)
        record.extra["session"] = session_facts
        try:
            try:
                plugged = session.device.battery().plugged
            except DeviceError:
                plugged = None
            record.plugged = plugged
            for listener in self.listeners:
                listener.before_run(run)
            script = "\n".join(filter(None, [
                *(listener.shell_before(run) for listener in self.listeners),
                'read WBMM_T _ < /proc/uptime; echo "@@WBMM bench_start $WBMM_T"',
                # In the background with its pid on record, so an interrupted harness can kill it.
                f"{benchmark} 2>&1 &",
                "WBMM_PID=$!",
                f"echo $WBMM_PID > {pidfile}",
                "wait $WBMM_PID",
                "WBMM_RC=$?",
                f"rm -f {pidfile}",
                'read WBMM_T _ < /proc/uptime; echo "@@WBMM bench_end $WBMM_T"',
                *(listener.shell_after(run) for listener in self.listeners),
                "exit $WBMM_RC",
            ]))
            self.pidfile = pidfile
            try:
                result = session.device.shell(script, timeout=plan.run_timeout_s)
            except DeviceTimeoutError as exc:
                # The device still answers: this run hung (a delegate stuck, a huge model); end it, the others go on.
                end_recorded_benchmark(session.device, pidfile)
                raise BenchmarkError(f"no result within --run-timeout {plan.run_timeout_s:g} s ({exc})",
                                     output="") from exc
            finally:
                self.pidfile = None
            if self.interrupted.is_set():
                raise ProfileInterrupted("interrupted while the benchmark ran")
            output = result.stdout + (("\n" + result.stderr) if result.stderr else "")
            markers = {m[1]: float(m[2]) for m in _MARKER.finditer(result.stdout)}
            outcome = RunOutcome(exit_code=result.exit_code, output=output, markers=markers)
            failure: BenchmarkError | None = None
            for listener in self.listeners:
                # Every listener sees the end of the run, even after another one failed it,
                # so samplers clean up and thermal state is still recorded.
                try:
                    block = listener.after_run(run, outcome)
                except BenchmarkError as exc:
                    failure = failure or exc
                    continue
                if block is not None:
                    run.blocks[listener.name] = block
            if failure is not None:
                raise failure
            if result.exit_code != 0:
                raise BenchmarkError(f"benchmark exited with code {result.exit_code}", output=output)
        except BenchmarkError as exc:
            record.status = "failed"
            record.error = str(exc)
            record.output = exc.output
        record.latency = run.blocks.get("latency")
        record.thermal = run.blocks.get("thermal")
        record.energy = run.blocks.get("energy")
        record.cooldown = run.blocks.get("cooldown")
        record.finished_at = _now()
        return record


def _load_models(paths: Sequence[str]) -> list[_Model]:
    models = []
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise ModelNotFoundError(f"{file}: no such model file")
        with open(file, "rb") as handle:
            head = handle.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            from wbmm_mobile.errors import CorruptModelError
            raise CorruptModelError(f"{file}: not a .tflite model (no 'TFL3' flatbuffer identifier)")
        models.append(_Model(str(file.resolve()), file.stem, file_sha256(file), file.stat().st_size,
                             wbmm_custom_ops(file)))
    return models


def wbmm_custom_ops(path: str | Path) -> tuple[str, ...]:
    """The WBMM custom ops (``converters.custom_ops``) a .tflite file uses, e.g. ``("WBMM",)``."""
    from ai_edge_litert.schema_py_generated import Model

    from converters.custom_ops import CUSTOM_OP_NAMES

    tree = Model.GetRootAs(Path(path).read_bytes(), 0)
    codes = {tree.OperatorCodes(i).CustomCode() for i in range(tree.OperatorCodesLength())}
    names = {code.decode() for code in codes if code}
    return tuple(name for name in CUSTOM_OP_NAMES if name in names)


def profile(plan: ProfilePlan, *, progress: bool | Callable[[str], None] = True,
            listeners: Callable[[ProfilePlan], list[RunListener]] | None = None,
            connect: Callable[[str | None, ProfilePlan], Device] | None = None) -> ProfileReport:
    """Run the plan; returns what was done, skipped, failed and missing. Records are already
    on disk (``<out>/runs.jsonl``) when this returns, and each one was written as its run ended."""
    unknown = [c for c in plan.configs if c not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if not plan.models:
        raise ValueError("no model to profile")
    if plan.cooldown != "temp":
        try:
            float(plan.cooldown)
        except ValueError:
            raise ValueError(f"--cooldown must be seconds or 'temp', got {plan.cooldown!r}") from None
    models = _load_models(plan.models)
    serials: list[str | None] = list(plan.devices) or ([None] if not plan.all_devices else [])
    if plan.all_devices:
        serials = list(_list_devices(plan))
        if not serials:
            from wbmm_mobile.errors import DeviceNotFoundError
            raise DeviceNotFoundError("no device attached (`adb devices` lists none)")
    store = ResultsStore(plan.out)
    report = ProfileReport(out=str(plan.out), results_file=str(store.path))
    total = len(serials) * len(models) * len(plan.configs) * len(plan.threads)
    bar = ProgressBar(progress is True, total, "profiling", transient=False,
                      callback=(lambda _done, _total, label: progress(label)) if callable(progress) else None)
    lock = threading.Lock()
    make_listeners = listeners or _default_listeners
    stack = contextlib.ExitStack()
    workers = [_DeviceWorker(serial, plan, models, store, report, lock, bar, make_listeners(plan),
                             connect or _connect) for serial in serials]
    pool = ThreadPoolExecutor(max_workers=max(1, len(workers)), thread_name_prefix="wbmm-device")
    try:
        stack.enter_context(_sigterm_interrupts())
        for future in [pool.submit(worker.run) for worker in workers]:
            future.result()
    except BaseException:
        # Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the CLI): end every device's running
        # benchmark now, so none keeps running beside a resumed profile.
        for worker in workers:
            worker.interrupt()
        raise
    finally:
        pool.shutdown(wait=True)
        stack.close()
        bar.close()
    return report


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM ends a profile the way Ctrl-C does (benchmarks killed, files removed), when it
    runs in the main thread and nobody else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def runner_script(path: str | Path, python: str | None = None) -> Path:
    """Write the loopback device's ``benchmark_model``: a script that execs
    ``wbmm-mobile-benchmark`` (this venv's interpreter) with the same arguments."""
    import sys

    path = Path(path)
    # The loopback shell has a minimal environment: name the checkout this harness runs from.
    checkout = Path(__file__).resolve().parent.parent
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{checkout}" exec "{python or sys.executable}" '
                    '-m android_harness.linux_benchmark "$@"\n')
    path.chmod(0o755)
    return path


def profile_on_this_computer(models: Sequence[str], out: str | Path, *, configs: Sequence[str] = ("xnnpack", "wbmm"),
                             threads: Sequence[int] = (1,), runs: int = 50, warmup: int = 5,
                             progress: bool | Callable[[str], None] = True, **plan_options) -> ProfileReport:
    """``profile`` on a loopback device started for the purpose (describing this computer truthfully:
    its ABI, CPU model, 'loopback' in the model name; ``wbmm-mobile-benchmark`` as the binary): what
    ``make demo`` runs when no phone is connected. It authenticates with the user's adb key
    (``~/.android/adbkey``, created with mode 0600 when missing, as adb does).
    Records carry ``device.loopback = True`` and ``compare`` labels them as this computer's numbers.
    No resume: each call gets a fresh device on a free port, hence a new serial. ``plan_options``
    are further ``ProfilePlan`` fields (power, delegate_options, run_timeout_s...)."""
    import tempfile

    from android_harness.loopback.daemon import LoopbackDevice

    with tempfile.TemporaryDirectory(prefix="wbmm-loopback-") as scratch:
        binary = runner_script(Path(scratch) / "benchmark_model")
        with LoopbackDevice(Path(scratch) / "root") as device:
            plan = ProfilePlan(models=tuple(str(m) for m in models), out=str(out), devices=(device.serial,),
                               direct=True, configs=tuple(configs), threads=tuple(threads), runs=runs,
                               warmup=warmup, benchmark_binary=str(binary), **plan_options)
            return profile(plan, progress=progress)


def attached_phones(adb_server: str | None = None, devices: Sequence[str] = ()) -> list[str]:
    """The phones ``profile_phone_or_here`` would use: every ready device the ADB server lists (none
    when no server answers), or ``devices``, each of which must be listed (DeviceNotFoundError)."""
    try:
        serials = _list_devices(ProfilePlan(models=(), out="", adb_server=adb_server))
    except (DeviceError, OSError):
        serials = []   # no ADB server running: no phone
    if devices:
        absent = [s for s in devices if s not in serials]
        if absent:
            from wbmm_mobile.errors import DeviceNotFoundError
            raise DeviceNotFoundError(f"device {', '.join(absent)} is not attached (the ADB server lists "
                                      f"{', '.join(serials) or 'none'})")
        serials = list(devices)
    return serials


def profile_phone_or_here(models: Sequence[str], out: str | Path, *, benchmark_binary: str | None = None,
                          adb_server: str | None = None, configs: Sequence[str] = ("xnnpack", "wbmm"),
                          threads: Sequence[int] = (1,), runs: int = 50, warmup: int = 5,
                          progress: bool | Callable[[str], None] = True, devices: Sequence[str] = (),
                          announce: Callable[[str], None] | None = None,
                          **plan_options) -> tuple[str, ProfileReport]:
    """What ``make demo`` does after converting: profile on the connected phone(s) when the ADB
    server lists one and a benchmark_model for it is at hand (given, or in the cache folder),
    otherwise on a loopback device here. Returns (where, report); ``where`` says which, in words.
    ``devices`` (serials) restricts the phones used; one the server does not list is an error,
    not a silent fall-back. ``announce`` hears, before it starts, that a loopback device is started
    and why. ``plan_options`` are further ``ProfilePlan`` fields for both cases."""
    serials = attached_phones(adb_server, devices)
    if serials:
        try:
            if not benchmark_binary:
                find_benchmark_binary("arm64-v8a")
            phone_configs, unbuilt = tuple(configs), ""
            if "wbmm" in phone_configs and not plan_options.get("delegate_lib") and not ARM64_DELEGATE.is_file():
                # Without a phone build of the delegate every run of the device would be lost; run the rest.
                phone_configs = tuple(c for c in phone_configs if c != "wbmm")
                unbuilt = (f" (no wbmm config: {ARM64_DELEGATE} is not built; "
                           "`make delegate-arm64 ANDROID_NDK_HOME=...` builds it)")
            plan = ProfilePlan(models=tuple(str(m) for m in models), out=str(out), devices=tuple(serials),
                               adb_server=adb_server, configs=phone_configs, threads=tuple(threads), runs=runs,
                               warmup=warmup, benchmark_binary=benchmark_binary, **plan_options)
            return f"phone(s) {', '.join(serials)}{unbuilt}", profile(plan, progress=progress)
        except FileNotFoundError as exc:
            where = f"this computer (loopback device): a phone is connected but {exc}"
    else:
        where = "this computer (loopback device): no phone connected"
    if announce is not None:
        announce(f"starting a loopback ADB device on 127.0.0.1 (its shell is this computer's, open only to your "
                 f"adb key {LOOPBACK_KEY_NOTE}) because {where.split(': ', 1)[1]}")
    return where, profile_on_this_computer(models, out, configs=configs, threads=threads, runs=runs,
                                           warmup=warmup, progress=progress, **plan_options)
