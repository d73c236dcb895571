"""The one vocabulary of backends: where a model's ops run, named the way LiteRT users name them.

Every command, its ``--help`` and its JSON use these names: ``profile --configs``,
``rewrite --target``, ``bench --kernels``, the strategy tables and the reports. A
command accepts the subset that makes sense for it (``bench`` times on this computer,
so it knows ``cpu`` and ``xnnpack``; ``rewrite`` also targets the NPUs).

The spellings of release 0.1 (``builtin`` for ``cpu``, ``delegate`` for ``wbmm``) are
still accepted for one release: ``canonical`` maps them and says so once per spelling.

Not for: how a backend is switched on (``android_harness.profile.config_flags`` for
benchmark_model, ``converters.verify.load_interpreter`` for the interpreter here).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["Backend", "BACKENDS", "NAMES", "ALIASES", "canonical", "describe"]


@dataclass(frozen=True)
class Backend:
    name: str
    description: str


# Ordered as tables list them: the CPU runtimes first, then accelerators, then ours.
BACKENDS: tuple[Backend, ...] = (
    Backend("cpu", "TFLite's own builtin CPU kernels, no delegate (benchmark_model --use_xnnpack=false)"),
    Backend("xnnpack", "the XNNPACK delegate, LiteRT's default CPU backend"),
    Backend("gpu", "the TFLite GPU delegate"),
    Backend("nnapi", "Android's NNAPI delegate, which hands ops to the phone's NPU/DSP/GPU drivers"),
    Backend("qualcomm-htp", "Qualcomm's Hexagon NPU (HTP), compiled ahead of time by LiteRT's Qualcomm plugin"),
    Backend("ethos-u", "Arm's Ethos-U microNPU, compiled by Vela (integer models only)"),
    Backend("wbmm", "wbmm-mobile's C++ delegate for large depthwise convs and WBMM, over XNNPACK"),
)
NAMES: tuple[str, ...] = tuple(b.name for b in BACKENDS)

# Old spelling -> name. Accepted for one release (0.2), then removed.
ALIASES: dict[str, str] = {"builtin": "cpu", "delegate": "wbmm"}

_warned: set[str] = set()


def canonical(name: str, allowed: tuple[str, ...] = NAMES, *, what: str = "backend") -> str:
    """``name`` in this vocabulary; an old spelling is mapped with a one-time note on stderr.

    Raises ValueError naming the choices when ``name`` is neither a name in ``allowed``
    nor an alias of one.
    """
    mapped = ALIASES.get(name, name)
    if mapped not in allowed:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
    if mapped != name and name not in _warned:
        _warned.add(name)
        print(f"wbmm-mobile: note: {what} {name!r} is now called {mapped!r}; "
              f"the old name is accepted until release 0.3", file=sys.stderr)
    return mapped


def describe(names: tuple[str, ...] = NAMES) -> str:
    """One line per backend, for --help texts."""
    by_name = {b.name: b for b in BACKENDS}
    return "; ".join(f"{n}: {by_name[n].description}" for n in names)
