"""Argument types the commands share (argparse turns their ArgumentTypeError into a usage error, exit 2)."""

from __future__ import annotations

import argparse
from typing import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer type that refuses values below ``minimum``."""
    def parse(text: str) -> int:
        value = int(text)  # argparse reports a ValueError as "invalid ... value"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def backend_name(allowed: tuple[str, ...], what: str = "backend") -> Callable[[str], str]:
    """A backend name from ``wbmm_mobile.backends`` restricted to ``allowed``; old spellings are mapped."""
    from wbmm_mobile import backends

    def parse(text: str) -> str:
        try:
            return backends.canonical(text, allowed, what=what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse
