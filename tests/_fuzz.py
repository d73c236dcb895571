"""Seeded mutations of .tflite files for the fuzz tests (tests/test_fuzz_*.py).

A .tflite is a flatbuffer: tables reach their fields through a vtable (found by a
signed offset at the table's start), and reach strings, vectors and sub-tables through
unsigned offsets relative to where the offset is stored. ``table_positions`` finds the
tables the schema reader visits (model, subgraphs, tensors, operators, their option
tables, operator codes, buffers); the mutators then damage exactly what a reader
follows: a field's bytes (flips), an offset (out of range), a vtable (wrong size,
fields past the table, another vtable), a vector's length (huge), plus plain byte
flips and truncation. ``mutants(seed, corpus, count)`` yields (description, bytes),
the same for the same seed.

Also the worker ``python -m tests._fuzz worker load|rewrite [DELEGATE.so]`` that takes many
files per process through LiteRT (``load``: converters.verify, with the wbmm delegate when
given; ``rewrite``: rewrite_model with verification), so a crash of the process is seen by
its parent and pinned to the file it was on.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from typing import Iterator, Sequence

MUTATORS = ("field_flip", "offset_out_of_range", "wrong_vtable", "huge_vector", "byte_flips", "truncate")


def _u32(data: bytes | bytearray, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0]


def table_positions(data: bytes) -> list[int]:
    """Start of every table the LiteRT schema reader would visit (empty when the file is too
    broken to walk: the mutators then fall back to raw positions)."""
    from ai_edge_litert import schema_py_generated as schema

    found: list[int] = []
    try:
        model = schema.Model.GetRootAs(data, 0)
        found.append(model._tab.Pos)
        for c in range(model.OperatorCodesLength()):
            found.append(model.OperatorCodes(c)._tab.Pos)
        for b in range(model.BuffersLength()):
            found.append(model.Buffers(b)._tab.Pos)
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            found.append(graph._tab.Pos)
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                found.append(tensor._tab.Pos)
                if tensor.Quantization() is not None:
                    found.append(tensor.Quantization()._tab.Pos)
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                found.append(op._tab.Pos)
                options = op.BuiltinOptions()
                if options is not None:
                    found.append(options.Pos)
    except Exception:  # noqa: BLE001 - a mutant of a mutant may not walk; raw positions then
        pass
    return [p for p in found if 0 <= p <= len(data) - 4]


def _fields(data: bytes, table: int) -> list[int]:
    """Absolute positions of the fields present in the table at ``table``."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    if not 0 <= vtable <= len(data) - 4:
        return []
    size = struct.unpack_from("<H", data, vtable)[0]
    fields = []
    for slot in range(vtable + 4, min(vtable + size, len(data) - 1), 2):
        offset = struct.unpack_from("<H", data, slot)[0]
        if offset and table + offset <= len(data) - 4:
            fields.append(table + offset)
    return fields


_EXTREME_32 = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x90000003)


def mutate(data: bytes, rng: random.Random, kind: str | None = None) -> tuple[str, bytes]:
    """One mutant of ``data``: (what was done, the bytes)."""
    kind = kind or rng.choice(MUTATORS)
    out = bytearray(data)
    tables = table_positions(data)
    if kind in ("field_flip", "offset_out_of_range", "huge_vector") and tables:
        table = rng.choice(tables)
        fields = _fields(data, table) or [table]
        at = rng.choice(fields)
        if kind == "field_flip":
            width = rng.choice((1, 2, 4))
            if rng.random() < 0.5:
                value = rng.choice(_EXTREME_32) & ((1 << (8 * width)) - 1)
            else:
                value = rng.getrandbits(8 * width)
            out[at:at + width] = value.to_bytes(width, "little")
            return f"{kind}@{at}:{width}={value:#x}", bytes(out)
        if kind == "offset_out_of_range":
            value = rng.choice((len(data) - at, len(data) - at + rng.randrange(1, 4096), 0xFFFFFFF0 - at % 4,
                                0x7FFFFFFF, rng.randrange(len(data), 1 << 32), 2, 3))
            struct.pack_into("<I", out, at, value & 0xFFFFFFFF)
            return f"{kind}@{at}={value:#x}", bytes(out)
        # huge_vector: treat the field as an offset to a vector and blow up its length.
        target = at + _u32(data, at)
        if target <= len(data) - 4:
            value = rng.choice((0x7FFFFFFF, 0x10000000, 0xFFFFFFFF, len(data), len(data) // 2 + 1, 1 << 20))
            struct.pack_into("<I", out, target, value)
            return f"{kind}@{target}={value:#x}", bytes(out)
        kind = "byte_flips"
    if kind == "wrong_vtable" and tables:
        table = rng.choice(tables)
        vtable = table - struct.unpack_from("<i", data, table)[0]
        choice = rng.randrange(4)
        if choice == 0:   # the table points at some other (or no) vtable
            value = rng.choice((rng.randrange(-len(data), len(data)), 0x7FFFFFFF, -0x80000000, 4, -4))
            struct.pack_into("<i", out, table, value)
        elif 0 <= vtable <= len(data) - 4 and choice == 1:   # a vtable claiming many fields
            struct.pack_into("<H", out, vtable, rng.choice((0xFFFF, 0x7FFE, 2, 3)))
        elif 0 <= vtable <= len(data) - 4 and choice == 2:   # an object size that is wrong
            struct.pack_into("<H", out, vtable + 2, rng.choice((0, 1, 0xFFFF)))
        elif 0 <= vtable <= len(data) - 6:                    # a field offset past the table
            size = struct.unpack_from("<H", data, vtable)[0]
            slots = list(range(vtable + 4, min(vtable + size, len(data) - 1), 2)) or [vtable + 4]
            struct.pack_into("<H", out, rng.choice(slots), rng.choice((0xFFFF, 0xFFFC, 1, 3, 0x1000)))
        else:
            kind = "byte_flips"
        if kind == "wrong_vtable":
            return f"{kind}@{table}#{choice}", bytes(out)
    if kind == "truncate":
        cut = rng.choice((rng.randrange(0, len(data)), len(data) - rng.randrange(1, 64), rng.randrange(0, 64)))
        return f"truncate@{max(cut, 0)}", bytes(data[:max(cut, 0)])
    # byte_flips (and the fallback of the others): a few random bytes anywhere.
    flips = []
    for _ in range(rng.randrange(1, 9)):
        at = rng.randrange(len(out))
        out[at] = rng.randrange(256)
        flips.append(at)
    return f"byte_flips@{','.join(map(str, flips))}", bytes(out)


def mutants(seed: int, corpus: Sequence[bytes], count: int) -> Iterator[tuple[int, str, bytes]]:
    """``count`` seeded mutants of the corpus: (index, description, bytes). Every 8th one is
    mutated twice (damage on damage)."""
    rng = random.Random(seed)
    for index in range(count):
        source = rng.randrange(len(corpus))
        description, data = mutate(corpus[source], rng, MUTATORS[index % len(MUTATORS)])
        if index % 8 == 7 and len(data) > 8:
            more, data = mutate(data, rng)
            description += "+" + more
        yield index, f"seed{seed}/#{index} file{source} {description}", data


# ------------------------------------------------------------------- the loading worker

def _worker(mode: str, delegate: str | None) -> int:
    """Read JSON lines {"path": ...} from stdin; for each, print {"start": path} (flushed), then
    ``load``: load it through converters.verify (LiteRT, the delegate applied when given) and
    invoke it on seeded inputs; ``rewrite``: rewrite_model with verification (LiteRT runs the
    mutant and its rewrite). Then print {"path", "outcome": "ok"|"error"|"traceback", "detail"}.
    A crash kills the process after "start": the parent sees which file did it."""
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from pathlib import Path

    from converters import verify
    from converters.rewrite import RewriteOptions, rewrite_model
    from wbmm_mobile.errors import WbmmError

    for line in sys.stdin:
        path = json.loads(line)["path"]
        print(json.dumps({"start": path}), flush=True)
        try:
            if mode == "rewrite":
                rewrite_model(Path(path).read_bytes(), RewriteOptions(verify=True, progress=False), name=path)
            else:
                interpreter = verify.load_interpreter(path, delegate=delegate)
                verify.run_tflite(interpreter, verify.random_inputs(interpreter, seed=0))
            outcome, detail = "ok", ""
        except WbmmError as exc:
            outcome, detail = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - what the test counts as a traceback
            import traceback
            outcome, detail = "traceback", "".join(traceback.format_exception(exc))[-2000:]
        print(json.dumps({"path": path, "outcome": outcome, "detail": detail}), flush=True)
    return 0


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "worker":
    sys.exit(_worker(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
