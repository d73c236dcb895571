"""The WBMM lowerings, in one explicit ordered list (the order ``--help`` and reports use).

Adding a lowering: write ``converters/lowerings/<name>.py`` with a ``LOWERING`` object (a
``base.Lowering``: ``check``, ``emit``, optional ``finalize``), then add it to
``LOWERINGS`` below. Nothing else needs to change: the converter, the CLI choices and the
benchmark read this list.
"""

from __future__ import annotations

from converters.lowerings import bmm, custom, gather
from converters.lowerings.base import Lowering, WbmmParams

LOWERINGS: list[Lowering] = [bmm.LOWERING, gather.LOWERING, custom.LOWERING]
LOWERING_NAMES: tuple[str, ...] = tuple(lowering.name for lowering in LOWERINGS)
DEFAULT_LOWERING = "bmm"


def get_lowering(name: str) -> Lowering:
    for lowering in LOWERINGS:
        if lowering.name == name:
            return lowering
    raise ValueError(f"unknown lowering {name!r}; choose one of {', '.join(LOWERING_NAMES)}")


__all__ = ["LOWERINGS", "LOWERING_NAMES", "DEFAULT_LOWERING", "get_lowering", "Lowering", "WbmmParams"]
