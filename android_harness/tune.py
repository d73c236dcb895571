"""Tune on the device: time every exact rewrite of a model's large depthwise layers on one phone.

``tune(TunePlan)`` does, in order:

1. collect every distinct large-depthwise layer of the models (height, width, channels,
   kernel, dilation, padding, dtype) with the rewriter's own matcher and checks
   (``converters/rewrites/_depthwise.py``);
2. build one one-layer model per (layer, candidate): the layer kept as it is
   (``depthwise``, the layer's own weights) and each exact strategy the target can run,
   made by the real rewrite passes, and check each candidate against the kept layer on
   this computer with the shared verifier (``converters.verify``); a strategy that refuses
   the layer or disagrees is recorded as refused, with the reason, and not timed;
3. read the device's identity from its own answers (getprop), then time the candidates
   there with ``android_harness.profile`` itself: the same push by content hash, runner,
   warm-up, median of runs, cool-down and big-core pinning as ``wbmm-mobile profile``;
4. after each timed run, write the table (``converters.strategy_table``) atomically, so a
   lost device or Ctrl-C keeps every finished measurement, and ``resume=True`` times only
   what the table lacks. A copy goes to the user's cache, where ``rewrite --device
   SERIAL`` finds it.

Only targets whose ``auto`` choice is a measurement are tuned (``TUNABLE_TARGETS``); the
others follow fixed rules of what their runtime accepts (``converters.strategy``).
Not for: picking (``converters.strategy``) or the table format (``converters.strategy_table``).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from android_harness.device import file_sha256
from android_harness.profile import ProfilePlan, RunSummary, _connect, find_benchmark_binary, profile
from android_harness.results import ResultsStore
from converters import strategy_table
from converters.strategy_table import KEEP, DeviceIdentity, Entry, TableFile
from wbmm_mobile import backends
from wbmm_mobile.errors import ModelNotFoundError, StrategyTableError
from wbmm_mobile.progress import ProgressBar

TUNABLE_TARGETS = ("xnnpack", "cpu")
# The strategies timed against keeping the layer; builtin_kernel on cpu would be the kept conv again.
CANDIDATES = {"xnnpack": ("split", "dilated", "halo", "builtin_kernel"), "cpu": ("split", "dilated", "halo")}


@dataclass(frozen=True)
class TunePlan:
    """Everything ``tune`` needs; the CLI builds one from its flags."""

    models: tuple[str, ...]
    out: str
    device: str | None = None               # serial; None = the only attached device
    adb_server: str | None = None
    direct: bool = False
    target: str = "xnnpack"
    threads: tuple[int, ...] = (1,)
    runs: int = 50
    warmup: int = 5
    cooldown: str = "0"
    min_kernel: int = 7
    benchmark_binary: str | None = None
    resume: bool = False
    run_timeout_s: float = 1800.0
    cache_dir: str | None = None            # None: converters.strategy_table.CACHE_DIR
    cache: bool = True                      # keep a copy of the device's table in the cache
    work_dir: str | None = None             # candidate models and raw run records; None: a temporary folder


@dataclass(frozen=True)
class LayerKey:
    height: int
    width: int
    channels: int
    kernel: int
    dilation: int
    padding: str
    dtype: str

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in strategy_table.LAYER_KEY}

    @property
    def label(self) -> str:
        return f"{self.height}x{self.width}x{self.channels}_k{self.kernel}_{self.padding.lower()}_{self.dtype}"


@dataclass
class TuneLayer:
    """One distinct layer, the first occurrence's weights, and where it occurs."""

    key: LayerKey
    kernel: np.ndarray          # (kh, kw, C), float32 or float16 as stored
    bias: np.ndarray | None
    activation: int
    used_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    layer: LayerKey
    strategy: str
    path: str
    sha256: str
    max_rel: float


@dataclass
class TuneReport:
    out: str
    identities: list[DeviceIdentity] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)        # labels of the distinct layers tuned
    skipped_layers: list[str] = field(default_factory=list)  # layers not tuned, with why
    candidates: int = 0
    timed: int = 0
    resumed: int = 0
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    device_error: str | None = None
    cache_copy: str | None = None
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.missing and self.device_error is None


# --------------------------------------------------------------------------- layers and candidates

def collect_layers(models: Sequence[str], min_kernel: int = 7) -> tuple[list[TuneLayer], list[str]]:
    """The distinct layers the rewriter would consider, and the ones it would leave alone (why)."""
    from converters import tflite_io
    from converters.rewrites import _depthwise

    layers: dict[LayerKey, TuneLayer] = {}
    skipped: list[str] = []
    for path in models:
        if not Path(path).is_file():
            raise ModelNotFoundError(f"{path}: no such model file")
        model = tflite_io.read_model(path)
        for g, graph in enumerate(model.subgraphs):
            for index in range(len(graph.operators or [])):
                layer = _depthwise.match(model, g, index)
                if layer is None:
                    continue
                where = f"{Path(path).name}:{layer.name}"
                reason = _depthwise.check_common(layer, min_kernel)
                if reason is None and layer.precision == "int8":
                    reason = "int8: tuning builds float one-layer models only; float timings answer for it"
                if reason:
                    skipped.append(f"{where}: {reason}")
                    continue
                _, height, width, channels = layer.x.shape
                key = LayerKey(height, width, channels, max(layer.kernel_size), layer.dilation[0],
                               layer.padding_name, layer.precision)
                if key not in layers:
                    dtype = np.float16 if layer.weights_float16 else np.float32
                    layers[key] = TuneLayer(key, layer.kernel.astype(dtype), layer.bias, layer.activation)
                layers[key].used_by.append(where)
    return list(layers.values()), skipped


def build_candidates(layer: TuneLayer, target: str, folder: Path) -> tuple[list[Candidate], dict[str, str]]:
    """The kept layer and each strategy's rewrite of it as files in ``folder``, each checked against
    the kept layer; {strategy: why} for the ones that refused it or disagreed."""
    from converters import verify
    from converters.layer_models import single_layer_model
    from converters.rewrite import RewriteOptions, rewrite_model

    key = layer.key
    stock = single_layer_model((1, key.height, key.width, key.channels), layer.kernel, layer.bias, key.padding,
                               layer.activation)
    kernels = "cpu" if target == "cpu" else "xnnpack"
    built: list[tuple[str, bytes, float]] = [(KEEP, stock, 0.0)]
    refused: dict[str, str] = {}
    for name in CANDIDATES[target]:
        result = rewrite_model(stock, RewriteOptions(strategy=name, target=target, min_kernel=1, verify=False))
        if not any(entry.rewritten for entry in result.report.layers):
            refused[name] = result.report.layers[0].reason if result.report.layers else "no layer matched"
            continue
        check = verify.verify_tflite_against_tflite(stock, result.model, precision="float32", kernels=kernels,
                                                    enforce=False)
        if not check.passed:
            refused[name] = f"disagrees with the kept layer: {check.summary()}"
            continue
        built.append((name, result.model, check.max_rel))
    candidates = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, max_rel in built:
        path = folder / f"{key.label}_{name}.tflite"
        path.write_bytes(data)
        candidates.append(Candidate(key, name, str(path), file_sha256(path), max_rel))
    return candidates, refused


# --------------------------------------------------------------------------- identity

def device_identities(plan: TunePlan) -> list[DeviceIdentity]:
    """One identity per thread count, from what the device answers (getprop) and the binary that will time it."""
    from wbmm_mobile import __version__

    device = _connect(plan.device, _profile_plan(plan, (), plan.threads[0], ""))
    try:
        props = device.getprops()
        info = device.info()
    finally:
        device.transport.close()
    binary = find_benchmark_binary(platform.machine() if info.is_loopback else info.abi, plan.benchmark_binary)
    runtime = binary.name
    if info.is_loopback:
        from importlib.metadata import PackageNotFoundError, version
        try:
            runtime += f" (wbmm-mobile-benchmark on ai-edge-litert {version('ai-edge-litert')})"
        except PackageNotFoundError:
            pass
    return [DeviceIdentity(serial=info.serial, hardware_serial=props.get("ro.serialno", ""), model=info.model,
                           manufacturer=info.manufacturer, soc=info.soc, abi=info.abi, sdk=info.sdk_level,
                           android_version=info.android_version, loopback=info.is_loopback, runtime=runtime,
                           runtime_sha256=file_sha256(binary), library=f"wbmm-mobile {__version__}",
                           target=plan.target, threads=threads) for threads in plan.threads]


def _profile_plan(plan: TunePlan, models: Sequence[str], threads: int, out: str) -> ProfilePlan:
    return ProfilePlan(models=tuple(models), out=out, devices=(plan.device,) if plan.device else (),
                       adb_server=plan.adb_server, direct=plan.direct, configs=(plan.target,), threads=(threads,),
                       runs=plan.runs, warmup=plan.warmup, cooldown=plan.cooldown,
                       benchmark_binary=plan.benchmark_binary, run_timeout_s=plan.run_timeout_s)


def _entries_to_fill(plan: TunePlan, table: TableFile, identities: list[DeviceIdentity]) -> list[Entry]:
    """This run's entries: the table's own for --resume (refused when it has none of this device), else new."""
    if not plan.resume:
        return [Entry(identity, plan.runs, plan.warmup, measured_at=strategy_table.now()) for identity in identities]
    entries = []
    for identity in identities:
        entry = table.entry_for(identity)
        if entry is not None and (entry.runs, entry.warmup) != (plan.runs, plan.warmup):
            raise StrategyTableError(f"--resume: {plan.out} was measured with --runs {entry.runs} --warmup "
                                     f"{entry.warmup}, not {plan.runs} and {plan.warmup}")
        entries.append(entry)
    if all(entry is None for entry in entries):
        same_device = [e for e in table.entries if e.identity.device_id == identities[0].device_id]
        if same_device:
            raise StrategyTableError(f"--resume: {plan.out} was measured otherwise on this device ("
                                     f"{'; '.join(same_device[0].identity.differences(identities[0]))}); "
                                     "drop --resume to measure again")
        held = "; ".join(e.identity.describe() for e in table.entries) or "nothing"
        raise StrategyTableError(f"--resume: {plan.out} holds no measurement of this device "
                                 f"({identities[0].describe()}); it holds: {held}")
    return [entry or Entry(identity, plan.runs, plan.warmup, measured_at=strategy_table.now())
            for entry, identity in zip(entries, identities)]


# --------------------------------------------------------------------------- the run

def tune(plan: TunePlan, *, progress: bool | Callable[[str], None] = True) -> TuneReport:
    """Measure, write the table after each timed run, and return what was done. The table at
    ``plan.out`` keeps every other device's entries; this device's entries are replaced (or, with
    ``resume``, completed)."""
    started = time.monotonic()
    target = backends.canonical(plan.target, what="target")
    if target not in TUNABLE_TARGETS:
        raise StrategyTableError(f"--target {target}: its `auto` choice is a fixed rule of what the runtime "
                                 f"accepts, not a measurement; tune one of {', '.join(TUNABLE_TARGETS)}")
    plan = replace(plan, target=target)
    if not plan.models:
        raise ValueError("no model to tune")
    out = Path(plan.out)
    table = strategy_table.load(out) if out.exists() else TableFile(path=str(out))
    if plan.resume and not out.exists():
        raise StrategyTableError(f"--resume: {out} does not exist yet (run without --resume first)")
    layers, skipped = collect_layers(plan.models, plan.min_kernel)
    report = TuneReport(out=str(out), layers=[layer.key.label for layer in layers], skipped_layers=skipped)
    if not layers:
        raise StrategyTableError(f"no layer to tune: the models have no depthwise conv the rewriter would take "
                                 f"(kernel >= {plan.min_kernel}, stride 1, float)"
                                 + (f"; e.g. {skipped[0]}" if skipped else ""))
    identities = device_identities(plan)
    report.identities = identities
    entries = _entries_to_fill(plan, table, identities)

    scratch = Path(plan.work_dir) if plan.work_dir else Path(tempfile.mkdtemp(prefix="wbmm-tune-"))
    bar = ProgressBar(progress is True, 0, "tuning", transient=False,
                      callback=(lambda _done, _total, label: progress(label)) if callable(progress) else None)
    lock = threading.Lock()
    try:
        bar.stage("building and verifying candidates", len(layers))
        candidates: list[Candidate] = []
        for layer in layers:
            built, refused = build_candidates(layer, plan.target, scratch / "models")
            candidates += built
            for entry in entries:
                row = entry.row(layer.key.as_dict())
                row["used_by"] = sorted(set(row.get("used_by", [])) | set(layer.used_by))
                row["refused"] = refused
            report.refused += [f"{layer.key.label} {name}: {why}" for name, why in refused.items()]
            bar.advance(f"built {layer.key.label}")
        report.candidates = len(candidates)
        for entry in entries:
            table.replace(entry)
        strategy_table.save(table, out)

        by_sha: dict[str, list[Candidate]] = {}
        for candidate in candidates:
            by_sha.setdefault(candidate.sha256, []).append(candidate)
        todo = []
        for entry in entries:
            done = entry.measured()
            wanted = [c for c in candidates if (*_values(c.layer), c.strategy) not in done]
            report.resumed += len(candidates) - len(wanted)
            todo.append((entry, wanted))
        bar.stage(f"timing on {identities[0].model or identities[0].serial}", sum(len(w) for _, w in todo))
        for entry, wanted in todo:
            if not wanted:
                continue
            if report.device_error:
                report.missing += [f"{c.layer.label} {c.strategy} {entry.identity.threads}t" for c in wanted]
                continue
            runs_dir = scratch / f"runs-{entry.identity.threads}t"
            store = ResultsStore(runs_dir)
            seen = [len(store.records())]

            def on_run(label: str, entry: Entry = entry, store: ResultsStore = store, seen: list = seen) -> None:
                with lock:
                    records = store.records()
                    for record in records[seen[0]:]:
                        for candidate in by_sha.get(record.model["sha256"], []):
                            row = entry.row(candidate.layer.as_dict())
                            if record.status == "ok":
                                row["candidates"][candidate.strategy] = _measurement(record, candidate)
                                row["failed"].pop(candidate.strategy, None)
                                report.timed += 1
                            else:
                                row["failed"][candidate.strategy] = (record.error or "failed")[:300]
                                report.failed.append(f"{candidate.layer.label} {candidate.strategy}: {record.error}")
                    seen[0] = len(records)
                    entry.measured_at = strategy_table.now()
                    strategy_table.save(table, out)
                bar.advance(label)

            paths = list(dict.fromkeys(c.path for c in wanted))   # byte-identical candidates share one run
            result = profile(_profile_plan(plan, paths, entry.identity.threads, str(runs_dir)), progress=on_run)
            missing: list[RunSummary] = result.by_status("missing")
            if result.device_errors:
                report.device_error = "; ".join(f"{s}: {why}" for s, why in result.device_errors.items())
            report.missing += [f"{s.label}" for s in missing]
    finally:
        bar.close()
        if plan.cache and report.identities:
            report.cache_copy = str(_cache_copy(table, report.identities, plan.cache_dir))
        if not plan.work_dir:
            shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _values(key: LayerKey) -> tuple:
    return tuple(key.as_dict().values())


def _measurement(record, candidate: Candidate) -> dict:
    latency = record.latency or {}
    p5, p95 = latency.get("p5_ms"), latency.get("p95_ms")
    return {"median_ms": latency.get("median_ms"), "p5_ms": p5, "p95_ms": p95, "std_ms": latency.get("std_ms"),
            "spread_ms": round(p95 - p5, 6) if p5 is not None and p95 is not None else None,
            "count": latency.get("count"), "max_rel": candidate.max_rel, "model_sha256": candidate.sha256,
            "pinning": record.pinning, "measured_at": record.finished_at}


def _cache_copy(table: TableFile, identities: list[DeviceIdentity], cache_dir: str | None) -> Path:
    """Merge this device's entries into its file in the user's cache (where ``rewrite --device`` looks)."""
    path = strategy_table.cache_path(identities[0], Path(cache_dir) if cache_dir else None)
    mine = TableFile([e for e in table.entries if e.identity.device_id == identities[0].device_id])
    cached = strategy_table.load(path) if path.is_file() else TableFile()
    merged = strategy_table.merge([cached, mine])
    strategy_table.save(merged, path)
    return path
