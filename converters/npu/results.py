"""What an NPU check finds for one model on one target, as plain dataclasses (and JSON).

One ``NpuCheck`` per (model, target). ``status`` says how the compiler ended:

- ``compiled``: it wrote a model; ``ops_npu`` of ``ops_total`` ops run on the NPU in
  ``partitions`` NPU partitions (one DISPATCH_OP or ``ethos-u`` custom op each).
- ``none-offloaded``: no op at all could go to the NPU (Qualcomm's compiler then exits 1
  and writes nothing): 0 of ``ops_total``, a result, not a crash.
- ``refused``: the compiler stopped on something in the model it cannot represent (for
  Qualcomm: a complex64 tensor from RFFT2D, exit 5); ``note`` names it.
- ``not-applicable``: the target cannot run this kind of model (Ethos-U and float models).
- ``failed``: the compiler crashed or timed out; ``note`` has its last words.

Per-op-type placement comes from the models, not the logs: the ops of a type on the NPU are
that type's count in the input minus its count in the compiled output, which keeps the ops
left on the CPU beside the NPU partitions.

Not for: running a compiler (``qualcomm.py``, ``ethos_u.py``) or printing (the CLI).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

__all__ = ["STATUSES", "CpuOp", "OpPlacement", "NpuCheck", "placement_by_type", "NPU_OP_NAMES"]

STATUSES = ("compiled", "none-offloaded", "refused", "not-applicable", "failed")

# The ops a compiled model uses for its NPU partitions (not counted as CPU ops of a type).
NPU_OP_NAMES = ("DISPATCH_OP", "ethos-u")


@dataclass(frozen=True)
class CpuOp:
    """One op left on the CPU, with the compiler's own reason."""
    op: str                 # builtin name, e.g. TRANSPOSE
    reason: str
    index: int | None = None    # op index in its subgraph, where the compiler gives it
    name: str = ""              # the op's output tensor, where the compiler gives it


@dataclass(frozen=True)
class OpPlacement:
    npu: int
    cpu: int


@dataclass
class NpuCheck:
    model: str
    target: str                         # "qualcomm:SM8650", "ethos-u:ethos-u55-256"
    status: str
    ops_total: int
    ops_npu: int
    partitions: int
    per_op: dict[str, OpPlacement] = field(default_factory=dict)
    cpu_ops: list[CpuOp] = field(default_factory=list)
    estimate_ms: float | None = None    # Vela's time for the NPU part; Qualcomm gives none for phones
    estimate_cycles: int | None = None
    traffic: dict[str, int] = field(default_factory=dict)   # bytes: Qualcomm's DDR summary, Vela's SRAM/DRAM
    note: str = ""
    compiler: str = ""                  # which compiler and version
    seconds: float = 0.0                # wall time of the compile

    @property
    def compiled(self) -> bool:
        return self.status == "compiled"

    @property
    def fraction(self) -> float:
        return self.ops_npu / self.ops_total if self.ops_total else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["compiled"] = self.compiled
        data["per_op"] = {name: {"npu": p.npu, "cpu": p.cpu} for name, p in self.per_op.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NpuCheck":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["per_op"] = {name: OpPlacement(int(p.get("npu", 0)), int(p.get("cpu", 0)))
                            for name, p in (data.get("per_op") or {}).items()}
        values["cpu_ops"] = [CpuOp(c.get("op", "?"), c.get("reason", ""), c.get("index"), c.get("name", ""))
                             for c in data.get("cpu_ops") or []]
        values.setdefault("status", "compiled" if data.get("compiled") else "failed")
        values.setdefault("partitions", 0)
        return cls(**values)


def placement_by_type(before: Counter, after: Counter | None) -> dict[str, OpPlacement]:
    """Per op type: NPU = count before - count after (the compiled model keeps CPU ops only);
    ``after`` None means nothing was compiled, so every op is on the CPU."""
    placement = {}
    for name in sorted(before):
        cpu = before[name] if after is None else min(after.get(name, 0), before[name])
        placement[name] = OpPlacement(npu=before[name] - cpu, cpu=cpu)
    return placement
