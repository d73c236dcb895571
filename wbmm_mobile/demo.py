"""The ``make demo`` run: the product's main job on a built-in example, end to end.

Convert a Keras model, push and profile it on an Android device, compare delegate latency
with and without WBMM in a table and a plot. The example (``wbmm_mobile.zoo.wbmm_p_small``)
is WBMM-P's layout scaled down, random seeded weights, 224x224x3 by default, batch 1; its
twin has a 13x13 depthwise conv (the receptive field of a 7x7 window) wherever WBMM is.
Not trained: it measures latency and checks conversion, not accuracy.

Steps, each a library call that exists elsewhere: convert (``converters.keras_convert``,
verified against Keras) the twin and the WBMM model with the ``bmm`` lowering, and the WBMM
model with the ``custom`` lowering when the C++ delegate is built; profile all of them
(``android_harness.profile.profile_phone_or_here``: a connected phone when there is one
and a benchmark_model for it, else the loopback ADB device running ``wbmm-mobile-benchmark``
on this computer) under cpu, xnnpack and, with the delegate, wbmm (``claim_depthwise:1``, so
the delegate also takes the twin's 13x13 convs); with the ``npu`` extra installed, place
them on the NPU targets (``converters.npu.check_models``, written as ``npu_check.json`` in the
run folder); compare (``wbmm_mobile.compare``: table, PNG, report.md, with the NPU placement
next to the latencies when there is one). File names make ``compare`` pair each WBMM file with its twin:
``demo_large_dw`` (twin), ``demo_large_dw_wbmm`` (bmm), ``demo_large_dw_wbmm_custom``.

Each run writes into a fresh ``<out>/runs/<UTC time>/`` (a loopback device has a new serial
each time, so older runs would otherwise crowd the table) and points ``<out>/latest`` at it.
Not a benchmark of record (``benchmarks/``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from wbmm_mobile.progress import ProgressBar
from wbmm_mobile.json_output import write_json
from wbmm_mobile.report import human_bytes, markdown_table

__all__ = ["TWIN", "WBMM_BMM", "WBMM_CUSTOM", "DELEGATE_OPTIONS", "DemoModel", "Headline", "DemoResult",
           "run_demo", "demo_configs"]

# File stems (compare's "<base>_wbmm[_<lowering>]" rule pairs them). No digit after a
# 'k' or 'w': compare would read the name as a point of a kernel/window sweep.
TWIN = "demo_large_dw"
WBMM_BMM = f"{TWIN}_wbmm"
WBMM_CUSTOM = f"{TWIN}_wbmm_custom"
# The wbmm config: the delegate runs the WBMM custom ops and, with this, the twin's large
# depthwise convs too (>= 7x7, its default min_kernel); XNNPACK takes the rest.
DELEGATE_OPTIONS = "claim_depthwise:1"


@dataclass
class DemoModel:
    name: str                 # file stem: the model's name in the profile records and tables
    kind: str                 # "dw13" (the twin) or "wbmm"
    lowering: str
    path: str
    params: int
    tflite_bytes: int
    wbmm_layers: int
    needs_delegate: bool
    verification: str
    convert_seconds: float


@dataclass(frozen=True)
class Headline:
    what: str                 # "demo_large_dw_wbmm on xnnpack vs demo_large_dw on xnnpack"
    speedup: float            # ratio of the two medians (> 1: the first is faster)


@dataclass
class DemoResult:
    models: list[DemoModel]
    where: str                # where the profile ran, in words
    loopback: bool            # True: the numbers are this computer's, not a phone's
    configs: tuple[str, ...]
    run_dir: str
    results_file: str         # runs.jsonl
    profile: object           # android_harness.profile.ProfileReport
    comparison: object        # wbmm_mobile.compare.Comparison
    table: str                # wbmm_mobile.compare.format_table
    headlines: list[Headline]
    problems: list[str]       # failed or missing runs, device errors: the demo did not fully succeed
    json_path: str = ""
    markdown_path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        """Everything this run wrote, models first."""
        comparison = self.comparison
        return ([m.path for m in self.models] + [self.results_file] + list(comparison.plots)
                + ([comparison.report] if comparison.report else []) + [self.markdown_path, self.json_path])


def demo_configs(delegate_built: bool) -> tuple[str, ...]:
    return ("cpu", "xnnpack", "wbmm") if delegate_built else ("cpu", "xnnpack")


def _delegate_status() -> tuple[bool, str]:
    from delegates import library_path
    from wbmm_mobile.errors import DelegateNotBuiltError

    try:
        return True, str(library_path())
    except DelegateNotBuiltError as exc:
        return False, str(exc)


def _convert_all(out: Path, conversions: list[tuple[str, str, str]], input_size: int, seed: int,
                 log: Callable[[str], None], progress: bool) -> list[DemoModel]:
    """Build each kind once and convert it with each of its lowerings, verified against Keras."""
    from converters.keras_convert import convert_keras
    from wbmm_mobile.zoo import count_ops, wbmm_p_small

    bar = ProgressBar(progress, len(conversions), "converting", transient=False)
    built: dict[str, object] = {}
    models = []
    try:
        for name, kind, lowering in conversions:
            started = time.perf_counter()
            bar.describe(f"converting {name} ({lowering})")
            if kind not in built:
                built[kind] = wbmm_p_small(kind, input_shape=(input_size, input_size, 3), seed=seed)
            model = built[kind]
            result = convert_keras(model, precision="float32", lowering=lowering, seed=seed, name=name)
            path = out / f"{name}.tflite"
            path.write_bytes(result.tflite)
            report = result.report
            verification = report.verification.summary() if report.verification else report.verification_note
            models.append(DemoModel(name=name, kind=kind, lowering=lowering, path=str(path),
                                    params=count_ops(model).params, tflite_bytes=len(result.tflite),
                                    wbmm_layers=len(report.layers), needs_delegate=report.needs_delegate,
                                    verification=verification, convert_seconds=time.perf_counter() - started))
            log(f"  {path.name}: {human_bytes(len(result.tflite))}, {len(report.layers)} WBMM layers, "
                f"{verification} ({time.perf_counter() - started:.0f} s)")
            bar.advance()
    finally:
        bar.close()
    return models


def _headlines(comparison) -> list[Headline]:
    """Each WBMM file against its twin on the same config (compare's ``model_speedup``), and the
    best WBMM setup against the twin on XNNPACK, the runtime's default."""
    rows = [r for r in comparison.rows if r.median_ms]
    twin = {(r.serial, r.config, r.threads): r for r in rows if r.model == TWIN}
    lines = [Headline(f"{r.model} on {r.config} vs {TWIN} on {r.config}", r.model_speedup)
             for r in rows if r.model != TWIN and r.model_speedup]
    for r in rows:
        reference = twin.get((r.serial, "xnnpack", r.threads))
        if r.config == "wbmm" and reference is not None:
            lines.append(Headline(f"{r.model} on wbmm vs {TWIN} on xnnpack", reference.median_ms / r.median_ms))
    return lines


def _problems(report) -> list[str]:
    problems = [f"device {serial} stopped: {reason}" for serial, reason in report.device_errors.items()]
    problems += [f"failed: {s.label}: {(s.detail or '').splitlines()[0] if s.detail else ''}"
                 for s in report.by_status("failed")]
    missing = report.by_status("missing")
    if missing and not report.device_errors:
        problems.append(f"{len(missing)} runs missing, e.g. {missing[0].label}")
    return problems


def run_demo(out_dir: str | Path = "results/demo", *, input_size: int = 224, runs: int = 30, warmup: int = 5,
             threads: int = 1, seed: int = 0, benchmark_binary: str | None = None, devices: Sequence[str] = (),
             adb_server: str | None = None, delegate_lib: str | None = None, power: bool = False,
             log: Callable[[str], None] = print, progress: bool = True, npu_check: bool = True) -> DemoResult:
    """Convert, profile (phone or loopback), compare; write demo.json and demo.md next to the
    profile records. Failed or missing runs do not raise: they are in ``DemoResult.problems``."""
    from android_harness.profile import attached_phones, profile_phone_or_here
    from wbmm_mobile.compare import compare, format_table

    if input_size < 32:
        raise ValueError(f"--input-size must be at least 32 (the network downsamples 32x), got {input_size}")
    if devices:
        attached_phones(adb_server, devices)   # a phone asked for by name that is absent: say so before converting
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    delegate_built, delegate_where = _delegate_status()
    notes = []
    conversions = [(TWIN, "dw13", "bmm"), (WBMM_BMM, "wbmm", "bmm")]
    if delegate_built:
        conversions.append((WBMM_CUSTOM, "wbmm", "custom"))
        log(f"WBMM delegate: {delegate_where}")
    else:
        notes.append(f"WBMM delegate not built ({delegate_where}): no custom lowering, no wbmm config")
        log(notes[-1])
    configs = demo_configs(delegate_built)

    log(f"1/3 converting {len(conversions)} models ({input_size}x{input_size}x3, float32, verified against Keras)")
    models = _convert_all(out, conversions, input_size, seed, log, progress)

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%SZ")
    run_dir = out / "runs" / stamp
    log(f"2/3 profiling {len(models)} models x {', '.join(configs)}, {threads} thread(s), {runs} runs after "
        f"{warmup} warm-up (models with WBMM custom ops run only under wbmm)")
    log(f"   looking for a phone through the ADB server ({adb_server or 'adb default, 127.0.0.1:5037'}; adb starts "
        "it if it is not running)")
    plan_options = {"delegate_options": DELEGATE_OPTIONS, "power": power}
    if delegate_lib:
        plan_options["delegate_lib"] = delegate_lib
    where, report = profile_phone_or_here([m.path for m in models], run_dir, benchmark_binary=benchmark_binary,
                                          adb_server=adb_server, configs=configs, threads=(threads,), runs=runs,
                                          warmup=warmup, progress=progress, devices=tuple(devices),
                                          announce=lambda line: log(f"   {line}"), **plan_options)
    loopback = where.startswith("this computer")
    log(f"   profiled on {where}")
    if loopback:
        log(f"   loopback numbers are THIS COMPUTER's ({platform.machine()} CPU, ai-edge-litert), not a phone's")

    if npu_check:
        _place_on_npus(models, run_dir, log, notes, progress)
    log("3/3 comparing")
    comparison = compare(run_dir, out_dir=run_dir)
    result = DemoResult(models=models, where=where, loopback=loopback, configs=configs, run_dir=str(run_dir),
                        results_file=report.results_file, profile=report, comparison=comparison,
                        table=format_table(comparison) if comparison.rows else "",
                        headlines=_headlines(comparison), problems=_problems(report), notes=notes)
    result.json_path = str(write_json({
        "models": models, "where": where, "loopback": loopback, "configs": configs, "input_size": input_size,
        "runs": runs, "warmup": warmup, "threads": threads, "delegate_options": DELEGATE_OPTIONS,
        "results_file": result.results_file, "rows": comparison.rows, "failed": comparison.failed,
        "headlines": result.headlines, "problems": result.problems, "notes": notes}, run_dir / "demo.json"))
    result.markdown_path = str(_write_markdown(result, run_dir / "demo.md", input_size, runs, warmup, threads))
    _point_latest(out, run_dir)
    return result


def _place_on_npus(models: list[DemoModel], run_dir: Path, log: Callable[[str], None], notes: list[str],
                   progress: bool) -> None:
    """npu-check of every demo model into ``run_dir/npu_check.json`` (compare finds it there);
    without the npu extra, a note says so and the demo goes on."""
    from converters import npu
    from wbmm_mobile.compare import NPU_CHECK_FILE
    from wbmm_mobile.errors import NpuExtraMissingError, NpuSetupError

    targets = npu.default_targets()
    log(f"   placing the models on NPU targets ({', '.join(str(t) for t in targets)})")
    try:
        records = npu.check_models([m.path for m in models], targets, progress=progress)
    except (NpuExtraMissingError, NpuSetupError) as exc:
        notes.append(f"no NPU placement: {exc}")
        log(f"   {notes[-1]}")
        return
    npu.write_json(records, run_dir / NPU_CHECK_FILE)


def _point_latest(out: Path, run_dir: Path) -> None:
    # A convenience link only: a filesystem without symlinks loses nothing.
    latest = out / "latest"
    try:
        if latest.is_symlink():
            latest.unlink()
        if not latest.exists():
            os.symlink(run_dir.relative_to(out), latest)
    except OSError:
        pass


def _write_markdown(demo: DemoResult, path: Path, input_size: int, runs: int, warmup: int, threads: int) -> Path:
    rows = [[m.name, m.kind, m.lowering, f"{m.params:,}", human_bytes(m.tflite_bytes), m.wbmm_layers,
             m.verification] for m in demo.models]
    where = demo.where + (" -- this computer's numbers, not a phone's" if demo.loopback else "")
    text = ["# wbmm-mobile demo", "",
            f"Small WBMM-P-like network ({input_size}x{input_size}x3, widths 32/64/128/256, blocks "
            "D | W,D | W,D | W+,W+, random seeded weights) against its twin with 13x13 depthwise convs where the "
            "WBMM layers are, converted to float32 .tflite and verified against Keras.", "",
            markdown_table(["file", "kind", "lowering", "params", ".tflite", "WBMM layers", "verification"], rows),
            f"Profiled on {where}: configs {', '.join(demo.configs)} (wbmm = the WBMM delegate with "
            f"`{DELEGATE_OPTIONS}` over XNNPACK), {threads} thread(s), {runs} runs after {warmup} warm-up. "
            "Files with WBMM custom ops run only under wbmm.", ""]
    if demo.headlines:
        text += ["Speedups (ratio of medians):", ""]
        text += [f"- {h.what}: **{h.speedup:.2f}x**" for h in demo.headlines]
        text.append("")
    if demo.comparison.report:
        text += [f"Full table and plot: [{Path(demo.comparison.report).name}]({Path(demo.comparison.report).name})", ""]
    for plot in demo.comparison.plots:
        text += [f"![{Path(plot).name}]({Path(plot).name})", ""]
    if demo.comparison.npu:
        from converters.npu.report import markdown

        text.append(markdown(demo.comparison.npu, title="Where the models would run on NPUs"))
    if demo.problems:
        text += ["Problems:", ""] + [f"- {p}" for p in demo.problems] + [""]
    text += [f"- {n}" for n in demo.notes]
    path.write_text("\n".join(text) + "\n")
    return path
