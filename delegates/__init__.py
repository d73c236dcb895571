"""The C++ WBMM delegate (``libwbmm_delegate.so``) and its Python loader.

``load(**options)`` returns a delegate for the ai-edge-litert interpreter,
``load_tf(**options)`` the same for ``tf.lite.Interpreter``; both go through
TFLite's external-delegate C ABI (``tflite_plugin_create_delegate``), the same
entry point ``benchmark_model --external_delegate_path`` uses on a phone.
``library_path()`` finds the built library (``make delegate``) or the file named
by ``$WBMM_DELEGATE_LIB``. Options are the library's own table (see
``options_help()``): num_threads, claim_depthwise, min_kernel, verbose, isa.

Not for: building the library (CMake does, from ``delegates/CMakeLists.txt``)
or deciding which ops to rewrite (``converters/``).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbmm_mobile.errors import DelegateError, DelegateNotBuiltError

__all__ = [
    "LIBRARY_NAME",
    "LIBRARY_ENV_VAR",
    "DelegatedOps",
    "library_path",
    "load",
    "load_tf",
    "options_help",
    "available_isas",
    "delegated_ops",
]

LIBRARY_NAME = "libwbmm_delegate.so"
LIBRARY_ENV_VAR = "WBMM_DELEGATE_LIB"
_REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIBRARY = _REPO_ROOT / "build" / "delegates" / LIBRARY_NAME


def library_path() -> Path:
    """The delegate library to load: ``$WBMM_DELEGATE_LIB`` if set, else the ``make delegate`` output."""
    override = os.environ.get(LIBRARY_ENV_VAR)
    if override:
        path = Path(override)
        if not path.is_file():
            raise DelegateNotBuiltError(f"{LIBRARY_ENV_VAR}={override} does not name a file")
        return path
    if not DEFAULT_LIBRARY.is_file():
        raise DelegateNotBuiltError(f"{DEFAULT_LIBRARY} not found: run `make delegate` to build the WBMM delegate")
    return DEFAULT_LIBRARY


def _option_strings(options: dict[str, Any]) -> dict[str, str]:
    # The C side parses strings; booleans become 1/0 so claim_depthwise=True works.
    return {key: str(int(value)) if isinstance(value, bool) else str(value) for key, value in options.items()}


def _load_with(loader, options: dict[str, Any]):
    path = str(library_path())
    try:
        return loader(path, options=_option_strings(options))
    except ValueError as error:  # TFLite wraps the library's report_error text in ValueError
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise DelegateError(f"cannot load {path}: {reason}") from error


def load(**options: Any):
    """A WBMM delegate for ``ai_edge_litert.interpreter.Interpreter(experimental_delegates=[...])``."""
    from ai_edge_litert.interpreter import load_delegate

    return _load_with(load_delegate, options)


def load_tf(**options: Any):
    """The same delegate for ``tf.lite.Interpreter`` (imports TensorFlow)."""
    import tensorflow as tf

    return _load_with(tf.lite.experimental.load_delegate, options)


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    lib.wbmm_delegate_options_help.restype = ctypes.c_char_p
    lib.wbmm_delegate_available_isas.restype = ctypes.c_char_p
    return lib


def options_help() -> str:
    """The option table as the library prints it (key, default, meaning)."""
    return _library().wbmm_delegate_options_help().decode()


def available_isas() -> list[str]:
    """Kernel instruction sets this CPU can run, best last (e.g. ['portable', 'avx2'])."""
    return _library().wbmm_delegate_available_isas().decode().split(",")


@dataclass(frozen=True)
class DelegatedOps:
    """What an interpreter runs after delegation: op names in execution order."""

    op_names: tuple[str, ...]

    @property
    def delegate_nodes(self) -> int:
        return sum(1 for name in self.op_names if name == "DELEGATE")

    def count(self, op_name: str) -> int:
        return sum(1 for name in self.op_names if name == op_name)


def delegated_ops(interpreter) -> DelegatedOps:
    """Op names of the interpreter's execution plan; claimed nodes show up as DELEGATE."""
    details = interpreter._get_ops_details()  # the only public-ish view of the node list
    return DelegatedOps(tuple(op["op_name"] for op in details))
