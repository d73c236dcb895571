"""Profile results as append-only JSON lines: one record per run, written the moment it ends.

``ResultsStore(out_dir)`` appends to ``<out_dir>/runs.jsonl`` with one ``write`` of one
line and an ``fsync``, under a lock shared by the device workers, so a crash, a lost
device or Ctrl-C loses nothing that finished, and a half-written last line (power cut)
is cut off (kept aside) with a warning instead of poisoning the file. ``--resume`` asks
``done_keys()``: a run is done when an ``ok`` record with the same ``RunKey`` exists;
failed runs are retried. Not for: tables and plots (``wbmm_mobile.compare``).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from wbmm_mobile.errors import ResultsFileError

__all__ = ["RECORD_VERSION", "RESULTS_FILE", "RunKey", "RunRecord", "ResultsStore", "load_records"]

RECORD_VERSION = 1
RESULTS_FILE = "runs.jsonl"


@dataclass(frozen=True)
class RunKey:
    """What makes two runs the same measurement."""

    serial: str
    model_sha256: str
    config: str
    threads: int
    runs: int
    warmup: int
    binary_sha256: str
    power: bool

    def label(self) -> str:
        return f"{self.serial} {self.model_sha256[:10]} {self.config} {self.threads}t"


@dataclass
class RunRecord:
    """One run of one model under one config on one device."""

    key: RunKey
    status: str                       # "ok" or "failed"
    device: dict[str, Any]            # serial, model, manufacturer, soc, abi, sdk, android_version, loopback
    model: dict[str, Any]             # name, path, sha256, bytes
    binary: dict[str, Any]            # path, sha256, remote path
    config: str
    flags: list[str]
    threads: int
    started_at: str
    finished_at: str
    pinning: str | None = None        # taskset mask, or why there was none
    plugged: bool | None = None
    delegate_lib: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    thermal: dict[str, Any] | None = None
    energy: dict[str, Any] | None = None
    cooldown: dict[str, Any] | None = None
    error: str | None = None
    output: str | None = None         # the tool's full output when the run failed
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        values = dict(data)
        values["key"] = RunKey(**values["key"])
        known = set(cls.__dataclass_fields__)
        unknown = {k: values.pop(k) for k in list(values) if k not in known}
        record = cls(**values)
        record.extra.update(unknown)
        return record


def load_records(path: str | Path) -> list[RunRecord]:
    """Every complete record of a results file (or of ``runs.jsonl`` in a folder), in order.
    A truncated last line is skipped with a warning; a corrupt line elsewhere is an error."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results file (run `wbmm-mobile profile --out {path.parent}` first)")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(RunRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: incomplete last record skipped ({exc})", stacklevel=2)
                continue
            raise ResultsFileError(f"{path}:{number}: not a run record: {exc}") from None
    return records


class ResultsStore:
    """The append-only results file of one ``--out`` folder; safe to share between threads."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / RESULTS_FILE
        self._lock = threading.Lock()
        self._repair_tail()

    def _repair_tail(self) -> None:
        # A crash mid-write leaves a last line without its newline: that record never
        # finished, so cut it off (kept aside in runs.jsonl.partial) before appending more.
        if not (self.path.is_file() and self.path.stat().st_size):
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        (self.out_dir / (RESULTS_FILE + ".partial")).write_bytes(data[keep:])
        with open(self.path, "rb+") as handle:
            handle.truncate(keep)
        warnings.warn(f"{self.path}: an unfinished last record was cut off (kept in {RESULTS_FILE}.partial)",
                      stacklevel=3)

    def append(self, record: RunRecord) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[RunRecord]:
        if not self.path.is_file():
            return []
        return load_records(self.path)

    def done_keys(self) -> set[RunKey]:
        return {r.key for r in self.records() if r.status == "ok"}

    def extend(self, records: Iterable[RunRecord]) -> None:
        for record in records:
            self.append(record)
