"""JSON of the library's results: dataclasses, numpy values, NaN and infinity, written atomically.

At the bottom of the package layers (no project imports) so converters, the harness and the
CLI's ``--json`` options all write the same way.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_json", "write_json", "print_json"]


def _plain(value: Any):
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(value.to_dict() if hasattr(value, "to_dict") else asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def to_json(value: Any) -> str:
    """JSON of dataclasses/numpy values (NaN -> null, inf -> "inf")."""
    return json.dumps(_plain(value), indent=2) + "\n"


def write_json(value: Any, path: str | os.PathLike) -> Path:
    """Write ``to_json(value)`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(to_json(value))
    os.replace(partial, path)
    return path


def print_json(value: Any) -> None:
    """``to_json(value)`` on stdout (what ``--json -`` prints)."""
    import sys

    sys.stdout.write(to_json(value))
