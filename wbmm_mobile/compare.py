"""Turn profile records into the comparison a user reads: tables, PNG plots and a markdown report.

``compare(results_dir)`` reads ``runs.jsonl`` (``android_harness.results``), keeps the
latest successful record per (device, model, config, threads), and builds one row each:
median, p5, p95, std of the benchmark's own statistics, the speedup against the
reference config on the same device, model and threads (``xnnpack``, else ``cpu``;
for the ``wbmm`` row this is the speedup with WBMM), the speedup against the base
model when a model named ``<base>_wbmm`` (or ``<base>_wbmm_<lowering>``) sits next
to ``<base>``, and energy per
inference in mJ. With NPU placement records (``wbmm-mobile npu-check --json``, given as
``npu_check=`` or found as ``npu_check.json`` in the results folder), each row also shows
where its model's ops would run on each NPU target, and the report gets the placement table
(``converters.npu.report.markdown``). Runs whose thermal status rose or reached "moderate" are flagged;
failed runs are listed with their error. Plots (matplotlib, Agg backend, no display):
latency per config for each device, and latency against kernel or window size when
model names form a sweep (``..._k7``, ``..._k13``, ``..._w14``). Not for: running
anything on a device.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from android_harness.results import RunRecord, load_records

__all__ = ["ComparisonRow", "FailedRun", "Sweep", "Comparison", "compare", "format_table", "markdown_report",
           "REFERENCE_CONFIGS", "NPU_CHECK_FILE", "find_npu_check", "npu_placement", "is_loopback_record"]

# The baseline a row's speedup is measured against: the first config present.
REFERENCE_CONFIGS = ("xnnpack", "cpu")
CONFIG_ORDER = ("cpu", "xnnpack", "nnapi", "gpu", "wbmm")
_SWEEP_NAME = re.compile(r"^(?P<stem>.*?)[_\-.]?(?P<kind>kernel|window|win|k|w)[_\-]?(?P<size>\d+)(?P<tail>.*)$",
                         re.IGNORECASE)
# "<base>_wbmm", or "<base>_wbmm_<lowering>" when one WBMM model is converted with several
# lowerings (converters.lowerings: bmm, gather, custom): each is compared with <base>.
# What `wbmm-mobile npu-check --json` is called when it sits in a results folder.
NPU_CHECK_FILE = "npu_check.json"
_WBMM_SUFFIX = re.compile(r"^(?P<base>.+?)[_\-.]wbmm(?:[_\-.](?:bmm|gather|custom))?$", re.IGNORECASE)


@dataclass(frozen=True)
class ComparisonRow:
    serial: str
    device: str                 # "Pixel 7 (gs201)" or "loopback: this computer"
    model: str
    config: str
    threads: int
    count: int | None
    median_ms: float | None
    p5_ms: float | None
    p95_ms: float | None
    std_ms: float | None
    avg_ms: float | None
    speedup: float | None       # reference median / this median
    reference: str | None
    model_speedup: float | None  # base model median / this median (for <base>_wbmm models)
    energy_mj: float | None
    energy_note: str
    throttled: bool
    thermal_note: str
    loopback: bool


@dataclass(frozen=True)
class FailedRun:
    serial: str
    model: str
    config: str
    threads: int
    error: str


@dataclass(frozen=True)
class Sweep:
    serial: str
    family: str                 # model name with the size taken out
    kind: str                   # "kernel" or "window"
    points: tuple[tuple[int, str, str, int, float], ...]   # (size, model, config, threads, median ms)


@dataclass
class Comparison:
    rows: list[ComparisonRow]
    failed: list[FailedRun]
    sweeps: list[Sweep]
    plots: list[str] = field(default_factory=list)
    report: str | None = None
    npu: list = field(default_factory=list)      # converters.npu.NpuCheck records, when there are any
    npu_source: str | None = None


def is_loopback_record(record: RunRecord) -> bool:
    """A run on the loopback device (this computer's numbers), by its flag or by its name: the
    loopback device always puts 'loopback' in its model name, fixture phone included, so a
    record that lost its flag is still never taken for a phone's."""
    device = record.device or {}
    return bool(device.get("loopback")) or "loopback" in str(device.get("model", "")).lower()


def _device_label(record: RunRecord) -> str:
    device = record.device
    if is_loopback_record(record):
        # The fixture phone's ABI and SoC are made up: only a truthful loopback device's are shown.
        truthful = "fixture" not in str(device.get("model", "")).lower()
        facts = ", ".join(str(device[k]) for k in ("abi", "soc")
                          if truthful and device.get(k) and device.get(k) != "unknown")
        return f"loopback device: this computer's numbers{f' ({facts})' if facts else ''}, not a phone's"
    return f"{device.get('model', '?')} ({device.get('soc', '?')}, Android {device.get('android_version', '?')})"


def _median(latency: dict) -> float | None:
    # Builds without percentiles print no median: fall back to the average and say so in the table.
    if latency.get("median_ms") is not None:
        return latency["median_ms"]
    return latency.get("avg_ms")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0 or math.isnan(denominator):
        return None
    return numerator / denominator


def find_npu_check(results: str | Path) -> Path | None:
    """``npu_check.json`` in the results folder (or beside its runs.jsonl), else in one folder below it."""
    results = Path(results)
    folder = results if results.is_dir() else results.parent
    direct = folder / NPU_CHECK_FILE
    if direct.is_file():
        return direct
    below = sorted(folder.glob(f"*/{NPU_CHECK_FILE}"))
    return below[-1] if below else None


def npu_placement(records: list, model: str) -> str:
    """Short placement of one model over the NPU targets, e.g. ``SM8650 5/5, ethos-u55-256 n/a``."""
    parts = []
    for record in records:
        if Path(record.model).stem != model:
            continue
        target = record.target.split(":", 1)[-1]
        if record.status == "not-applicable":
            parts.append(f"{target} n/a")
        elif record.status in ("refused", "failed"):
            parts.append(f"{target} {record.status}")
        else:
            parts.append(f"{target} {record.ops_npu}/{record.ops_total}")
    return ", ".join(parts)


def compare(results: str | Path, *, out_dir: str | Path | None = None, plots: bool = True,
            report: bool = True, npu_check: str | Path | None = None) -> Comparison:
    """Rows, failures and sweeps of a results folder; writes plots and ``report.md`` into
    ``out_dir`` (default: the results folder). ``npu_check``: npu-check JSON to show beside
    the latencies (default: ``npu_check.json`` found in the results folder, if any)."""
    results = Path(results)
    records = load_records(results)
    out = Path(out_dir) if out_dir else (results if results.is_dir() else results.parent)
    latest: dict[tuple, RunRecord] = {}
    failed_latest: dict[tuple, RunRecord] = {}
    for record in records:
        key = (record.key.serial, record.model.get("name", "?"), record.config, record.threads)
        if record.status == "ok" and record.latency:
            latest[key] = record
            failed_latest.pop(key, None)
        elif key not in latest:
            failed_latest[key] = record
    medians = {key: _median(rec.latency) for key, rec in latest.items()}

    rows = []
    for key, record in latest.items():
        serial, model, config, threads = key
        reference = next((c for c in REFERENCE_CONFIGS if (serial, model, c, threads) in latest), None)
        speedup = _ratio(medians.get((serial, model, reference, threads)), medians[key]) if reference else None
        base = _WBMM_SUFFIX.match(model)
        model_speedup = None
        if base and (serial, base["base"], config, threads) in latest:
            model_speedup = _ratio(medians[(serial, base["base"], config, threads)], medians[key])
        energy = record.energy or {}
        energy_mj = energy.get("energy_per_inference_mj")
        energy_note = energy.get("refused") or "; ".join(energy.get("flags") or [])
        thermal = record.thermal or {}
        throttled = bool(thermal.get("throttled"))
        thermal_note = ""
        if throttled:
            before = (thermal.get("before") or {}).get("status_name", "?")
            after = (thermal.get("after") or {}).get("status_name", "?")
            thermal_note = f"thermal status {before} -> {after}"
        latency = record.latency
        rows.append(ComparisonRow(
            serial=serial, device=_device_label(record), model=model, config=config, threads=threads,
            count=latency.get("count"), median_ms=medians[key], p5_ms=latency.get("p5_ms"),
            p95_ms=latency.get("p95_ms"), std_ms=latency.get("std_ms"), avg_ms=latency.get("avg_ms"),
            speedup=speedup, reference=reference, model_speedup=model_speedup, energy_mj=energy_mj,
            energy_note=energy_note, throttled=throttled, thermal_note=thermal_note,
            loopback=is_loopback_record(record)))
    order = {c: i for i, c in enumerate(CONFIG_ORDER)}
    rows.sort(key=lambda r: (r.serial, _natural(r.model), r.threads, order.get(r.config, 99), r.config))
    failed = [FailedRun(k[0], k[1], k[2], k[3], (r.error or "failed").splitlines()[0])
              for k, r in sorted(failed_latest.items())]
    comparison = Comparison(rows=rows, failed=failed, sweeps=_sweeps(rows))
    source = Path(npu_check) if npu_check is not None else find_npu_check(results)
    if source is not None:
        from converters.npu import read_json

        comparison.npu, comparison.npu_source = read_json(source), str(source)
    if plots:
        comparison.plots = _plot(comparison, out)
    if report:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.md"
        path.write_text(markdown_report(comparison, relative_to=out), encoding="utf-8")
        comparison.report = str(path)
    return comparison


def _natural(name: str) -> tuple:
    # dw_k3 before dw_k13: numbers inside names compare as numbers.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _sweeps(rows: list[ComparisonRow]) -> list[Sweep]:
    groups: dict[tuple[str, str, str], list[tuple[int, str, str, int, float]]] = {}
    for row in rows:
        match = _SWEEP_NAME.match(row.model)
        if not match or row.median_ms is None:
            continue
        kind = "kernel" if match["kind"].lower().startswith("k") else "window"
        family = f"{match['stem']}*{match['tail']}"
        groups.setdefault((row.serial, family, kind), []).append(
            (int(match["size"]), row.model, row.config, row.threads, row.median_ms))
    sweeps = []
    for (serial, family, kind), points in sorted(groups.items()):
        if len({p[0] for p in points}) >= 2:
            sweeps.append(Sweep(serial, family, kind, tuple(sorted(points))))
    return sweeps


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _plot(comparison: Comparison, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for serial in sorted({r.serial for r in comparison.rows}):
        rows = [r for r in comparison.rows if r.serial == serial and r.median_ms is not None]
        groups = sorted({(r.model, r.threads) for r in rows})
        configs = [c for c in CONFIG_ORDER if any(r.config == c for r in rows)]
        configs += sorted({r.config for r in rows} - set(configs))
        figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) * max(1, len(configs)) / 2), 4.2))
        width = 0.8 / max(1, len(configs))
        for index, config in enumerate(configs):
            xs, heights, low, high = [], [], [], []
            for g, (model, threads) in enumerate(groups):
                row = next((r for r in rows if (r.model, r.threads, r.config) == (model, threads, config)), None)
                if row is None:
                    continue
                xs.append(g + (index - (len(configs) - 1) / 2) * width)
                heights.append(row.median_ms)
                low.append(max(0.0, row.median_ms - (row.p5_ms if row.p5_ms is not None else row.median_ms)))
                high.append(max(0.0, (row.p95_ms if row.p95_ms is not None else row.median_ms) - row.median_ms))
            hatch = "//" if config == "wbmm" else None
            axes.bar(xs, heights, width, yerr=[low, high], capsize=3, label=config, hatch=hatch)
        axes.set_xticks(range(len(groups)))
        axes.set_xticklabels([f"{m}\n{t} thread{'s' if t > 1 else ''}" for m, t in groups], fontsize=8)
        axes.set_ylabel("median latency (ms), bars p5-p95")
        title = rows[0].device if rows else serial
        axes.set_title(f"Latency per config, with and without WBMM\n{title}", fontsize=10)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out / f"latency_{_safe(serial)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(str(path))
    for sweep in comparison.sweeps:
        figure, axes = plt.subplots(figsize=(6, 4))
        for config, threads in sorted({(p[2], p[3]) for p in sweep.points}):
            points = sorted((p[0], p[4]) for p in sweep.points if (p[2], p[3]) == (config, threads))
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{config} {threads}t")
        axes.set_xlabel(f"{sweep.kind} size")
        axes.set_ylabel("median latency (ms)")
        axes.set_title(f"{sweep.family}: latency against {sweep.kind} size ({sweep.serial})", fontsize=10)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out / f"sweep_{sweep.kind}_{_safe(sweep.family)}_{_safe(sweep.serial)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(str(path))
    return written


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


TABLE_COLUMNS = ("model", "config", "threads", "runs", "median ms", "p5 ms", "p95 ms", "std ms",
                 "speedup", "vs base model", "energy mJ/inf", "notes")


def _cells(row: ComparisonRow) -> list[str]:
    notes = []
    if row.throttled:
        notes.append(f"THROTTLED ({row.thermal_note})")
    if row.energy_note:
        notes.append(f"energy: {row.energy_note}")
    speedup = "-" if row.speedup is None else f"{row.speedup:.2f}x vs {row.reference}"
    return [row.model, row.config, str(row.threads), str(row.count if row.count is not None else "-"),
            _f(row.median_ms), _f(row.p5_ms), _f(row.p95_ms), _f(row.std_ms), speedup,
            "-" if row.model_speedup is None else f"{row.model_speedup:.2f}x", _f(row.energy_mj, 4),
            "; ".join(notes)]


def _columns_and_cells(comparison: Comparison, rows: list[ComparisonRow]) -> tuple[list[str], list[list[str]]]:
    """The table's columns and cells; with NPU records, an "NPU ops" column after the latencies."""
    if not comparison.npu:
        return list(TABLE_COLUMNS), [_cells(r) for r in rows]
    at = TABLE_COLUMNS.index("speedup")
    columns = list(TABLE_COLUMNS[:at]) + ["NPU ops"] + list(TABLE_COLUMNS[at:])
    cells = []
    for row in rows:
        line = _cells(row)
        cells.append(line[:at] + [npu_placement(comparison.npu, row.model) or "-"] + line[at:])
    return columns, cells


def format_table(comparison: Comparison) -> str:
    """Plain-text tables, one per device (what ``wbmm-mobile compare`` prints)."""
    lines = []
    for serial in sorted({r.serial for r in comparison.rows}):
        rows = [r for r in comparison.rows if r.serial == serial]
        lines.append(f"{serial}: {rows[0].device}")
        columns, cells = _columns_and_cells(comparison, rows)
        table = [columns] + cells
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for line in table:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        lines.append("")
    for failure in comparison.failed:
        lines.append(f"FAILED {failure.serial} {failure.model} {failure.config} {failure.threads}t: {failure.error}")
    if comparison.npu:
        from converters.npu.report import SUMMARY_COLUMNS, summary_cells

        lines += ["", f"NPU placement (from {comparison.npu_source}):"]
        table = [list(SUMMARY_COLUMNS)] + [summary_cells(r) for r in comparison.npu]
        widths = [max(len(line[i]) for line in table) for i in range(len(SUMMARY_COLUMNS))]
        for line in table:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return "\n".join(lines).rstrip() + "\n"


def markdown_report(comparison: Comparison, relative_to: Path | None = None) -> str:
    out = ["# WBMM profile comparison", ""]
    out.append("Latency in ms from benchmark_model's own statistics (median falls back to the average on "
               "builds that print no percentiles). Speedup = reference config median / row median on the same "
               "device, model and threads; for `wbmm` it is the speedup with WBMM. Energy per inference = "
               "(mean running power - idle power) x average inference time.")
    out.append("")
    for serial in sorted({r.serial for r in comparison.rows}):
        rows = [r for r in comparison.rows if r.serial == serial]
        out += [f"## {serial}: {rows[0].device}", ""]
        columns, cells = _columns_and_cells(comparison, rows)
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "---|" * len(columns))
        for line in cells:
            out.append("| " + " | ".join(c.replace("|", "/") for c in line) + " |")
        out.append("")
        for plot in comparison.plots:
            name = Path(plot).name
            if _safe(serial) in name:
                link = Path(plot).relative_to(relative_to) if relative_to else Path(plot)
                out += [f"![{name}]({link.as_posix()})", ""]
        throttled = [r for r in rows if r.throttled]
        if throttled:
            out.append("Throttled runs (thermal status rose or reached moderate): "
                       + ", ".join(f"{r.model} {r.config} {r.threads}t" for r in throttled) + ".")
            out.append("")
    if comparison.npu:
        from converters.npu.report import markdown

        out.append(markdown(comparison.npu))
    if comparison.failed:
        out += ["## Failed runs", ""]
        out += [f"- {f.serial} {f.model} {f.config} {f.threads}t: {f.error}" for f in comparison.failed]
        out.append("")
    return "\n".join(out)
