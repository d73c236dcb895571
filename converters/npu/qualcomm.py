"""Compile a .tflite for a Qualcomm Hexagon NPU (HTP) ahead of time and read what it placed where.

The compiler is LiteRT's ``apply_plugin_main --cmd=apply`` with its Qualcomm plugin, run in a
subprocess (its libraries on ``LD_LIBRARY_PATH`` there only; see ``environment.py``) with a
timeout. What it tells, and where:

- stderr (LiteRT's log): one line per subgraph, ``Partitioned subgraph<g>, selected N ops, from
  a total of M ops. resulted in P partitions.``; one block per rejected op, ``QNN op validation
  failed: 'Transpose_2' (type=Transpose)`` then ``LiteRT Op #2 'Transpose' (code=39) is not
  supported in Qualcomm Compiler.``
- stdout (QNN's own log): the validator's reason before ``Failed to validate op Transpose_2``
  (e.g. ``has incorrect Rank 6``: the HTP has no rank-6 tensors), and per NPU partition a
  ``DDR bandwidth summary`` (spill, fill, total write and read bytes).
- the compiled .tflite: one DISPATCH_OP per NPU partition, the CPU ops beside them.

Two exits are results, not crashes: 1 when no op at all can be offloaded (0 of M), and 5 when
the model holds a tensor type QNN cannot represent (``Unsupported data type, litert type: 8``,
complex64 from RFFT2D): the compiler stops instead of leaving that op on the CPU, so the model
is refused as a whole, and the check names the type and the ops that make it. The version-skew
warnings and ``unexpected GraphHtpSettings option 66`` it prints are harmless. It gives no
latency estimate for phone SoCs ("Performance Estimates unsupported"), so ``estimate_ms`` is None.

Not for: preparing the QNN library folder (``environment.py``).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from converters.npu import environment
from converters.npu.models import op_counts, tensors_of_type
from converters.npu.results import NPU_OP_NAMES, CpuOp, NpuCheck, placement_by_type

__all__ = ["SOCS", "check", "parse_log"]

# The SoCs the plugin of ai-edge-litert 2.3 knows (its ai_edge_litert.aot.vendors.qualcomm.target.
# SocModel; a test keeps the two lists equal). Listed here so --help needs no import.
SOCS = ("SA8255", "SA8295", "SM8350", "SM8450", "SM8475", "SM8550", "SM8650", "SM8750", "SM8845", "SM8850")

_PARTITIONED = re.compile(r"Partitioned subgraph<(\d+)>, selected (\d+) ops, from a total of (\d+) ops\. "
                          r"resulted in (\d+) partitions")
_QNN_FAILED = re.compile(r"QNN op validation failed: '([^']+)' \(type=(\w+)\)")
_REJECTED = re.compile(r"LiteRT Op #(\d+) '(\w+)' \(code=(\d+)\) is not supported")
_QNN_ERROR = re.compile(r"<E>\s*(.*?)\s*$")
_QNN_CLOSES = re.compile(r"Failed to validate op (\S+)")
_UNSUPPORTED_TYPE = re.compile(r"Unsupported data type, litert type: (\d+)")
_DDR = re.compile(r"\b(spill_bytes|fill_bytes|write_total_bytes|read_total_bytes)=(\d+)")
# LiteRT's element types are TFLite's TfLiteType values.
_LITERT_TYPES = {0: "NOTYPE", 1: "FLOAT32", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL", 7: "INT16",
                 8: "COMPLEX64", 9: "INT8", 10: "FLOAT16", 11: "FLOAT64", 12: "COMPLEX128", 13: "UINT64",
                 14: "RESOURCE", 15: "VARIANT", 16: "UINT32", 17: "UINT16", 18: "INT4"}


class ParsedLog:
    def __init__(self):
        self.subgraphs: dict[int, tuple[int, int, int]] = {}      # g -> (selected, total, partitions)
        self.rejected: list[CpuOp] = []
        self.unsupported_types: list[str] = []
        self.ddr: dict[str, int] = {}

    @property
    def ops_npu(self) -> int:
        return sum(s[0] for s in self.subgraphs.values())

    @property
    def ops_total(self) -> int:
        return sum(s[1] for s in self.subgraphs.values())

    @property
    def partitions(self) -> int:
        return sum(s[2] for s in self.subgraphs.values())


def _builtin_name(code: int, fallback: str) -> str:
    from converters import tflite_io

    name = tflite_io.builtin_name(code)
    return fallback.upper() if name.startswith("BUILTIN_") else name


def parse_log(stdout: str, stderr: str) -> ParsedLog:
    """Partitions, rejected ops with QNN's reasons, unrepresentable types and DDR traffic from one run."""
    parsed = ParsedLog()
    # QNN's validator writes its reasons, then "Failed to validate op NAME": group them by NAME.
    reasons: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in stdout.splitlines():
        closes = _QNN_CLOSES.search(line)
        if closes:
            reasons.setdefault(closes.group(1), [])
            for reason in pending:
                if reason not in reasons[closes.group(1)]:
                    reasons[closes.group(1)].append(reason)
            pending = []
            continue
        error = _QNN_ERROR.search(line)
        if error and "validateOpConfig failed" not in error.group(1):
            # "[4294967295] has incorrect Rank 6." -> "has incorrect Rank 6"
            pending.append(re.sub(r"^\[\d+\]\s*", "", error.group(1)).rstrip("."))
        for key, value in _DDR.findall(line):
            parsed.ddr[key] = parsed.ddr.get(key, 0) + int(value)
    qnn_name = None
    for line in stderr.splitlines():
        failed = _QNN_FAILED.search(line)
        if failed:
            qnn_name = failed.group(1)
            continue
        rejected = _REJECTED.search(line)
        if rejected:
            index, kind, code = int(rejected.group(1)), rejected.group(2), int(rejected.group(3))
            why = "; ".join(reasons.get(qnn_name, [])) if qnn_name else ""
            reason = f"QNN: {why}" if why else ("QNN op validation failed" if qnn_name else
                                                "no Qualcomm lowering for this op")
            parsed.rejected.append(CpuOp(_builtin_name(code, kind), reason, index, qnn_name or ""))
            qnn_name = None
            continue
        partitioned = _PARTITIONED.search(line)
        if partitioned:
            g, selected, total, partitions = (int(v) for v in partitioned.groups())
            parsed.subgraphs[g] = (selected, total, partitions)
            continue
        unsupported = _UNSUPPORTED_TYPE.search(line)
        if unsupported:
            parsed.unsupported_types.append(_LITERT_TYPES.get(int(unsupported.group(1)), f"type {unsupported.group(1)}"))
    return parsed


def _last_words(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if "ERROR" in line or "error" in line.lower()]
    lines = [line for line in lines if "GraphHtpSettings option 66" not in line] or \
        [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def check(model_path: str | Path, soc: str = "SM8650", *, timeout: float = 300.0,
          tools: environment.QualcommTools | None = None, label: str | None = None,
          keep_compiled: str | Path | None = None) -> NpuCheck:
    """Compile ``model_path`` for ``soc`` and say which ops run on the HTP, with QNN's reasons for the rest."""
    tools = tools or environment.qualcomm_tools()
    model_path = Path(model_path)
    before = op_counts(model_path)
    result = NpuCheck(model=label or str(model_path), target=f"qualcomm:{soc}", status="failed",
                      ops_total=sum(before.values()), ops_npu=0, partitions=0,
                      per_op=placement_by_type(before, None), compiler=tools.version)
    with tempfile.TemporaryDirectory(prefix="wbmm-qnn-") as tmp:
        out = Path(tmp) / "compiled.tflite"
        command = [str(tools.apply_plugin), "--cmd=apply", f"--model={model_path.resolve()}", f"--o={out}",
                   "--soc_manufacturer=Qualcomm", f"--soc_model={soc}", f"--libs={tools.plugin_dir}", "--err=--"]
        started = time.perf_counter()
        try:
            run = subprocess.run(command, env=environment.qualcomm_env(tools), cwd=tmp, capture_output=True,
                                 text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            result.seconds = time.perf_counter() - started
            result.note = f"the Qualcomm compiler did not finish within {timeout:g} s"
            return result
        result.seconds = time.perf_counter() - started
        parsed = parse_log(run.stdout, run.stderr)
        result.cpu_ops = parsed.rejected
        result.traffic = {f"ddr_{k}": v for k, v in parsed.ddr.items()}
        if parsed.subgraphs:
            result.ops_total = parsed.ops_total
        if run.returncode == 0 and out.exists():
            after = op_counts(out)
            result.status, result.ops_npu, result.partitions = "compiled", parsed.ops_npu, parsed.partitions
            result.per_op = placement_by_type(before, Counter({k: v for k, v in after.items()
                                                              if k not in NPU_OP_NAMES}))
            if keep_compiled:
                Path(keep_compiled).write_bytes(out.read_bytes())
            _explain_unlogged(result)
        elif run.returncode == 1 and parsed.subgraphs and parsed.ops_npu == 0:
            result.status = "none-offloaded"
            result.note = "no op can run on the HTP (the compiler exits 1 when it offloads nothing)"
            _explain_unlogged(result)
        elif parsed.unsupported_types or run.returncode == 5:
            kinds = sorted(set(parsed.unsupported_types)) or ["a tensor type"]
            holders = [f"{name} from {'/'.join(writers) or 'the input'}" for kind in kinds
                       for name, writers in tensors_of_type(model_path, kind)]
            result.status = "refused"
            result.note = (f"QNN cannot represent {', '.join(kinds)} tensors"
                           + (f" ({'; '.join(holders[:3])})" if holders else "")
                           + f": the compiler stops (exit {run.returncode}) instead of leaving those ops on the CPU")
            for kind in kinds:
                for name, writers in tensors_of_type(model_path, kind):
                    for writer in writers:
                        result.cpu_ops.append(CpuOp(writer, f"writes a {kind} tensor, which QNN cannot represent",
                                                    None, name))
        else:
            result.note = f"the Qualcomm compiler failed (exit {run.returncode}): {_last_words(run.stderr)}"
    return result


def _explain_unlogged(result: NpuCheck) -> None:
    """CPU ops the log did not name (the partitioner may leave an accepted op out): listed without a reason."""
    from ai_edge_litert import schema_py_generated as schema

    logged = Counter(op.op for op in result.cpu_ops)
    for name, placement in result.per_op.items():
        reason = ("left on the CPU by the partitioner (the compiler logged no reason)" if hasattr(schema.BuiltinOperator, name) else
                  "custom op: the Qualcomm plugin lowers builtin ops only")
        for _ in range(placement.cpu - logged.get(name, 0)):
            result.cpu_ops.append(CpuOp(name, reason))
