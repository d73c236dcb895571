"""How every command prints: tables that keep whole values off a terminal, and ``--json``.

On a terminal rich fits tables to the window (and may fold or shorten cells). Piped or
redirected (``wbmm-mobile devices | cat``, ``> file``, CI logs) nothing is cut: the
console is as wide as the widest line, so serials, paths and reasons stay whole.

``--json PATH`` is the same option on every table command: the command's result as JSON
in PATH, or on stdout instead of the table with ``--json -``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# Wide enough for any line we print; rich tables still take only their natural width.
_PIPE_WIDTH = 100_000


def stdout_console(args: argparse.Namespace | None = None):
    """The console a command prints its table and notes on: stdout, or stderr when ``--json -``
    has stdout for the JSON alone."""
    from rich.console import Console

    stream = sys.stderr if args is not None and json_to_stdout(args) else sys.stdout
    return Console(file=stream) if stream.isatty() else Console(file=stream, width=_PIPE_WIDTH)


def add_json_argument(parser: argparse.ArgumentParser, what: str, *aliases: str) -> None:
    parser.add_argument("--json", *aliases, dest="json", metavar="PATH", default=None,
                        help=f"also write {what} as JSON to PATH; '-' prints the JSON instead of the table "
                             "(default: none)")


def json_to_stdout(args: argparse.Namespace) -> bool:
    return getattr(args, "json", None) == "-"


def emit_json(value: Any, args: argparse.Namespace, console=None) -> None:
    """Write ``value`` where ``--json`` says (nothing when it was not given)."""
    from wbmm_mobile.json_output import print_json, write_json

    if args.json is None:
        return
    if args.json == "-":
        print_json(value)
        return
    write_json(value, args.json)
    if console is not None:
        console.print(f"wrote {args.json}", highlight=False, markup=False, soft_wrap=True)
