"""Tune on the device: time every exact rewrite of a model's large depthwise layers on one phone.

``tune(TunePlan)`` does, in order:

1. collect every distinct large-depthwise layer of the models (height, width, channels,
   kernel, dilation, padding, dtype) with the rewriter's own matcher and checks
   (``converters/rewrites/_depthwise.py``); integer (int8, int16) layers are taken out
   whole, with their own quantisation (``converters.layer_models.extracted_layer_model``);
2. build one one-layer model per (layer, candidate): the layer kept as it is
   (``depthwise``, the layer's own weights) and each exact strategy the target can run
   (``candidate_names``), made by the real rewrite passes, and check each candidate against
   the kept layer on this computer with the shared verifier (``converters.verify``; float
   1e-4 relative, integer outputs within one step); a strategy that refuses the layer or
   disagrees is recorded as refused, with the reason, and not timed. Integer layers get the
   integer forms only (``builtin_kernel``, and ``custom`` for wbmm), float islands only with
   ``allow_float_islands`` and never on an integer-only target;
3. read the device's identity from its own answers (getprop), then time the candidates
   there with ``android_harness.profile`` itself: the same push by content hash, runner,
   warm-up, median of runs, cool-down and big-core pinning as ``wbmm-mobile profile``.
   For ``wbmm`` every candidate runs through profile's ``wbmm`` config (the delegate for the
   device's ABI, ``--delegate-options``, ``num_threads`` set to the thread count): the kept
   conv left to XNNPACK (``claim_depthwise:0``) and claimed by the delegate
   (``claim_depthwise``, the same file run with ``claim_depthwise:1``), the ``custom``
   WBMM_DEPTHWISE op, and the builtin rewrites beside the delegate. A delegate that refuses
   an int8 custom op (here when checking, or on the device) makes that candidate refused,
   with the delegate's reason;
4. after each timed run, write the table (``converters.strategy_table``) atomically, so a
   lost device or Ctrl-C keeps every finished measurement, and ``resume=True`` times only
   what the table lacks. A copy goes to the user's cache, where ``rewrite --device
   SERIAL`` finds it.

Only targets whose ``auto`` choice can be a measurement are tuned (``TUNABLE_TARGETS``); the
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
from android_harness.profile import (ProfilePlan, RunSummary, _connect, delegate_for_device, elf_abi,
                                     find_benchmark_binary, profile)
from android_harness.results import ResultsStore
from converters import strategy_table
from converters.strategy import CLAIMED, INTEGER_FORMS, INTEGER_PRECISIONS, integer_only
from converters.strategy_table import KEEP, DeviceIdentity, Entry, TableFile
from wbmm_mobile import backends
from wbmm_mobile.errors import IncompatibleOptionsError, ModelNotFoundError, StrategyTableError, WbmmError
from wbmm_mobile.progress import ProgressBar

TUNABLE_TARGETS = ("xnnpack", "cpu", "wbmm")
# The strategies timed against keeping the layer; builtin_kernel on cpu would be the kept conv again.
# wbmm: also the kept conv claimed by the delegate (CLAIMED) and the WBMM_DEPTHWISE custom op.
CANDIDATES = {"xnnpack": ("split", "dilated", "halo", "builtin_kernel"), "cpu": ("split", "dilated", "halo"),
              "wbmm": (CLAIMED, "custom", "split", "dilated", "halo", "builtin_kernel")}
FLOAT_ISLANDS = ("split", "dilated", "halo")    # on an integer layer: float32 between DEQUANTIZE and QUANTIZE
# Delegate options tune sets itself for each wbmm candidate; --delegate-options may not.
TUNE_SETS = ("num_threads", "claim_depthwise")
INTEGER_STEPS = 1   # an integer candidate may differ from the kept layer by one quantisation step, as rewrite checks


def candidate_names(target: str, dtype: str, allow_float_islands: bool = False) -> tuple[str, ...]:
    """The strategies timed against the kept layer for a layer of ``dtype`` on ``target``: all of
    ``CANDIDATES`` for float layers; for integer ones the integer forms, and the float islands only
    with ``allow_float_islands`` on a target that is not integer-only (the delegate claims float convs only)."""
    names = CANDIDATES[target]
    if dtype not in INTEGER_PRECISIONS:
        return names
    islands = allow_float_islands and not integer_only(target)
    return tuple(n for n in names if n in INTEGER_FORMS or (islands and n in FLOAT_ISLANDS))


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
    delegate_lib: str | None = None         # wbmm: the delegate for the device's ABI (loopback: this computer's build)
    delegate_options: str | None = None     # wbmm: more 'key:value;...' options (not num_threads, claim_depthwise)
    allow_float_islands: bool = False       # integer layers also time split/dilated/halo as float islands
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
    """One distinct layer, the first occurrence as a one-layer model, and where it occurs."""

    key: LayerKey
    stock: bytes                # the one-layer model: the layer kept as it is (its own weights, quantisation)
    used_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    layer: LayerKey
    strategy: str
    path: str
    sha256: str
    max_rel: float
    max_steps: float | None = None   # integer outputs: the largest difference from the kept layer, in steps

    @property
    def claims(self) -> bool:
        """Run with the delegate's claim_depthwise:1 (the kept conv claimed by it)."""
        return self.strategy == CLAIMED


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
    from converters.layer_models import extracted_layer_model, single_layer_model
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
                if reason:
                    skipped.append(f"{where}: {reason}")
                    continue
                _, height, width, channels = layer.x.shape
                key = LayerKey(height, width, channels, max(layer.kernel_size), layer.dilation[0],
                               layer.padding_name, layer.precision)
                if key not in layers:
                    if layer.integer:
                        stock = extracted_layer_model(model, g, index)
                    else:
                        dtype = np.float16 if layer.weights_float16 else np.float32
                        stock = single_layer_model((1, height, width, channels), layer.kernel.astype(dtype),
                                                   layer.bias, layer.padding_name, layer.activation)
                    layers[key] = TuneLayer(key, stock)
                layers[key].used_by.append(where)
    return list(layers.values()), skipped


def build_candidates(layer: TuneLayer, target: str, folder: Path, *, allow_float_islands: bool = False,
                     delegate_lib: str | None = None) -> tuple[list[Candidate], dict[str, str]]:
    """The kept layer and each strategy's rewrite of it as files in ``folder``, each checked against
    the kept layer; {strategy: why} for the ones that refused it or disagreed. ``delegate_lib`` (wbmm):
    the library to check the custom op and the claimed conv with, when it loads on this computer."""
    from converters import verify
    from converters.rewrite import RewriteOptions, rewrite_model

    key = layer.key
    stock = layer.stock
    integer = key.dtype in INTEGER_PRECISIONS
    kernels = "cpu" if target == "cpu" else "xnnpack"
    built: list[tuple[str, bytes, float, float | None]] = [(KEEP, stock, 0.0, 0.0 if integer else None)]
    refused: dict[str, str] = {}
    for name in candidate_names(target, key.dtype, allow_float_islands):
        make_delegate = None
        if name in ("custom", CLAIMED):
            make_delegate, why = _delegate_here(delegate_lib, claim=name == CLAIMED)
            if make_delegate is None:
                refused[name] = f"cannot be checked on this computer: {why}"
                continue
        if name == CLAIMED:
            candidate, why = stock, _claim_refusal(stock, make_delegate)
            if why:
                refused[name] = why
                continue
        else:
            result = rewrite_model(stock, RewriteOptions(strategy=name, target=target, min_kernel=1, verify=False,
                                                         allow_float_islands=allow_float_islands and integer))
            if not any(entry.rewritten for entry in result.report.layers):
                refused[name] = result.report.layers[0].reason if result.report.layers else "no layer matched"
                continue
            candidate = result.model
        if name == "custom" and integer:
            from converters.quantized import delegate_runs_int8_custom_ops

            runs, why = delegate_runs_int8_custom_ops(make_delegate)
            if not runs:
                refused[name] = why
                continue
        try:
            check = verify.verify_tflite_against_tflite(
                stock, candidate, precision="float16" if key.dtype == "float16" else "float32", kernels=kernels,
                delegate=make_delegate() if make_delegate is not None else None, enforce=False, steps=INTEGER_STEPS)
        except WbmmError as exc:      # e.g. the delegate refuses the node: its reason is in the message
            refused[name] = f"cannot run on this computer: {exc}"[:400]
            continue
        if not check.passed:
            refused[name] = f"disagrees with the kept layer: {check.summary()}"
            continue
        built.append((name, candidate, check.max_rel, check.max_steps))
    candidates = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, max_rel, max_steps in built:
        path = folder / f"{key.label}_{name}.tflite"
        path.write_bytes(data)
        candidates.append(Candidate(key, name, str(path), file_sha256(path), max_rel, max_steps))
    return candidates, refused


_HOST_ABI = {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}


def _delegate_here(delegate_lib: str | None, claim: bool) -> tuple[Callable | None, str]:
    """(a function making a fresh wbmm delegate on this computer, or None; why not): ``delegate_lib``
    when it is built for this computer (the loopback device's), else this checkout's build."""
    from converters import verify

    options = {"claim_depthwise": "1" if claim else "0"}
    if delegate_lib and elf_abi(delegate_lib) == _HOST_ABI.get(platform.machine()):
        from ai_edge_litert.interpreter import load_delegate

        return (lambda: load_delegate(str(delegate_lib), options=options)), ""
    try:
        import delegates
    except ImportError as exc:
        return None, f"the wbmm delegate's loader is not available ({exc})"
    maker, why = verify.wbmm_delegate_factory()
    if maker is None:
        return None, why
    return (lambda: delegates.load(**options)), ""


def _claim_refusal(stock: bytes, make_delegate: Callable) -> str | None:
    """Why the delegate does not claim the kept conv with claim_depthwise:1 (then it would time
    XNNPACK's conv again), or None."""
    from converters import verify

    delegate = make_delegate()
    interpreter = verify.load_interpreter(stock, kernels="xnnpack", delegate=delegate)
    try:
        import delegates

        claimed = delegates.delegation_report(interpreter, delegate).claimed_ops
    except Exception as exc:   # noqa: BLE001 - a delegate built elsewhere may not report its nodes
        return f"cannot tell whether the delegate claims it ({type(exc).__name__}: {exc})"
    if not any(op in ("DEPTHWISE_CONV_2D", "CONV_2D") for op in claimed):
        return ("the delegate does not claim this conv with claim_depthwise:1 (it claims float convs, stride 1, "
                "dilation 1, from its min_kernel up; `verbose:1` prints why)")
    return None


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
    delegate = {}
    if plan.target == "wbmm":
        lib = delegate_for_device(plan.delegate_lib, info)
        delegate = {"delegate": f"{lib.name} ({elf_abi(lib) or 'unknown ABI'})", "delegate_sha256": file_sha256(lib),
                    "delegate_options": plan.delegate_options or ""}
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
                           target=plan.target, threads=threads, **delegate) for threads in plan.threads]


def _profile_plan(plan: TunePlan, models: Sequence[str], threads: int, out: str, claim: bool = False) -> ProfilePlan:
    options = None
    if plan.target == "wbmm":
        options = ";".join([f"num_threads:{threads}", f"claim_depthwise:{int(claim)}"]
                           + ([plan.delegate_options] if plan.delegate_options else []))
    return ProfilePlan(models=tuple(models), out=out, devices=(plan.device,) if plan.device else (),
                       adb_server=plan.adb_server, direct=plan.direct, configs=(plan.target,), threads=(threads,),
                       runs=plan.runs, warmup=plan.warmup, cooldown=plan.cooldown,
                       benchmark_binary=plan.benchmark_binary, run_timeout_s=plan.run_timeout_s,
                       delegate_lib=plan.delegate_lib, delegate_options=options)


def check_delegate_options(plan: TunePlan) -> None:
    """--delegate-lib and --delegate-options belong to --target wbmm, and may not set what tune sets."""
    if plan.target != "wbmm":
        given = [flag for flag, value in (("--delegate-lib", plan.delegate_lib),
                                          ("--delegate-options", plan.delegate_options)) if value]
        if given:
            raise IncompatibleOptionsError(f"{' and '.join(given)} with --target {plan.target}: only --target wbmm "
                                           "runs the wbmm delegate")
        return
    if plan.delegate_options:
        from delegates import parse_options

        try:
            options = parse_options(plan.delegate_options)
        except ValueError as exc:
            raise IncompatibleOptionsError(f"--delegate-options: {exc}") from None
        ours = [name for name in TUNE_SETS if name in options]
        if ours:
            raise IncompatibleOptionsError(f"--delegate-options sets {', '.join(ours)}: tune sets num_threads to each "
                                           "--threads count and times the kept conv with claim_depthwise 0 and 1")


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
    check_delegate_options(plan)
    if plan.allow_float_islands and integer_only(target):
        raise IncompatibleOptionsError(f"--allow-float-islands with --target {target}: an integer-only target")
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
                                 f"(kernel >= {plan.min_kernel}, stride 1)"
                                 + (f"; e.g. {skipped[0]}" if skipped else ""))
    untunable = [layer for layer in layers if not candidate_names(plan.target, layer.key.dtype,
                                                                  plan.allow_float_islands)]
    for layer in untunable:
        report.skipped_layers.append(f"{layer.key.label}: {plan.target}, {layer.key.dtype}: the kept conv is the only "
                                     "candidate (no integer rewrite for this target; float islands need "
                                     "--allow-float-islands)")
        report.layers.remove(layer.key.label)
    layers = [layer for layer in layers if layer not in untunable]
    if not layers:
        raise StrategyTableError("no layer to tune: " + "; ".join(report.skipped_layers[-len(untunable):]))
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
            built, refused = build_candidates(layer, plan.target, scratch / "models",
                                              allow_float_islands=plan.allow_float_islands,
                                              delegate_lib=plan.delegate_lib)
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

        todo = []
        for entry in entries:
            done = entry.measured()
            wanted = [c for c in candidates if (*_values(c.layer), c.strategy) not in done]
            report.resumed += len(candidates) - len(wanted)
            # The kept conv claimed by the delegate is the kept conv's file run with other delegate
            # options: each set of options is one profile run of its own.
            for claim in (False, True):
                group = [c for c in wanted if c.claims == claim]
                if group:
                    todo.append((entry, claim, group))
        bar.stage(f"timing on {identities[0].model or identities[0].serial}", sum(len(w) for _, _, w in todo))
        for entry, claim, wanted in todo:
            if report.device_error:
                report.missing += [f"{c.layer.label} {c.strategy} {entry.identity.threads}t" for c in wanted]
                continue
            runs_dir = scratch / f"runs-{entry.identity.threads}t{'-claim' if claim else ''}"
            store = ResultsStore(runs_dir)
            seen = [len(store.records())]
            by_sha: dict[str, list[Candidate]] = {}
            for candidate in wanted:
                by_sha.setdefault(candidate.sha256, []).append(candidate)

            def on_run(label: str, entry: Entry = entry, store: ResultsStore = store, seen: list = seen,
                       by_sha: dict = by_sha) -> None:
                with lock:
                    records = store.records()
                    for record in records[seen[0]:]:
                        for candidate in by_sha.get(record.model["sha256"], []):
                            _record(entry.row(candidate.layer.as_dict()), candidate, record, report)
                    seen[0] = len(records)
                    entry.measured_at = strategy_table.now()
                    strategy_table.save(table, out)
                bar.advance(label)

            paths = list(dict.fromkeys(c.path for c in wanted))   # byte-identical candidates share one run
            result = profile(_profile_plan(plan, paths, entry.identity.threads, str(runs_dir), claim=claim),
                             progress=on_run)
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


def _record(row: dict, candidate: Candidate, record, report: TuneReport) -> None:
    """One finished run into its row: a timing, a refusal by the device's delegate, or a failure."""
    if record.status == "ok":
        row["candidates"][candidate.strategy] = _measurement(record, candidate)
        row["failed"].pop(candidate.strategy, None)
        report.timed += 1
        return
    error = record.error or "failed"
    refusal = delegate_refusal(candidate, error)
    if refusal:
        row["refused"][candidate.strategy] = refusal
        report.refused.append(f"{candidate.layer.label} {candidate.strategy}: {refusal}")
        return
    row["failed"][candidate.strategy] = error[:300]
    report.failed.append(f"{candidate.layer.label} {candidate.strategy}: {error}")


def delegate_refusal(candidate: Candidate, error: str) -> str | None:
    """The device's delegate refusing a custom op it has no kernel for (an int8 WBMM_DEPTHWISE on a
    build without int8 kernels) is a refusal of that candidate, with the delegate's words; None for
    any other failure."""
    if candidate.strategy != "custom":
        return None
    for line in error.splitlines():
        if "WBMM_DEPTHWISE" in line and ("cannot run" in line or "unresolved custom op" in line.lower()):
            return f"the device's wbmm delegate refused it: {line.strip()[:240]}"
    return None


def _measurement(record, candidate: Candidate) -> dict:
    latency = record.latency or {}
    p5, p95 = latency.get("p5_ms"), latency.get("p95_ms")
    return {"median_ms": latency.get("median_ms"), "p5_ms": p5, "p95_ms": p95, "std_ms": latency.get("std_ms"),
            "spread_ms": round(p95 - p5, 6) if p5 is not None and p95 is not None else None,
            "count": latency.get("count"), "max_rel": candidate.max_rel, "max_steps": candidate.max_steps,
            "model_sha256": candidate.sha256,
            "pinning": record.pinning, "measured_at": record.finished_at}


def _cache_copy(table: TableFile, identities: list[DeviceIdentity], cache_dir: str | None) -> Path:
    """Merge this device's entries into its file in the user's cache (where ``rewrite --device`` looks)."""
    path = strategy_table.cache_path(identities[0], Path(cache_dir) if cache_dir else None)
    mine = TableFile([e for e in table.entries if e.identity.device_id == identities[0].device_id])
    cached = strategy_table.load(path) if path.is_file() else TableFile()
    merged = strategy_table.merge([cached, mine])
    strategy_table.save(merged, path)
    return path
