"""Exceptions -> one-line messages and exit codes, through one ordered table.

The first matching row wins, so specific classes come before their bases. A
traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import sys
import traceback

from wbmm_mobile import errors

# (exception class, exit code, prefix). Exit 2: the user's input or environment;
# 1: the tool failed on valid input (verification, benchmark, delegate); 130: Ctrl-C.
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (KeyboardInterrupt, 130, "interrupted"),
    (errors.VerificationError, 1, "verification failed"),
    (errors.DeviceUnauthorizedError, 2, "device unauthorized"),
    (errors.DeviceError, 2, "device error"),
    (errors.DelegateError, 1, "delegate error"),
    (errors.BenchmarkError, 1, "benchmark failed"),
    (errors.NpuExtraMissingError, 2, "npu extra not installed"),
    (errors.NpuSetupError, 2, "npu setup"),
    (errors.ModelNotFoundError, 2, "not found"),
    (FileNotFoundError, 2, "not found"),
    (errors.WbmmError, 2, "error"),
    (PermissionError, 2, "permission denied"),
    (OSError, 2, "error"),
]


def report_error(exc: BaseException, debug: bool = False) -> int:
    if isinstance(exc, SystemExit):
        raise exc
    for exc_type, code, prefix in ERROR_TABLE:
        if isinstance(exc, exc_type):
            break
    else:
        code, prefix = 1, f"unexpected {type(exc).__name__}"
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"wbmm-mobile: {prefix}: {message}", file=sys.stderr)
    if not debug and code == 1 and prefix.startswith("unexpected"):
        print("wbmm-mobile: rerun with --debug for the traceback", file=sys.stderr)
    return code
