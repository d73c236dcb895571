"""Tables (rich) and JSON for what ``convert``, ``bench`` and ``demo`` produce.

Pure formatting of the library's result dataclasses (``ConversionReport``,
``BenchComparison``, ``LatencyStats``); nothing here converts or times anything, and
nothing imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any



def human_bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count} B"


def conversion_table(report):
    """One row per WBMM layer: window, map, lowering, folds, table vs dense bytes; caption: file, error."""
    from rich.table import Table

    table = Table(title=f"{report.model_name}: {report.precision}, lowering {report.lowering}")
    for column in ("layer", "window", "input HxWxC", "strategy", "folded", "table", "dense M"):
        table.add_column(column, overflow="fold")
    for layer in report.layers:
        table.add_row(layer.name, f"{layer.window[0]}x{layer.window[1]}",
                      f"{layer.input_hw[0]}x{layer.input_hw[1]}x{layer.channels}", layer.lowering,
                      ", ".join(layer.folded) or "-", human_bytes(layer.table_bytes), human_bytes(layer.dense_bytes))
    if not report.layers:
        table.add_row("(no WBMM layers)", "-", "-", "-", "-", "-", "-")
    return table


def conversion_summary(report) -> list[str]:
    """Lines under the table: file size, op mix, rank, verification, delegate need, warnings."""
    lines = [f"file: {human_bytes(report.tflite_bytes)} (compact tables {human_bytes(report.compact_table_bytes)}), "
             f"max tensor rank {report.max_tensor_rank}, {sum(report.op_counts.values())} ops"]
    interesting = {k: v for k, v in report.op_counts.items()
                   if k in ("BATCH_MATMUL", "GATHER", "SUB", "TRANSPOSE", "WBMM", "WBMM_DEPTHWISE", "DEPTHWISE_CONV_2D")}
    if interesting:
        lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(interesting.items())))
    if report.verification is not None:
        lines.append(f"verification: {report.verification.summary()} [{report.verification_note}]")
    else:
        lines.append(f"verification: {report.verification_note}")
        checks = [layer.numpy_check for layer in report.layers if layer.numpy_check]
        if checks:
            worst = max(c["max_rel"] for c in checks)
            lines.append(f"per-layer numpy checks: {len(checks)} passed, worst max rel {worst:.3g}")
    if report.needs_delegate:
        lines.append("this model needs the wbmm delegate (`delegates.load()`, or "
                     "benchmark_model --external_delegate_path=libwbmm_delegate.so)")
    for note in report.notes:
        lines.append(f"note: {note}")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    for note in getattr(report, "rewrite_notes", []) or []:
        lines.append(note)
    return lines


def bench_table(comparison, title: str | None = None):
    """median, p5, p95, mean, init and first-invoke times per model, speedup vs the first.
    A model run with a delegate on top of the kernels says so ("+ delegate")."""
    from rich.table import Table

    first = comparison.stats[0]
    table = Table(title=title or f"host benchmark: {first.kernels}, {first.threads} thread(s), "
                                 f"{first.runs} runs after {first.warmup} warm-up")
    for column in ("model", "size", "median ms", "p5 ms", "p95 ms", "mean ms", "init ms", "first ms", "speedup"):
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for stats, speedup in zip(comparison.stats, comparison.speedups):
        name = Path(stats.model).name + (" + delegate" if stats.delegate else "")
        table.add_row(name, human_bytes(stats.model_bytes), f"{stats.median_ms:.3f}",
                      f"{stats.p5_ms:.3f}", f"{stats.p95_ms:.3f}", f"{stats.mean_ms:.3f}", f"{stats.init_ms:.1f}",
                      f"{stats.first_ms:.2f}", f"{speedup:.2f}x")
    return table


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
