"""``tune`` on the loopback device: ConvNeXtTiny's layers tuned, and the rewrite the table picks timed.

1. Converts keras.applications ConvNeXtTiny (weights=None, layer scales 1, float32) at 224x224
   and 200x264 with the real converter.
2. Tunes each model's four 7x7 layer shapes on a loopback ADB device (this computer, the
   fixture phone's answers; ``wbmm-mobile-benchmark`` as benchmark_model), 1 thread, default
   runs (50 timed, 5 warm-up, as ``profile``): 224x224 first, then 200x264 with ``resume``
   into the same table. Each tuning is timed (target: under 3 minutes for 4 shapes).
3. For each resolution, rewrites the model with the tuned table, with each single strategy
   (split, dilated, halo, builtin_kernel, and keeping every layer) and with ``--measure``, and
   times all of them interleaved in this process (``converters.hostbench.compare_models``,
   XNNPACK, 1 thread), with a second copy of the split model as an A/A pair.

4. int8 (``--part int8``, in ``all`` too): ConvNeXtTiny 224x224 converted to full int8 (the
   calibration of ``benchmarks/int8_rewrite.py``), its four int8 layer shapes tuned on the same
   device into the same table (int8 rows beside the float ones: the kept conv against the int8
   ``builtin_kernel`` rewrite), then the model rewritten with the tuned table, with each single
   integer strategy (keeping every layer, builtin_kernel), with the shipped int8 table and with
   ``--measure``, timed interleaved as above (A/A pair: builtin_kernel twice).

Targets: the tuned rewrite is never slower than the best single strategy by more than the
measured noise (the larger of the A/A pair's difference and the 95% bootstrap half-width of
the tuned/best ratio of medians), and it agrees with ``--measure`` on at least 3 of the 4 shapes.

    flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/tune_loopback.py [--part float|int8|all]

A part run alone keeps the other part's results in the JSON.

Writes benchmarks/results/tune_loopback.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RESOLUTIONS = ((224, 224), (200, 264))
SINGLE = ("keep", "split", "dilated", "halo", "builtin_kernel")
SINGLE_INT8 = ("keep", "builtin_kernel")   # the integer strategies xnnpack has (no float islands)
INT8_ROW = "224x224_int8"


def convert(folder: Path) -> dict[str, Path]:
    from converters.keras_convert import to_tflite
    from wbmm_mobile.zoo import convnext_tiny

    paths = {}
    for height, width in RESOLUTIONS:
        path = folder / f"convnext_tiny_{height}x{width}.tflite"
        path.write_bytes(to_tflite(convnext_tiny((height, width, 3))))
        paths[f"{height}x{width}"] = path
    return paths


def tune_all(paths: dict[str, Path], folder: Path, runs: int, warmup: int) -> tuple[Path, dict]:
    from android_harness.loopback.daemon import LoopbackDevice
    from android_harness.profile import runner_script
    from android_harness.tune import TunePlan, tune

    binary = runner_script(folder / "benchmark_model")
    table = folder / "convnext_tiny_table.json"
    timings = {}
    with LoopbackDevice(folder / "root", fixture_phone=True) as device:
        for name, path in paths.items():
            plan = TunePlan(models=(str(path),), out=str(table), device=device.serial, direct=True, runs=runs,
                            warmup=warmup, benchmark_binary=str(binary), cache=False, resume=table.exists())
            report = tune(plan, progress=True)
            if not report.complete or report.failed:
                raise SystemExit(f"tuning {name} did not complete: {report}")
            timings[name] = {"seconds": round(report.seconds, 1), "shapes": report.layers,
                             "candidates_timed": report.timed, "refused": report.refused}
            print(f"tuned {name}: {len(report.layers)} shapes, {report.timed} candidates timed in "
                  f"{report.seconds:.0f} s")
    return table, timings


def variants(path: Path, table, singles=SINGLE, shipped: bool = False) -> tuple[dict[str, bytes], dict[str, dict]]:
    """The model rewritten every way compared, and per way the strategy each layer shape got."""
    from converters.rewrite import RewriteOptions, rewrite_model

    data = path.read_bytes()
    options = {"keep": RewriteOptions(min_kernel=10 ** 6)}   # no conv rewritten; run-time shapes folded as in all
    options.update({name: RewriteOptions(strategy=name) for name in singles if name != "keep"})
    options["tuned"] = RewriteOptions(strategy_table=table)
    options["measure"] = RewriteOptions(measure=True)
    if shipped:
        options["shipped"] = RewriteOptions()
    models, picks = {}, {}
    for name, option in options.items():
        started = time.monotonic()
        result = rewrite_model(data, option, name=f"{path.name} ({name})")
        models[name] = result.model
        shapes = {}
        for layer in result.report.layers:
            shape = "x".join(str(s) for s in layer.input_shape[1:])
            shapes.setdefault(shape, set()).add(layer.strategy if layer.rewritten else "keep")
        picks[name] = {shape: "/".join(sorted(chosen)) for shape, chosen in shapes.items()}
        print(f"  {path.stem} {name}: rewritten in {time.monotonic() - started:.0f} s: {picks[name]}")
    return models, picks


def bootstrap_half_width(a: list[float], b: list[float], draws: int = 2000, seed: int = 0) -> float:
    """Half the 95% interval of median(a)/median(b) over resampled runs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = np.asarray(a), np.asarray(b)
    ratios = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(draws)]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(high - low) / 2


def compare_one(name: str, models: dict[str, bytes], picks: dict[str, dict], runs: int, singles=SINGLE,
                twin: str = "split") -> dict:
    from converters.hostbench import compare_models

    order = list(singles) + [n for n in ("tuned", "measure", "shipped") if n in models]
    blobs = [models[n] for n in order] + [models[twin]]          # the last: the A/A copy of the twin
    result = compare_models(blobs, threads=1, runs=runs, warmup=3, kernels="xnnpack", progress=True)
    stats = dict(zip(order + [f"{twin}_again"], result.stats))
    median = {n: s.median_ms for n, s in stats.items()}
    best = min(singles, key=lambda n: median[n])
    ratio = median["tuned"] / median[best]
    aa = abs(median[twin] / median[f"{twin}_again"] - 1)
    half = bootstrap_half_width(stats["tuned"].runs_ms, stats[best].runs_ms)
    noise = max(aa, half)
    agree = {shape: picks["tuned"][shape] == picks["measure"].get(shape) for shape in picks["tuned"]}
    print(f"{name}: tuned/best single ({best}) = {ratio:.3f} (noise {noise:.3f}: A/A {aa:.3f}, bootstrap "
          f"+-{half:.3f}); tuned/measure = {median['tuned'] / median['measure']:.3f}; "
          f"agrees with --measure on {sum(agree.values())} of {len(agree)} shapes")
    for n in order:
        print(f"  {n:15s} {median[n]:8.2f} ms   best single / {n} = {median[best] / median[n]:.3f}")
    return {
        "median_ms": {n: round(v, 3) for n, v in median.items()},
        "p5_ms": {n: round(s.p5_ms, 3) for n, s in stats.items()},
        "p95_ms": {n: round(s.p95_ms, 3) for n, s in stats.items()},
        "runs": stats["tuned"].runs,
        "best_single": best, "tuned_over_best_single": round(ratio, 4),
        "tuned_over_measure": round(median["tuned"] / median["measure"], 4),
        "noise": {f"aa_{twin}": round(aa, 4), "bootstrap_half_width": round(half, 4), "used": round(noise, 4)},
        "picks": picks, "agree_with_measure": agree,
        "target_not_slower_than_best_single": ratio <= 1 + noise,
        "target_agrees_on_3_of_4": sum(agree.values()) >= 3,
    }


def tune_int8(folder: Path, table_path: Path, runs: int, warmup: int, compare_runs: int) -> tuple[dict, dict]:
    """ConvNeXtTiny int8 224x224: tuned into ``table_path`` (int8 rows), rewritten every way, timed."""
    from benchmarks.int8_rewrite import CALIBRATION_IMAGES, convnext_int8
    from converters.strategy_table import load_for

    data, convert_s = convnext_int8()
    path = folder / "convnext_tiny_224x224_int8.tflite"
    path.write_bytes(data)
    print(f"converted ConvNeXtTiny int8 in {convert_s:.0f} s")
    _, timings = tune_all({INT8_ROW: path}, folder, runs, warmup)
    table = load_for(target="xnnpack", path=table_path)
    models, picks = variants(path, table, SINGLE_INT8, shipped=True)
    row = compare_one(INT8_ROW, models, picks, compare_runs, SINGLE_INT8, twin="builtin_kernel")
    row["calibration"] = f"{CALIBRATION_IMAGES} seeded uniform [0, 255) images (benchmarks/int8_rewrite.py)"
    row["tuned_over_shipped"] = round(row["median_ms"]["tuned"] / row["median_ms"]["shipped"], 4)
    return row, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune-runs", type=int, default=50, help="timed runs per candidate on the device (50)")
    parser.add_argument("--tune-warmup", type=int, default=5, help="warm-up runs per candidate (5)")
    parser.add_argument("--runs", type=int, default=40, help="interleaved rounds of the whole-model timing (40)")
    parser.add_argument("--part", choices=("float", "int8", "all"), default="all",
                        help="float: ConvNeXtTiny at two resolutions; int8: its full-int8 224x224 model (all)")
    args = parser.parse_args()

    from converters.strategy_table import load, load_for

    out = HERE / "results" / "tune_loopback.json"
    kept = json.loads(out.read_text()) if out.is_file() and args.part != "all" else {}
    command = ("flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/tune_loopback.py " + " ".join(sys.argv[1:])).strip()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"{platform.system()} {platform.machine()}")
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = kept or {"command": command, "machine": machine, "date": date,
                       "tune": {"threads": 1, "runs": args.tune_runs, "warmup": args.tune_warmup}}
    names = []
    with tempfile.TemporaryDirectory(prefix="wbmm-tune-bench-") as scratch:
        folder = Path(scratch)
        table_path = folder / "convnext_tiny_table.json"
        if args.part in ("float", "all"):
            results.update({"command": command, "machine": machine, "date": date})
            started = time.monotonic()
            paths = convert(folder)
            print(f"converted in {time.monotonic() - started:.0f} s")
            table_path, timings = tune_all(paths, folder, args.tune_runs, args.tune_warmup)
            results["tune"] = {"threads": 1, "runs": args.tune_runs, "warmup": args.tune_warmup,
                               "per_resolution": timings,
                               "target_under_180_s": all(t["seconds"] < 180 for t in timings.values())}
            table = load_for(target="xnnpack", path=table_path)
            for name, path in paths.items():
                models, picks = variants(path, table)
                results[name] = compare_one(name, models, picks, args.runs)
                names.append(name)
        if args.part in ("int8", "all"):
            row, timings = tune_int8(folder, table_path, args.tune_runs, args.tune_warmup, args.runs)
            row.update({"command": command, "machine": machine, "date": date,
                        "tune": {"threads": 1, "runs": args.tune_runs, "warmup": args.tune_warmup, **timings[INT8_ROW]}})
            results[INT8_ROW] = row
            names.append(INT8_ROW)
        # The table of this run (--part int8 alone: its int8 rows only, beside the float run's table).
        results["table_int8" if args.part == "int8" else "table"] = load(table_path).to_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for name in names:
        r = results[name]
        print(f"{name}: not slower than the best single strategy within noise: "
              f"{'met' if r['target_not_slower_than_best_single'] else 'NOT met'} "
              f"({r['tuned_over_best_single']:.3f} vs 1 + {r['noise']['used']:.3f}); agrees with --measure: "
              f"{'met' if r['target_agrees_on_3_of_4'] else 'NOT met'} ({sum(r['agree_with_measure'].values())}/4)")
    for name, t in results["tune"].get("per_resolution", {}).items():
        print(f"tuning {name}: {t['seconds']} s ({'met' if t['seconds'] < 180 else 'NOT met'}: under 180 s)")
    if INT8_ROW in names:
        print(f"tuning {INT8_ROW}: {results[INT8_ROW]['tune']['seconds']} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
