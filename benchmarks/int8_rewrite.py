"""Integer models through the rewriter, on this machine's CPU (ai-edge-litert), 1 thread.

(a) One int8 DEPTHWISE_CONV_2D, 'same' KxK (K in 5, 7, 13) at 56x56x96 (int8 in/out, per-channel
    filter, built with the schema: ``converters.quantized.int8_depthwise_model``): XNNPACK's own
    int8 kernel against the ``builtin_kernel`` rewrite (TFLite's builtin int8 kernel inside the
    XNNPACK-delegated graph), plus the stock layer on the builtin kernels alone. The 5x5 row is
    the case where ``auto`` keeps the layer.
(b) keras.applications.ConvNeXtTiny (weights=None, 224x224, layer scales set to 1 as in
    ``wbmm_mobile.zoo.convnext_tiny``), converted to full int8 (int8 input and output) by the
    TFLite converter, calibrated on seeded random images: the stock model against its
    ``rewrite --target xnnpack`` (int8 ``auto``) on XNNPACK, and a check that the model
    rewritten for ``--target nnapi`` holds no float tensor (the converter's own output is not
    integer-only: it leaves LayerNorm's NEG in float, which the rewriter's ``integer_negation``
    pass turns into int8 MULs for integer-only targets).

Variants of one row are timed in one process, interleaved invoke by invoke
(``hostbench.time_round_robin``), median of ``--runs`` invokes after 5 warm-up invokes.
Results go to ``benchmarks/results/int8_rewrite.json``; ratios are printed.
``--write-strategy-table`` times (a) also at 28x28x192 and 14x14x384 and K=31 and stores the
medians as the int8 table ``auto`` ships (``converters/strategy_measurements_int8.json``).
Run by hand, alone on the machine:

    flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/int8_rewrite.py [--runs 30] [--part layers|convnext|all]
    flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/int8_rewrite.py --part layers --runs 20 --write-strategy-table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.large_kernels import machine, time_interleaved  # noqa: E402
from converters import strategy, tflite_io  # noqa: E402
from converters.quantized import int8_depthwise_model  # noqa: E402
from converters.rewrite import RewriteOptions, rewrite_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "int8_rewrite.json"
LAYER_SHAPES = ((56, 56, 96),)
LAYER_KERNELS = (5, 7, 13)
TABLE_SHAPES = ((56, 56, 96), (28, 28, 192), (14, 14, 384))
TABLE_KERNELS = (5, 7, 13, 31)
CALIBRATION_IMAGES = 8


def bench_layers(runs: int, shapes=LAYER_SHAPES, kernels=LAYER_KERNELS) -> list[dict]:
    rows = []
    for (height, width, channels), kernel in ((s, k) for s in shapes for k in kernels):
        stock = int8_depthwise_model(height, width, channels, kernel)
        routed = rewrite_model(stock, RewriteOptions(strategy="builtin_kernel", min_kernel=1))
        auto = rewrite_model(stock, RewriteOptions(target="xnnpack", min_kernel=1, verify=False)).report.layers[0]
        ms = time_interleaved({"xnnpack": (stock, "xnnpack", 1), "builtin_kernel": (routed.model, "xnnpack", 1),
                               "stock_on_cpu": (stock, "cpu", 1)}, runs, f"int8 {kernel}x{kernel}")
        row = {"shape": [1, height, width, channels], "kernel": kernel, "median_ms": ms,
               "speedup_builtin_kernel_vs_xnnpack": ms["xnnpack"] / ms["builtin_kernel"],
               "verification": routed.report.verification,
               "auto_picks": auto.strategy or "keep", "auto_reason": auto.reason}
        rows.append(row)
        print(f"int8 depthwise {kernel}x{kernel} at {height}x{width}x{channels}, 1 thread: XNNPACK "
              f"{ms['xnnpack']:.2f} ms, builtin_kernel rewrite {ms['builtin_kernel']:.2f} ms "
              f"({row['speedup_builtin_kernel_vs_xnnpack']:.2f}x), builtin kernels alone {ms['stock_on_cpu']:.2f} ms; "
              f"auto picks {row['auto_picks']}", flush=True)
    return rows


def write_strategy_table(rows: list[dict], path: Path) -> None:
    layers = [{"kernels": "xnnpack", "height": row["shape"][1], "width": row["shape"][2], "channels": row["shape"][3],
               "kernel": row["kernel"], "median_ms": {"depthwise": round(row["median_ms"]["xnnpack"], 4),
                                                      "builtin_kernel": round(row["median_ms"]["builtin_kernel"], 4)}}
              for row in rows]
    table = {"machine": machine(), "measured": time.strftime("%Y-%m-%d", time.gmtime()), "precision": "int8",
             "command": "benchmarks/int8_rewrite.py --part layers --write-strategy-table", "threads": 1,
             "layers": layers}
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote the int8 strategy table {path}")


def _float_tensors(model: bytes) -> list[str]:
    tree = tflite_io.load_model(model)
    floats = (0, 1)   # FLOAT32, FLOAT16
    return [tflite_io.tensor_name(t) for g in tree.subgraphs for t in g.tensors if t.type in floats]


def convnext_int8() -> tuple[bytes, float]:
    from converters.keras_convert import to_tflite
    from wbmm_mobile.zoo import convnext_tiny

    start = time.perf_counter()
    model = convnext_tiny()
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32) for _ in range(CALIBRATION_IMAGES)]
    data = to_tflite(model, "int8", lambda: ([image] for image in images))
    return data, time.perf_counter() - start


def bench_convnext(runs: int) -> dict:
    stock, convert_s = convnext_int8()
    start = time.perf_counter()
    result = rewrite_model(stock, RewriteOptions(target="xnnpack"))
    rewrite_s = time.perf_counter() - start
    report = result.report
    nnapi = rewrite_model(stock, RewriteOptions(target="nnapi"))
    stock_floats, xnnpack_floats, nnapi_floats = (_float_tensors(m) for m in (stock, result.model, nnapi.model))
    ms = time_interleaved({"stock": (stock, "xnnpack", 1), "rewritten": (result.model, "xnnpack", 1)}, runs,
                          "ConvNeXtTiny int8 xnnpack 1t")
    out = {"calibration": f"{CALIBRATION_IMAGES} seeded uniform [0, 255) images", "convert_s": convert_s,
           "rewrite_and_verify_s": rewrite_s, "depthwise_layers": len(report.layers),
           "rewritten_layers": report.rewritten_count,
           "strategies": sorted({layer.strategy for layer in report.layers if layer.rewritten}),
           "reason_first_layer": report.layers[0].reason if report.layers else "",
           "verification": report.verification, "mixed_precision": report.mixed_precision,
           "bytes": {"stock": len(stock), "rewritten": len(result.model)},
           "float_tensors": {"stock": len(stock_floats), "rewritten_xnnpack": len(xnnpack_floats),
                             "rewritten_nnapi": len(nnapi_floats), "stock_names": sorted(set(stock_floats))[:8]},
           "nnapi_float_negations_made_integer": nnapi.report.float_negations_made_integer,
           "nnapi_verification": nnapi.report.verification,
           "nnapi_holds_no_float_tensor": not nnapi_floats,
           "median_ms": ms, "speedup_1t": ms["stock"] / ms["rewritten"]}
    print(f"ConvNeXtTiny int8, XNNPACK 1 thread: stock {ms['stock']:.1f} ms, rewritten (--target xnnpack, "
          f"{report.rewritten_count} of {len(report.layers)} depthwise convs, {', '.join(out['strategies'])}) "
          f"{ms['rewritten']:.1f} ms, {out['speedup_1t']:.2f}x; verification: {report.verification_note}", flush=True)
    print(f"float tensors: stock {len(stock_floats)} (the converter's own NEG islands), rewritten for xnnpack "
          f"{len(xnnpack_floats)}, for nnapi {len(nnapi_floats)} ({nnapi.report.float_negations_made_integer} NEG "
          f"islands made int8; {nnapi.report.verification_note})", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--part", choices=("layers", "convnext", "all"), default="all")
    parser.add_argument("--write-strategy-table", action="store_true",
                        help="time the layers at every table shape and write converters/strategy_measurements_int8.json")
    args = parser.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    # Each part keeps the command and time it was measured with: a later run of one part
    # leaves the other's figures (and their provenance) as they were.
    provenance = {"machine": machine(), "threads": 1, "runs": args.runs,
                  "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "command": f"benchmarks/int8_rewrite.py --runs {args.runs} --part {args.part}"
                             + (" --write-strategy-table" if args.write_strategy_table else "")}
    if args.part in ("layers", "all"):
        if args.write_strategy_table:
            rows = bench_layers(args.runs, TABLE_SHAPES, TABLE_KERNELS)
            write_strategy_table(rows, strategy.INT8_TABLE_PATH)
        else:
            rows = bench_layers(args.runs)
        results["layers"] = {**provenance, "rows": rows}
    if args.part in ("convnext", "all"):
        results["convnext_tiny_int8"] = {**provenance, **bench_convnext(args.runs)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
