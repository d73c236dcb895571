"""NPU check results as text a person reads: rows for a summary table, plain text, markdown.

The CLI draws the same rows with rich on a terminal; ``format_text`` is what a pipe or a log
gets (every row, nothing cut); ``markdown`` is the placement section of ``compare``'s report.

Not for: JSON (``converters.npu.write_json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from converters.npu.results import NpuCheck

__all__ = ["SUMMARY_COLUMNS", "summary_cells", "format_text", "markdown", "traffic_text"]

SUMMARY_COLUMNS = ("model", "target", "status", "NPU ops", "partitions", "estimate", "traffic", "note")


def _human(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def traffic_text(result: NpuCheck) -> str:
    t = result.traffic
    if "ddr_read_total_bytes" in t or "ddr_write_total_bytes" in t:
        text = f"DDR read {_human(t.get('ddr_read_total_bytes', 0))}, write {_human(t.get('ddr_write_total_bytes', 0))}"
        spill = t.get("ddr_spill_bytes", 0) + t.get("ddr_fill_bytes", 0)
        return text + (f", spill+fill {_human(spill)}" if spill else "")
    parts = [f"{key.replace('_total_bytes', '').replace('_', ' ')} {_human(value)}" for key, value in t.items()]
    return ", ".join(parts) or "-"


def summary_cells(result: NpuCheck, model_label: str | None = None) -> list[str]:
    npu = f"{result.ops_npu}/{result.ops_total} ({100 * result.fraction:.0f}%)" if result.ops_total else "0/0"
    if result.estimate_ms is not None:
        estimate = f"{result.estimate_ms:.3f} ms" + (f" ({result.estimate_cycles:,} cycles)"
                                                     if result.estimate_cycles else "")
    else:
        estimate = "-"
    return [model_label or Path(result.model).name, result.target, result.status, npu, str(result.partitions),
            estimate, traffic_text(result), result.note]


def _table(header: Sequence[str], rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(str(line[i])) for line in [list(header)] + rows) for i in range(len(header))]
    return [indent + "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in [list(header)] + rows]


def format_text(results: Sequence[NpuCheck]) -> str:
    """Everything, as plain text: the summary, then per model and target the per-op table and CPU ops."""
    lines = _table(SUMMARY_COLUMNS, [summary_cells(r) for r in results])
    for result in results:
        if result.status == "not-applicable":
            continue     # its note in the summary says all there is
        lines += ["", f"{Path(result.model).name} on {result.target}: {result.status}, "
                      f"{result.ops_npu} of {result.ops_total} ops on the NPU in {result.partitions} partition(s)"
                      + (f" [{result.compiler}, {result.seconds:.1f} s]" if result.compiler else "")]
        lines += _table(("op", "npu", "cpu"), [[name, str(p.npu), str(p.cpu)] for name, p in result.per_op.items()],
                        indent="  ")
        for op in result.cpu_ops:
            where = f" #{op.index}" if op.index is not None else ""
            named = f" ({op.name})" if op.name else ""
            lines.append(f"  CPU: {op.op}{where}{named}: {op.reason}")
    return "\n".join(lines) + "\n"


def markdown(results: Sequence[NpuCheck], title: str = "NPU placement") -> str:
    """A markdown section: the summary table and, per model and target, its CPU ops with reasons."""
    out = [f"## {title}", "",
           "Ops on the NPU of the total, as the NPU compilers place them (`wbmm-mobile npu-check`); the estimate "
           "is Vela's for the NPU part (Ethos-U only; Qualcomm's compiler gives none for phone SoCs).", ""]
    out.append("| " + " | ".join(SUMMARY_COLUMNS) + " |")
    out.append("|" + "---|" * len(SUMMARY_COLUMNS))
    for result in results:
        out.append("| " + " | ".join(c.replace("|", "/") for c in summary_cells(result)) + " |")
    out.append("")
    for result in results:
        if result.cpu_ops:
            out.append(f"- {Path(result.model).name} on {result.target}, on the CPU: "
                       + "; ".join(f"{op.op} ({op.reason})" for op in result.cpu_ops[:8])
                       + (f"; and {len(result.cpu_ops) - 8} more" if len(result.cpu_ops) > 8 else ""))
    out.append("")
    return "\n".join(out)
