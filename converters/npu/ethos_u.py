"""Compile an integer .tflite for an Arm Ethos-U microNPU with Vela and read placement and cost.

Vela (``ethos-u-vela``) runs in a subprocess with a timeout:
``vela MODEL --accelerator-config ethos-u55-256 --output-dir DIR --show-cpu-operations``. It
tells, and this module reads:

- stdout: for every op it leaves on the CPU, ``Warning (supported operators) operator: TYPE,
  ofm: 'NAME'`` then ``Reason: ...`` (e.g. ``Operation has tensor with unsupported DataType
  Float32``), and its own counts ``CPU operators = a`` / ``NPU operators = b`` (after it splits
  ops: one BATCH_MATMUL can become many NPU operations, so the check counts ops from the models);
- ``DIR/<name>_vela.tflite``: the NPU part as ``ethos-u`` custom ops, the CPU ops beside them;
- ``DIR/<name>_summary_<system>.csv``: ``cycles_total``, ``inference_time`` (s) and memory
  traffic of the NPU part. The default system configuration (memory speeds) differs per
  accelerator, so compare estimates within one accelerator only. CPU ops are not in it.

The Ethos-U runs int8 and int16 only: a model with no integer activation is reported as not
applicable without running Vela (every op would stay on the CPU).

Not for: Qualcomm (``qualcomm.py``).
"""

from __future__ import annotations

import csv
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from converters.npu import environment
from converters.npu.models import activation_precision, op_counts
from converters.npu.results import NPU_OP_NAMES, CpuOp, NpuCheck, placement_by_type

__all__ = ["CONFIGS", "check", "parse_cpu_warnings", "parse_summary"]

# Vela 5.2's accelerator configurations (ethosu.vela.architecture_features.Accelerator; a test
# keeps the two lists equal). Listed here so --help needs no import.
CONFIGS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
           "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")

_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.*)'\s*$")
_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+)")
_TRAFFIC_COLUMNS = ("sram_total_bytes", "dram_total_bytes", "on_chip_flash_total_bytes", "off_chip_flash_total_bytes")


def parse_cpu_warnings(stdout: str) -> list[CpuOp]:
    """Each CPU op Vela warns about, with its reason (the ``Reason:`` line and the detail after it)."""
    ops: list[CpuOp] = []
    current: tuple[str, str] | None = None
    reason: list[str] = []

    def close():
        if current is not None:
            ops.append(CpuOp(current[0], "; ".join(reason) or "Vela gave no reason", None, current[1]))

    for line in stdout.splitlines():
        warning = _WARNING.match(line)
        if warning:
            close()
            current, reason = (warning.group(1), warning.group(2)), []
        elif current is not None and line.strip() and not line.startswith(("Warning", "Network summary")):
            reason.append(line.strip().removeprefix("Reason: "))
        elif current is not None:
            close()
            current, reason = None, []
    close()
    return ops


def parse_summary(path: Path) -> dict[str, float]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    values = {}
    for key, text in rows[-1].items():
        try:
            values[key] = float(text)
        except (TypeError, ValueError):
            continue
    return values


def _output_names(model_path: Path) -> dict[str, str]:
    """Output tensor name -> op type of every op in a model, for matching Vela's warnings."""
    from converters import tflite_io

    tree = tflite_io.read_model(model_path)
    names = {}
    for g, graph in enumerate(tree.subgraphs):
        for op, kind in zip(graph.operators or [], tflite_io.op_names(tree, g)):
            for index in (op.outputs if op.outputs is not None else []):
                if int(index) >= 0:
                    names[tflite_io.tensor_name(graph.tensors[int(index)])] = kind
    return names


def check(model_path: str | Path, config: str = "ethos-u55-256", *, timeout: float = 300.0,
          label: str | None = None, keep_compiled: str | Path | None = None) -> NpuCheck:
    """Run Vela on ``model_path`` for ``config``: placement per op, the reasons, the cycle/time estimate."""
    model_path = Path(model_path)
    before = op_counts(model_path)
    result = NpuCheck(model=label or str(model_path), target=f"ethos-u:{config}", status="failed",
                      ops_total=sum(before.values()), ops_npu=0, partitions=0,
                      per_op=placement_by_type(before, None), compiler=environment.vela_version())
    if activation_precision(model_path) == "float":
        result.status = "not-applicable"
        result.note = "the Ethos-U runs int8/int16 models only and this model computes in float"
        result.cpu_ops = [CpuOp(name, "float model: the Ethos-U has no float arithmetic") for name in
                          sorted(before.elements())]
        return result
    command = environment.vela_command()
    with tempfile.TemporaryDirectory(prefix="wbmm-vela-") as tmp:
        command += [str(model_path.resolve()), "--accelerator-config", config, "--output-dir", tmp,
                    "--show-cpu-operations"]
        started = time.perf_counter()
        try:
            run = subprocess.run(command, cwd=tmp, capture_output=True, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            result.seconds = time.perf_counter() - started
            result.note = f"Vela did not finish within {timeout:g} s"
            return result
        result.seconds = time.perf_counter() - started
        compiled = sorted(Path(tmp).glob("*_vela.tflite"))
        summaries = sorted(Path(tmp).glob("*_summary_*.csv"))
        if run.returncode != 0 or not compiled:
            # Vela's own error is the last "Error" line of stderr (stdout ends with its config warnings).
            lines = [line.strip() for line in run.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if "Error" in line] or lines or \
                [line for line in run.stdout.splitlines() if line.strip()]
            result.note = f"Vela failed (exit {run.returncode}): {errors[-1][:300] if errors else 'no output'}"
            return result
        after = op_counts(compiled[0])
        result.status = "compiled"
        result.partitions = after.get("ethos-u", 0)
        result.per_op = placement_by_type(before, Counter({k: v for k, v in after.items() if k not in NPU_OP_NAMES}))
        result.ops_npu = sum(p.npu for p in result.per_op.values())
        result.cpu_ops = _cpu_ops(parse_cpu_warnings(run.stdout), compiled[0])
        counts = dict(m.groups() for m in map(_COUNT.match, run.stdout.splitlines()) if m)
        if counts:
            result.note = (f"Vela's own count after splitting ops: {counts.get('NPU', '?')} NPU, "
                           f"{counts.get('CPU', '?')} CPU operations")
        if summaries:
            summary = parse_summary(summaries[0])
            if result.ops_npu and summary.get("inference_time"):
                result.estimate_ms = summary["inference_time"] * 1000.0
                result.estimate_cycles = int(summary.get("cycles_total", 0))
            result.traffic = {key: int(summary[key]) for key in _TRAFFIC_COLUMNS if summary.get(key)}
        if keep_compiled:
            Path(keep_compiled).write_bytes(compiled[0].read_bytes())
    return result


def _cpu_ops(warnings: list[CpuOp], compiled: Path) -> list[CpuOp]:
    """The compiled model's CPU ops, each with Vela's reason where it warned about that output tensor."""
    by_output = {op.name: op for op in warnings}
    found = []
    for name, kind in _output_names(compiled).items():
        if kind in NPU_OP_NAMES:
            continue
        warned = by_output.get(name)
        found.append(CpuOp(kind, warned.reason if warned else "placed on the CPU by Vela (no reason given)",
                           None, name))
    return found
