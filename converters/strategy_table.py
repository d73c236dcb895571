"""Per-device strategy tables: the file ``wbmm-mobile tune`` writes and ``rewrite --strategy-table`` reads.

A table file holds one or more *entries*; an entry is one device's measurements for one
target at one thread count, keyed by what the device answered (``DeviceIdentity``: its
model, SoC, ABI, Android level, hardware serial, the benchmark binary that timed it, our
library's version). Each entry has one row per distinct large-depthwise layer (height,
width, channels, kernel, dilation, padding, dtype) and, per candidate strategy, the
median and spread of its timed runs and the verifier's worst relative error. The
candidate ``depthwise`` is the layer kept as it is (the stock conv).

``load`` / ``save`` (atomic: a temporary file then a rename, so a killed tune leaves the
last complete table), ``merge`` (several phones into one file a team commits next to its
models), ``select`` (the one entry for a device, target and thread count, with the reason
when none fits), and ``DeviceTable.lookup`` (the answer ``converters.strategy.pick``
asks for: the nearest measured shape's timings, with the distance said). The format is
versioned (``VERSION``) and described in docs/USAGE.md.

Not for: measuring (``android_harness.tune``) or the choice itself (``converters.strategy``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from converters.strategy import LayerShape, TableAnswer, nearest_row, shape_words
from wbmm_mobile.errors import StrategyTableError

FORMAT = "wbmm-mobile strategy table"
VERSION = 1
# Where `tune` keeps a copy of each device's table and `rewrite --device SERIAL` looks.
CACHE_DIR = Path(os.environ.get("WBMM_TABLE_CACHE", Path.home() / ".cache" / "wbmm-mobile" / "tables"))
KEEP = "depthwise"   # the candidate that keeps the layer: pick's name for the stock conv's time


@dataclass(frozen=True)
class DeviceIdentity:
    """Who measured an entry, as the device answered (getprop), and with what."""

    serial: str                 # as ADB named it when measured (a TCP serial changes with the port)
    hardware_serial: str        # ro.serialno, "" when the device does not say
    model: str
    manufacturer: str
    soc: str
    abi: str
    sdk: int
    android_version: str
    loopback: bool
    runtime: str                # the benchmark binary that timed it, in words
    runtime_sha256: str
    library: str                # "wbmm-mobile <version>"
    target: str                 # backend name (wbmm_mobile.backends)
    threads: int

    def differences(self, other: "DeviceIdentity") -> list[str]:
        """The fields that make ``other`` another measurement, as "name: ours vs theirs"."""
        compared = ("model", "manufacturer", "soc", "abi", "sdk", "android_version", "runtime_sha256", "library",
                    "target", "threads")
        diffs = [f"{name}: {getattr(self, name)!r} vs {getattr(other, name)!r}" for name in compared
                 if getattr(self, name) != getattr(other, name)]
        if self.device_id != other.device_id:
            diffs.insert(0, f"device: {self.device_id!r} vs {other.device_id!r}")
        return diffs

    @property
    def device_id(self) -> str:
        """The serial that names the device across connections: the hardware one when it says."""
        return self.hardware_serial or self.serial

    def matches_serial(self, serial: str) -> bool:
        return serial in (self.serial, self.hardware_serial)

    def describe(self) -> str:
        where = ", the loopback device (this computer)" if self.loopback else ""
        return (f"{self.manufacturer} {self.model}".strip() + f" (serial {self.device_id}{where}; {self.soc}, "
                f"{self.abi}, Android {self.android_version or '?'}), {self.target}, {self.threads} thread"
                + ("s" if self.threads != 1 else "") + f", {self.runtime}, {self.library}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeviceIdentity":
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise StrategyTableError(f"device identity without {', '.join(sorted(missing))}")
        return cls(**{k: data[k] for k in names})


@dataclass
class Entry:
    """One device's measurements for one target and thread count."""

    identity: DeviceIdentity
    runs: int
    warmup: int
    layers: list[dict[str, Any]] = field(default_factory=list)
    measured_at: str = ""

    def row(self, key: dict[str, Any]) -> dict[str, Any]:
        """The row of this layer key (height, width, channels, kernel, dilation, padding, dtype), made if new."""
        for row in self.layers:
            if all(row.get(k) == v for k, v in key.items()):
                return row
        row = dict(key, candidates={}, refused={}, failed={})
        self.layers.append(row)
        return row

    def measured(self) -> set[tuple]:
        """(layer key values..., strategy) of every candidate with a timing."""
        return {(*_key_values(row), name) for row in self.layers for name in row.get("candidates", {})}

    def to_dict(self) -> dict[str, Any]:
        return {"identity": asdict(self.identity), "runs": self.runs, "warmup": self.warmup,
                "measured_at": self.measured_at, "layers": self.layers}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Entry":
        try:
            return cls(DeviceIdentity.from_dict(data["identity"]), int(data["runs"]), int(data["warmup"]),
                       list(data.get("layers", [])), str(data.get("measured_at", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise StrategyTableError(f"an entry is malformed ({type(exc).__name__}: {exc})") from None


LAYER_KEY = ("height", "width", "channels", "kernel", "dilation", "padding", "dtype")


def _key_values(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in LAYER_KEY)


@dataclass
class TableFile:
    """A table file: its entries, in the order they were added."""

    entries: list[Entry] = field(default_factory=list)
    path: str | None = None

    def entry_for(self, identity: DeviceIdentity) -> Entry | None:
        for entry in self.entries:
            if not entry.identity.differences(identity):
                return entry
        return None

    def replace(self, entry: Entry) -> None:
        """Put ``entry`` in place of the one with the same identity, or append it."""
        for index, existing in enumerate(self.entries):
            if not existing.identity.differences(entry.identity):
                self.entries[index] = entry
                return
        self.entries.append(entry)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "entries": [e.to_dict() for e in self.entries]}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load(path: str | os.PathLike) -> TableFile:
    """A table file; StrategyTableError (one line, naming the file) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise StrategyTableError(f"{path}: no such strategy table")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StrategyTableError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StrategyTableError(f"{path}: not a strategy table (no \"format\": \"{FORMAT}\"; "
                                 "`wbmm-mobile tune` writes them)")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise StrategyTableError(f"{path}: table version {version!r}; this wbmm-mobile reads up to {VERSION}")
    try:
        entries = [Entry.from_dict(e) for e in data.get("entries", [])]
    except StrategyTableError as exc:
        raise StrategyTableError(f"{path}: {exc}") from None
    return TableFile(entries, str(path))


def save(table: TableFile, path: str | os.PathLike) -> None:
    """Write atomically: a reader (or a killed run) sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".partial")
    with open(staged, "w") as handle:
        handle.write(json.dumps(table.to_dict(), indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, path)


def merge(tables: Iterable[TableFile]) -> TableFile:
    """One file of every entry; entries of the same identity are joined row by row, the later
    measurement of a candidate winning (by its ``measured_at``)."""
    merged = TableFile()
    for table in tables:
        for entry in table.entries:
            mine = merged.entry_for(entry.identity)
            if mine is None:
                merged.entries.append(Entry(entry.identity, entry.runs, entry.warmup,
                                            json.loads(json.dumps(entry.layers)), entry.measured_at))
                continue
            for row in entry.layers:
                target = mine.row({k: row.get(k) for k in LAYER_KEY})
                for name, measurement in row.get("candidates", {}).items():
                    old = target["candidates"].get(name)
                    if old is None or measurement.get("measured_at", "") >= old.get("measured_at", ""):
                        target["candidates"][name] = measurement
                for part in ("refused", "failed"):
                    target.setdefault(part, {}).update(row.get(part, {}))
            mine.measured_at = max(mine.measured_at, entry.measured_at)
    return merged


def cache_path(identity: DeviceIdentity, cache_dir: Path | None = None) -> Path:
    """The user's cached copy of one device's tables (all targets and thread counts)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{identity.model}-{identity.device_id}")
    return Path(cache_dir or CACHE_DIR) / f"{safe}.json"


def cached_tables(cache_dir: Path | None = None) -> list[TableFile]:
    folder = Path(cache_dir or CACHE_DIR)
    return [load(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


@dataclass(frozen=True)
class DeviceTable:
    """One entry as a timing source for ``converters.strategy.pick`` (``lookup``)."""

    entry: Entry
    path: str

    @property
    def description(self) -> str:
        return f"{self.path}: {self.entry.identity.describe()}"

    def lookup(self, shape: LayerShape, kernels: str) -> TableAnswer:
        # float32 rows first: of two rows at the same distance, the float32 timing is taken.
        rows = sorted((row for row in self.entry.layers if row.get("candidates")),
                      key=lambda row: row.get("dtype") != "float32")
        if kernels != self.entry.identity.target or not rows:
            return TableAnswer(shape, None, f"measurement for {kernels} in {self.description}")
        best, distance = nearest_row(rows, shape)
        nearest = LayerShape(best["height"], best["width"], best["channels"], best["kernel"])
        times = {name: c["median_ms"] for name, c in best["candidates"].items()}
        return TableAnswer(nearest, times, f"{Path(self.path).name} ({self.entry.identity.model or 'device'}), "
                                           f"{shape_words(best, distance)}")


def select(tables: list[TableFile], *, target: str, device: str | None = None, threads: int | None = None,
           where: str) -> DeviceTable:
    """The one entry for ``target`` (and ``device``, ``threads`` when given) among ``tables``;
    StrategyTableError saying what the tables hold when none or several fit."""
    entries = [(table, entry) for table in tables for entry in table.entries]
    held = "; ".join(sorted({f"{e.identity.describe()}" for _, e in entries})) or "nothing"
    fits = [(t, e) for t, e in entries if e.identity.target == target]
    if not fits:
        raise StrategyTableError(f"{where} holds no table for target {target} (it holds: {held})")
    if device is not None:
        fits = [(t, e) for t, e in fits if e.identity.matches_serial(device)]
        if not fits:
            raise StrategyTableError(f"{where} holds no {target} table of device {device}: another device's table "
                                     f"is refused (it holds: {held})")
    if threads is not None:
        counts = sorted({e.identity.threads for _, e in fits})
        fits = [(t, e) for t, e in fits if e.identity.threads == threads]
        if not fits:
            raise StrategyTableError(f"{where} was measured at {', '.join(map(str, counts))} thread(s), "
                                     f"not {threads}: timings at another thread count are refused")
    devices = {e.identity.device_id for _, e in fits}
    if len(devices) > 1:
        raise StrategyTableError(f"{where} holds {target} tables of {len(devices)} devices "
                                 f"({', '.join(sorted(devices))}): pass --device SERIAL to choose one")
    if len({e.identity.threads for _, e in fits}) > 1:
        raise StrategyTableError(f"{where} holds tables at {', '.join(str(e.identity.threads) for _, e in fits)} "
                                 "threads: pass --threads N to choose one")
    newest = max(fits, key=lambda te: te[1].measured_at)   # the same device measured again with another binary
    return DeviceTable(newest[1], newest[0].path or where)


def load_for(*, target: str, path: str | os.PathLike | None = None, device: str | None = None,
             threads: int | None = None, cache_dir: Path | None = None) -> DeviceTable:
    """The table ``rewrite`` picks from: the file at ``path``, or the cached tables of ``device``."""
    if path is not None:
        return select([load(path)], target=target, device=device, threads=threads, where=str(path))
    if device is None:
        raise StrategyTableError("a strategy table needs a file (--strategy-table) or a device (--device)")
    folder = Path(cache_dir or CACHE_DIR)
    tables = cached_tables(folder)
    if not any(e.identity.matches_serial(device) for t in tables for e in t.entries):
        raise StrategyTableError(f"no table of device {device} in {folder} "
                                 f"(`wbmm-mobile tune --device {device} ...` measures one)")
    return select(tables, target=target, device=device, threads=threads, where=str(folder))


def summary_rows(table: TableFile) -> list[dict[str, Any]]:
    """One row per entry, for ``tune --list``: who, what, how many layers and candidates."""
    rows = []
    for entry in table.entries:
        identity = entry.identity
        timed = sum(len(row.get("candidates", {})) for row in entry.layers)
        rows.append({"file": table.path, "device": f"{identity.manufacturer} {identity.model}".strip(),
                     "serial": identity.device_id, "soc": identity.soc, "abi": identity.abi,
                     "target": identity.target, "threads": identity.threads, "runtime": identity.runtime,
                     "library": identity.library, "layers": len(entry.layers), "timings": timed,
                     "measured_at": entry.measured_at})
    return rows
