"""The C++ WBMM delegate (``libwbmm_delegate.so``) and its Python loader.

``load(**options)`` returns a delegate for the ai-edge-litert interpreter,
``load_tf(**options)`` the same for ``tf.lite.Interpreter``; both go through
TFLite's external-delegate C ABI (``tflite_plugin_create_delegate``), the same
entry point ``benchmark_model --external_delegate_path`` uses on a phone.
``library_path()`` finds the library: the file named by ``$WBMM_DELEGATE_LIB``, else
the one a wheel ships in ``delegates/bin/``, else, in a source checkout only, the
``make delegate`` build under ``build/delegates/``. Options are the library's own table (see
``options_help()``): num_threads, spin_us, claim_depthwise, min_kernel, verbose,
isa. It runs float32 and int8 (TFLite's int8 spec) convs; ``isa`` names a family
whose int8 compilation is chosen at run time (``DelegationReport.int8_isa``:
e.g. avx512-vnni, neon-dotprod); docs/USAGE.md says what is claimed.

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
    "DelegationReport",
    "library_path",
    "built_file",
    "checkout_root",
    "load",
    "load_tf",
    "options_help",
    "parse_options",
    "available_isas",
    "delegation_report",
]

LIBRARY_NAME = "libwbmm_delegate.so"
KERNEL_BENCH_NAME = "wbmm_kernel_bench"
LIBRARY_ENV_VAR = "WBMM_DELEGATE_LIB"
PACKAGE_DIR = Path(__file__).resolve().parent
# A wheel carries the library and the kernel benchmark here (setup.py's CMake step).
PACKAGED_DIR = PACKAGE_DIR / "bin"


def checkout_root() -> Path | None:
    """The source checkout this package is imported from (a development install: ``pip install
    -e .`` or PYTHONPATH on the checkout), or None for an installed wheel. Only a checkout
    has the pyproject.toml beside the package and the C++ sources in it."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (PACKAGE_DIR / "CMakeLists.txt").is_file():
        return root
    return None


def built_file(name: str) -> Path | None:
    """``name`` (the library or the kernel benchmark) for this machine: the wheel's copy, else,
    in a checkout only, the ``make delegate`` build under build/delegates; None if neither exists."""
    for candidate in _places(name):
        if candidate.is_file():
            return candidate
    return None


def _places(name: str) -> list[Path]:
    root = checkout_root()
    return [PACKAGED_DIR / name] + ([root / "build" / "delegates" / name] if root is not None else [])


def library_path() -> Path:
    """The delegate library to load: ``$WBMM_DELEGATE_LIB`` if set, else the one the wheel ships,
    else (in a checkout) the ``make delegate`` build."""
    override = os.environ.get(LIBRARY_ENV_VAR)
    if override:
        path = Path(override)
        if not path.is_file():
            raise DelegateNotBuiltError(f"{LIBRARY_ENV_VAR}={override} does not name a file")
        return path
    found = built_file(LIBRARY_NAME)
    if found is None:
        hint = "run `make delegate` to build the WBMM delegate" if checkout_root() is not None else \
            f"this install has no delegate library: reinstall the wheel or set ${LIBRARY_ENV_VAR}"
        raise DelegateNotBuiltError(f"{LIBRARY_NAME} not found in {', '.join(map(str, _places(LIBRARY_NAME)))}: "
                                    f"{hint}")
    return found


def parse_options(text: str) -> dict[str, str]:
    """Delegate options written as benchmark_model's ``--external_delegate_options`` takes them:
    'k1:v1;k2:v2' (';' between pairs; empty pairs skipped). Raises ValueError on a pair
    without ':'. Values stay strings: the library checks them (``load`` names a bad one)."""
    options: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = pair.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"delegate option {pair!r} is not key:value")
        options[key.strip()] = value.strip()
    return options


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
    lib.wbmm_delegate_isa.restype = ctypes.c_char_p
    lib.wbmm_delegate_int8_isa.restype = ctypes.c_char_p
    for name in ("wbmm_delegate_claimed_count", "wbmm_delegate_claimed_node", "wbmm_delegate_isa",
                 "wbmm_delegate_int8_isa", "wbmm_delegate_num_threads"):
        getattr(lib, name).argtypes = [ctypes.c_void_p] + ([ctypes.c_int] if name.endswith("_node") else [])
    return lib


def options_help() -> str:
    """The option table as the library prints it (key, default, meaning)."""
    return _library().wbmm_delegate_options_help().decode()


def available_isas() -> list[str]:
    """Kernel instruction sets this CPU can run, best last (e.g. ['portable', 'avx2'])."""
    return _library().wbmm_delegate_available_isas().decode().split(",")


@dataclass(frozen=True)
class DelegationReport:
    """What the WBMM delegate took from one interpreter."""

    claimed_nodes: tuple[int, ...]   # original node indices, folded DEQUANTIZE nodes included
    claimed_ops: tuple[str, ...]     # their op names, e.g. ('WBMM', 'DEPTHWISE_CONV_2D')
    delegate_nodes: int              # DELEGATE nodes in the interpreter (ours and XNNPACK's)
    isa: str                         # kernel instruction set in use
    num_threads: int
    int8_isa: str = ""               # its int8 compilation (e.g. 'avx512-vnni', 'neon-dotprod')

    def count(self, op_name: str) -> int:
        return sum(1 for name in self.claimed_ops if name == op_name)


def delegation_report(interpreter, delegate) -> DelegationReport:
    """Which nodes ``delegate`` (from ``load``/``load_tf``) claimed in ``interpreter``.

    The interpreter's node list shows a DELEGATE node per partition but cannot
    tell ours from XNNPACK's, so the claimed node indices come from the library.
    """
    lib = _library()
    pointer = ctypes.c_void_p(delegate._delegate_ptr)
    count = lib.wbmm_delegate_claimed_count(pointer)
    nodes = tuple(lib.wbmm_delegate_claimed_node(pointer, i) for i in range(count))
    details = interpreter._get_ops_details()
    names = {op["index"]: op["op_name"] for op in details}
    return DelegationReport(
        claimed_nodes=nodes,
        claimed_ops=tuple(names.get(n, "?") for n in nodes),
        delegate_nodes=sum(1 for op in details if op["op_name"] == "DELEGATE"),
        isa=lib.wbmm_delegate_isa(pointer).decode(),
        num_threads=lib.wbmm_delegate_num_threads(pointer),
        int8_isa=lib.wbmm_delegate_int8_isa(pointer).decode(),
    )
