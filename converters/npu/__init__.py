"""Which ops of a .tflite would run on a phone or microcontroller NPU: the compilers' own answer.

Two real NPU compilers run on a Linux x86-64 host from PyPI alone (the optional ``npu``
extra): Qualcomm's, for the Hexagon NPU (HTP) of Snapdragon SoCs (LiteRT's ahead-of-time
Qualcomm plugin over the QNN host libraries of ``onnxruntime-qnn``, ``qualcomm.py``), and Arm's
Vela for the Ethos-U55/U65/U85 (``ethos_u.py``). ``check_models`` compiles every model for every
target, each compile in its own subprocess, and returns one ``NpuCheck`` per pair: ops on the
NPU of the total, NPU partitions, placement per op type, each CPU op with the compiler's reason,
Vela's cycle/time estimate, memory traffic. Nothing here runs a model.

Targets are written ``qualcomm:SM8650`` and ``ethos-u:ethos-u55-256``; in ``wbmm_mobile.backends``
the two families are ``qualcomm-htp`` and ``ethos-u``.

Not for: rewriting a model so it stays on an NPU (``converters/npu_placement.py`` uses this).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from converters.npu.results import STATUSES, CpuOp, NpuCheck, OpPlacement

__all__ = ["Target", "QUALCOMM_DEFAULT", "ETHOS_U_DEFAULT", "FAMILIES", "parse_target", "default_targets",
           "check_models", "check_model", "write_json", "read_json", "NpuCheck", "CpuOp", "OpPlacement",
           "STATUSES", "DEFAULT_TIMEOUT"]

QUALCOMM_DEFAULT = ("SM8650", "SM8750")
ETHOS_U_DEFAULT = ("ethos-u55-256",)
DEFAULT_TIMEOUT = 300.0
# Family in a target string -> the backend name in wbmm_mobile.backends.
FAMILIES = {"qualcomm": "qualcomm-htp", "ethos-u": "ethos-u"}


@dataclass(frozen=True)
class Target:
    family: str     # "qualcomm" or "ethos-u"
    name: str       # "SM8650", "ethos-u55-256"

    def __str__(self) -> str:
        return f"{self.family}:{self.name}"

    @property
    def backend(self) -> str:
        return FAMILIES[self.family]


def parse_target(family: str, name: str) -> Target:
    """A validated target; ValueError naming the choices for an unknown SoC or configuration."""
    from converters.npu import ethos_u, qualcomm

    if family == "qualcomm":
        soc = name.strip().upper()
        if soc not in qualcomm.SOCS:
            raise ValueError(f"unknown Qualcomm SoC {name!r}; choose from {', '.join(qualcomm.SOCS)}")
        return Target("qualcomm", soc)
    if family == "ethos-u":
        config = name.strip().lower()
        if config not in ethos_u.CONFIGS:
            raise ValueError(f"unknown Ethos-U configuration {name!r}; choose from {', '.join(ethos_u.CONFIGS)}")
        return Target("ethos-u", config)
    raise ValueError(f"unknown NPU family {family!r}; choose from {', '.join(FAMILIES)}")


def default_targets(backend: str | None = None) -> list[Target]:
    """The default targets of all families, or of one backend (``qualcomm-htp`` or ``ethos-u``)."""
    targets = [Target("qualcomm", soc) for soc in QUALCOMM_DEFAULT] + [Target("ethos-u", c) for c in ETHOS_U_DEFAULT]
    return [t for t in targets if backend is None or t.backend == backend]


def _require(targets: Sequence[Target]) -> None:
    """Fail before any compile when a family's compiler is missing (NpuExtraMissingError, one line)."""
    from converters.npu import environment

    if any(t.family == "qualcomm" for t in targets):
        environment.qualcomm_tools("npu-check for Qualcomm")
    if any(t.family == "ethos-u" for t in targets):
        environment.vela_command("npu-check for Ethos-U")


def check_model(path: str | Path, target: Target, *, timeout: float = DEFAULT_TIMEOUT, label: str | None = None,
                keep_compiled: str | Path | None = None) -> NpuCheck:
    from converters.npu import ethos_u, qualcomm

    if target.family == "qualcomm":
        return qualcomm.check(path, target.name, timeout=timeout, label=label, keep_compiled=keep_compiled)
    return ethos_u.check(path, target.name, timeout=timeout, label=label, keep_compiled=keep_compiled)


def check_models(paths: Sequence[str | Path], targets: Sequence[Target], *, timeout: float = DEFAULT_TIMEOUT,
                 progress: bool = False, on_result: Callable[[NpuCheck], None] | None = None) -> list[NpuCheck]:
    """One NpuCheck per (model, target), models in the order given. Every model is read first, so a
    missing or corrupt file is reported before anything compiles; ``on_result`` sees each as it lands."""
    from converters import tflite_io

    for path in paths:
        tflite_io.read_model(path)
    _require(targets)
    results = []
    bar = task = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("compiling", total=len(paths) * len(targets))
    try:
        for path in paths:
            for target in targets:
                if bar is not None:
                    bar.update(task, description=f"{Path(path).name} for {target}")
                result = check_model(path, target, timeout=timeout)
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return results


def write_json(results: Sequence[NpuCheck], path: str | Path) -> Path:
    """The records as a JSON list (written beside and renamed, so a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    partial.replace(path)
    return path


def read_json(path: str | Path) -> list[NpuCheck]:
    """Records written by ``write_json`` (``npu-check --json``); ResultsFileError naming the file otherwise."""
    from wbmm_mobile.errors import ResultsFileError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError("expected a JSON list of npu-check records")
        return [NpuCheck.from_dict(item) for item in data]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ResultsFileError(f"{path}: not npu-check JSON ({exc})") from None
