"""Large depthwise convs before and after the exact rewrites, on this machine's CPU (ai-edge-litert).

(a) Per layer, 1xHxWxC in {56x56x96, 28x28x192, 14x14x384}, 'same' KxK with K in {7, 13, 31}:
    the stock DEPTHWISE_CONV_2D on XNNPACK and on the builtin kernels, and the ``split``,
    ``dilated`` (K=7 only), ``halo``, ``builtin_kernel`` and ``auto`` rewrites (builtin TFLite
    ops only) on XNNPACK.
(b) keras.applications.ConvNeXtTiny (weights=None, 224x224, fp32; layer scales set to 1 so the
    verification sees the depthwise convs): the stock .tflite against its exact ``auto``
    rewrite, XNNPACK with 1 and 2 threads.

The variants of one row are timed in one process, interleaved invoke by invoke (median of
``--runs`` invokes each after 5 warm-up invokes). Results go to ``benchmarks/results/large_kernels.json``;
ratios and the issue's targets are printed. ``--write-strategy-table`` also stores the
split/dilated/halo/builtin_kernel medians of (a), for XNNPACK and builtin kernels, as the table ``auto`` ships
(``converters/strategy_measurements.json``). Run by hand:

    .venv/bin/python benchmarks/large_kernels.py            # both parts, 50 runs
    .venv/bin/python benchmarks/large_kernels.py --part layers --runs 20 --write-strategy-table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import strategy, tflite_io  # noqa: E402
from converters.layer_models import depthwise_model  # noqa: E402
from converters.rewrite import RewriteOptions, rewrite_model  # noqa: E402
from converters.verify import load_interpreter, random_inputs  # noqa: E402
from converters.hostbench import time_round_robin  # noqa: E402

import numpy as np  # noqa: E402

SHAPES = ((56, 56, 96), (28, 28, 192), (14, 14, 384))
KERNELS = (7, 13, 31)
RESULTS = ROOT / "benchmarks" / "results" / "large_kernels.json"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, ai-edge-litert " \
           f"{_version('ai-edge-litert')}"


def _version(package: str) -> str:
    from importlib.metadata import version
    try:
        return version(package)
    except Exception:  # noqa: BLE001
        return "?"


def time_interleaved(variants: dict[str, tuple[bytes, str, int]], runs: int, label: str,
                     warmup: int = 5) -> dict[str, float]:
    """Median ms per variant ({name: (model, kernels, threads)}), invoked in turn round after round.

    Interleaving (``hostbench.time_round_robin``, rather than ``time_model`` on one model, then
    the next) keeps a load change on this shared 2-core machine from landing on one variant only.
    """
    from rich.progress import Progress

    interpreters = {}
    for name, (model, kernels, threads) in variants.items():
        interpreter = load_interpreter(model, threads=threads, kernels=kernels)
        for detail, value in zip(interpreter.get_input_details(), random_inputs(interpreter, 0)):
            interpreter.set_tensor(detail["index"], value)
        for _ in range(warmup):
            interpreter.invoke()
        interpreters[name] = interpreter
    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=runs * len(interpreters))
        samples = time_round_robin(interpreters, runs, advance=lambda: progress.advance(task))
    return {name: float(np.median(values)) for name, values in samples.items()}


def _builtin_only(model: bytes) -> bool:
    loaded = tflite_io.load_model(model)
    return all(tflite_io.opcode_name(loaded, code_index) != "CUSTOM" and
               loaded.operatorCodes[code_index].customCode is None
               for code_index in range(len(loaded.operatorCodes)))


def bench_layers(runs: int, with_builtin_rewrites: bool) -> list[dict]:
    rows = []
    for height, width, channels in SHAPES:
        for k in KERNELS:
            shape = strategy.LayerShape(height, width, channels, k)
            stock = depthwise_model(shape)
            name = f"{height}x{width}x{channels} K={k}"
            models = {}
            picks = {}
            for strategy_name in ("split", "dilated", "halo", "builtin_kernel", "auto"):
                result = rewrite_model(stock, RewriteOptions(strategy=strategy_name, target="xnnpack", verify=True))
                layer = result.report.layers[0]
                if layer.rewritten:
                    models[strategy_name] = result.model
                    picks[strategy_name] = f"{layer.strategy}: {layer.reason}"
                else:
                    picks[strategy_name] = f"left alone: {layer.reason}"
            row = {"shape": [1, height, width, channels], "kernel": k, "picks": picks,
                   "auto_model_is_split_model": models.get("auto") == models.get("split"),
                   "builtin_ops_only": {n: _builtin_only(m) for n, m in models.items()},
                   "median_ms": {}}
            variants = {"depthwise_xnnpack": (stock, "xnnpack", 1), "depthwise_builtin": (stock, "builtin", 1)}
            auto_is_split = "auto" in models and row["auto_model_is_split_model"]
            for n, model in models.items():
                # The same bytes are the same program: timing them twice would only measure noise.
                if not (n == "auto" and auto_is_split):
                    variants[f"{n}_xnnpack"] = (model, "xnnpack", 1)
            if with_builtin_rewrites:
                for n in ("split", "dilated", "halo"):
                    if n in models:
                        variants[f"{n}_builtin"] = (models[n], "builtin", 1)
            row["median_ms"] = time_interleaved(variants, runs, name)
            ms = row["median_ms"]
            if auto_is_split:
                ms["auto_xnnpack"] = ms["split_xnnpack"]
            row["ratios"] = {
                "xnnpack_depthwise_over_split": ms["depthwise_xnnpack"] / ms["split_xnnpack"],
                "xnnpack_depthwise_over_halo": ms["depthwise_xnnpack"] / ms["halo_xnnpack"] if "halo_xnnpack" in ms else None,
                "xnnpack_depthwise_over_auto": ms["depthwise_xnnpack"] / ms["auto_xnnpack"],
                "auto_over_split": ms["auto_xnnpack"] / ms["split_xnnpack"],
            }
            print(f"{name}: " + ", ".join(f"{key} {value:.2f} ms" for key, value in ms.items())
                  + f" | depthwise/split {row['ratios']['xnnpack_depthwise_over_split']:.1f}x, "
                    f"depthwise/auto {row['ratios']['xnnpack_depthwise_over_auto']:.1f}x, "
                    f"auto/split {row['ratios']['auto_over_split']:.2f} (auto picked {picks['auto'].split(':')[0]})",
                  flush=True)
            rows.append(row)
    return rows


def write_strategy_table(rows: list[dict], path: Path) -> None:
    layers = []
    for row in rows:
        _, height, width, channels = row["shape"]
        for kernels in ("xnnpack", "cpu"):
            names = ("split", "dilated", "halo", "builtin_kernel") if kernels == "xnnpack" else ("split", "dilated", "halo")
            ms = {n: row["median_ms"][f"{n}_{kernels}"] for n in names if f"{n}_{kernels}" in row["median_ms"]}
            ms["depthwise"] = row["median_ms"][f"depthwise_{kernels}"]
            if "split" in ms:
                layers.append({"kernels": kernels, "height": height, "width": width, "channels": channels,
                               "kernel": row["kernel"], "median_ms": {k: round(v, 4) for k, v in ms.items()}})
    table = {"machine": machine(), "measured": time.strftime("%Y-%m-%d", time.gmtime()),
             "command": "benchmarks/large_kernels.py --part layers --write-strategy-table", "threads": 1,
             "layers": layers}
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote the strategy table {path}")


def bench_convnext(runs: int) -> dict:
    from converters.keras_convert import to_tflite
    from wbmm_mobile.zoo import convnext_tiny

    start = time.perf_counter()
    model = convnext_tiny()  # layer scales set to 1, so an error in a rewritten conv shows
    scaled = sum(type(layer).__name__ == "LayerScale" for layer in model.layers)
    stock = to_tflite(model)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    result = rewrite_model(stock, RewriteOptions(strategy="auto", target="xnnpack"))
    rewrite_s = time.perf_counter() - start
    report = result.report
    # The graph pass alone (no conv rewritten): what folding the run-time shapes buys by itself.
    folded = rewrite_model(stock, RewriteOptions(min_kernel=1 << 30)).model
    out = {"layer_scales_set_to_1": scaled, "convert_s": convert_s, "rewrite_and_verify_s": rewrite_s, "rewritten_layers": report.rewritten_count,
           "static_shapes": asdict(report.static_shapes) if report.static_shapes else None,
           "depthwise_layers": len(report.layers), "strategies": sorted({l.strategy for l in report.layers if l.rewritten}),
           "verification": report.verification, "builtin_ops_only": _builtin_only(result.model),
           "bytes": {"stock": len(stock), "rewritten": len(result.model)}, "median_ms": {}, "speedup": {}}
    bound = _without_large_depthwise(folded)
    for threads in (1, 2):
        variants = {"stock": (stock, "xnnpack", threads), "rewritten": (result.model, "xnnpack", threads)}
        if threads == 1:
            variants["shapes_folded_only"] = (folded, "xnnpack", threads)
            variants["no_large_depthwise"] = (bound, "xnnpack", threads)
        ms = time_interleaved(variants, runs, f"ConvNeXtTiny xnnpack {threads}t")
        base, new = ms["stock"], ms["rewritten"]
        if threads == 1:
            out["median_ms"]["shapes_folded_only_xnnpack_1t"] = ms["shapes_folded_only"]
            out["speedup"]["shapes_folded_only_1t"] = base / ms["shapes_folded_only"]
            print(f"ConvNeXtTiny with only its run-time shapes folded (no conv rewritten): "
                  f"{ms['shapes_folded_only']:.1f} ms, {base / ms['shapes_folded_only']:.2f}x", flush=True)
            out["median_ms"]["no_large_depthwise_xnnpack_1t"] = ms["no_large_depthwise"]
            out["speedup"]["bound_if_large_depthwise_were_free_1t"] = base / ms["no_large_depthwise"]
            print(f"ConvNeXtTiny with every 7x7 depthwise conv replaced by a RELU (not the same function; "
                  f"the bound on any rewrite of them): {ms['no_large_depthwise']:.1f} ms, "
                  f"{base / ms['no_large_depthwise']:.2f}x", flush=True)
        out["median_ms"][f"stock_xnnpack_{threads}t"] = base
        out["median_ms"][f"rewritten_xnnpack_{threads}t"] = new
        out["speedup"][f"{threads}t"] = base / new
        print(f"ConvNeXtTiny XNNPACK {threads} thread(s): stock {base:.1f} ms, rewritten {new:.1f} ms, "
              f"{base / new:.2f}x", flush=True)
    return out


def _without_large_depthwise(data: bytes) -> bytes:
    """The model with each large depthwise conv replaced by a RELU of its input: not the same
    function, only the timing bound that no rewrite of those convs can beat (given the
    shape-folded model, the rest of the network as the rewrite leaves it)."""
    from converters.rewrites import _depthwise
    from converters.rewrites._graph import Builtin, GraphEditor, prune_unused

    model = tflite_io.load_model(data)
    graph = model.subgraphs[0]
    operators = []
    for index, op in enumerate(list(graph.operators)):
        layer = _depthwise.match(model, 0, index)
        if layer is not None and _depthwise.check_common(layer, 7) is None:
            editor = GraphEditor(model, 0)
            editor.op(Builtin.RELU, [layer.x], [layer.out])
            operators += editor.ops
        else:
            operators.append(op)
    graph.operators = operators
    prune_unused(model, 0)
    return tflite_io.model_to_bytes(model)


def check_targets(results: dict) -> dict:
    targets = {}
    convnext = results.get("convnext")
    if convnext:
        speedup = convnext["speedup"]["1t"]
        max_rel = convnext["verification"]["max_rel"]
        targets["convnext_1.5x_and_rel_1e-4"] = {
            "speedup_1t": speedup, "max_rel": max_rel, "builtin_ops_only": convnext["builtin_ops_only"],
            "bound_if_large_depthwise_were_free_1t": convnext["speedup"].get("bound_if_large_depthwise_were_free_1t"),
            "met": speedup >= 1.5 and max_rel <= 1e-4 and convnext["builtin_ops_only"]}
    layers = results.get("layers")
    if layers:
        row = next(r for r in layers if r["shape"] == [1, 56, 56, 96] and r["kernel"] == 13)
        best = row["ratios"]["xnnpack_depthwise_over_auto"]
        targets["k13_56x56x96_5x_vs_xnnpack"] = {"speedup_auto": best, "met": best >= 5.0}
        worst = max(r["ratios"]["auto_over_split"] for r in layers)
        targets["auto_never_slower_than_split"] = {
            "worst_auto_over_split": worst,
            "layers_where_auto_is_split": sum(r["auto_model_is_split_model"] for r in layers),
            "met": worst <= 1.0,
            "note": "where auto picked split the two files are byte-identical and are timed once"}
    return targets


def markdown(results: dict) -> str:
    """The tables BENCHMARKS.md records, from one run's results."""
    lines = []
    layers = results.get("layers")
    if layers:
        columns = ["depthwise_xnnpack", "depthwise_builtin", "split_xnnpack", "dilated_xnnpack", "halo_xnnpack",
                   "builtin_kernel_xnnpack", "auto_xnnpack"]
        lines += ["| layer | XNNPACK dw | builtin dw | split | dilated | halo | builtin_kernel | auto (pick) | "
                  "XNNPACK dw / auto | auto / split |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in layers:
            ms = row["median_ms"]
            cells = [f"{ms[c]:.2f}" if c in ms else "-" for c in columns]
            pick = row["picks"]["auto"].split(":")[0]
            cells[-1] += f" ({pick})"
            lines.append(f"| {'x'.join(map(str, row['shape'][1:]))} K={row['kernel']} | " + " | ".join(cells)
                         + f" | {row['ratios']['xnnpack_depthwise_over_auto']:.1f}x | "
                           f"{row['ratios']['auto_over_split']:.2f} |")
    convnext = results.get("convnext")
    if convnext:
        ms = convnext["median_ms"]
        lines += ["", "| ConvNeXtTiny fp32, XNNPACK | stock | exact auto rewrite | speedup |", "|---|---|---|---|"]
        for threads in (1, 2):
            lines.append(f"| {threads} thread(s) | {ms[f'stock_xnnpack_{threads}t']:.1f} ms | "
                         f"{ms[f'rewritten_xnnpack_{threads}t']:.1f} ms | {convnext['speedup'][f'{threads}t']:.2f}x |")
        if "no_large_depthwise_xnnpack_1t" in ms:
            lines.append(f"| 1 thread, every 7x7 conv replaced by a RELU (bound, not the same function) | | "
                         f"{ms['no_large_depthwise_xnnpack_1t']:.1f} ms | "
                         f"{convnext['speedup']['bound_if_large_depthwise_were_free_1t']:.2f}x |")
        lines.append(f"\nmax relative error of the rewrite: {convnext['verification']['max_rel']:.2g}; "
                     f"strategies used: {', '.join(convnext['strategies'])}; builtin ops only: "
                     f"{convnext['builtin_ops_only']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "layers", "convnext"), default="all",
                        help="which part to run (default: all)")
    parser.add_argument("--runs", type=int, default=50, help="timed invokes per model after 5 warm-up (default: 50)")
    parser.add_argument("--write-strategy-table", action="store_true",
                        help="also time split/halo on builtin kernels and write converters/strategy_measurements.json")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "command": "benchmarks/large_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "runs": args.runs, "threads_layers": 1}
    if args.part in ("all", "layers"):
        results["layers"] = bench_layers(args.runs, with_builtin_rewrites=args.write_strategy_table)
        if args.write_strategy_table:
            write_strategy_table(results["layers"], strategy.TABLE_PATH)
    if args.part in ("all", "convnext"):
        results["convnext"] = bench_convnext(args.runs)
    results["targets"] = check_targets(results)
    for name, target in results["targets"].items():
        print(f"target {name}: {'MET' if target['met'] else 'NOT MET'} "
              f"({', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}' for k, v in target.items() if k != 'met')})")
    print(markdown(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
