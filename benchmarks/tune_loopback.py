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

Targets: the tuned rewrite is never slower than the best single strategy by more than the
measured noise (the larger of the A/A pair's difference and the 95% bootstrap half-width of
the tuned/best ratio of medians), and it agrees with ``--measure`` on at least 3 of the 4 shapes.

    flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/tune_loopback.py

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
        for index, (name, path) in enumerate(paths.items()):
            plan = TunePlan(models=(str(path),), out=str(table), device=device.serial, direct=True, runs=runs,
                            warmup=warmup, benchmark_binary=str(binary), cache=False, resume=index > 0)
            report = tune(plan, progress=True)
            if not report.complete or report.failed:
                raise SystemExit(f"tuning {name} did not complete: {report}")
            timings[name] = {"seconds": round(report.seconds, 1), "shapes": report.layers,
                             "candidates_timed": report.timed, "refused": report.refused}
            print(f"tuned {name}: {len(report.layers)} shapes, {report.timed} candidates timed in "
                  f"{report.seconds:.0f} s")
    return table, timings


def variants(path: Path, table) -> tuple[dict[str, bytes], dict[str, dict]]:
    """The model rewritten every way compared, and per way the strategy each layer shape got."""
    from converters.rewrite import RewriteOptions, rewrite_model

    data = path.read_bytes()
    options = {"keep": RewriteOptions(min_kernel=10 ** 6)}   # no conv rewritten; run-time shapes folded as in all
    options.update({name: RewriteOptions(strategy=name) for name in SINGLE if name != "keep"})
    options["tuned"] = RewriteOptions(strategy_table=table)
    options["measure"] = RewriteOptions(measure=True)
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


def compare_one(name: str, models: dict[str, bytes], picks: dict[str, dict], runs: int) -> dict:
    from converters.hostbench import compare_models

    order = list(SINGLE) + ["tuned", "measure"]
    blobs = [models[n] for n in order] + [models["split"]]          # the last: the A/A copy of split
    result = compare_models(blobs, threads=1, runs=runs, warmup=3, kernels="xnnpack", progress=True)
    stats = dict(zip(order + ["split_again"], result.stats))
    median = {n: s.median_ms for n, s in stats.items()}
    best = min(SINGLE, key=lambda n: median[n])
    ratio = median["tuned"] / median[best]
    aa = abs(median["split"] / median["split_again"] - 1)
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
        "noise": {"aa_split": round(aa, 4), "bootstrap_half_width": round(half, 4), "used": round(noise, 4)},
        "picks": picks, "agree_with_measure": agree,
        "target_not_slower_than_best_single": ratio <= 1 + noise,
        "target_agrees_on_3_of_4": sum(agree.values()) >= 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune-runs", type=int, default=50, help="timed runs per candidate on the device (50)")
    parser.add_argument("--tune-warmup", type=int, default=5, help="warm-up runs per candidate (5)")
    parser.add_argument("--runs", type=int, default=40, help="interleaved rounds of the whole-model timing (40)")
    args = parser.parse_args()

    from converters.strategy_table import load, load_for

    results = {"command": "flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/tune_loopback.py "
                          + " ".join(sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"{platform.system()} {platform.machine()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "tune": {"threads": 1, "runs": args.tune_runs, "warmup": args.tune_warmup}}
    with tempfile.TemporaryDirectory(prefix="wbmm-tune-bench-") as scratch:
        folder = Path(scratch)
        started = time.monotonic()
        paths = convert(folder)
        print(f"converted in {time.monotonic() - started:.0f} s")
        table_path, timings = tune_all(paths, folder, args.tune_runs, args.tune_warmup)
        results["tune"]["per_resolution"] = timings
        results["tune"]["target_under_180_s"] = all(t["seconds"] < 180 for t in timings.values())
        results["table"] = load(table_path).to_dict()
        table = load_for(target="xnnpack", path=table_path)
        for name, path in paths.items():
            models, picks = variants(path, table)
            results[name] = compare_one(name, models, picks, args.runs)
    out = HERE / "results" / "tune_loopback.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for name in paths:
        r = results[name]
        print(f"{name}: not slower than the best single strategy within noise: "
              f"{'met' if r['target_not_slower_than_best_single'] else 'NOT met'} "
              f"({r['tuned_over_best_single']:.3f} vs 1 + {r['noise']['used']:.3f}); agrees with --measure: "
              f"{'met' if r['target_agrees_on_3_of_4'] else 'NOT met'} ({sum(r['agree_with_measure'].values())}/4)")
    for name, t in timings.items():
        print(f"tuning {name}: {t['seconds']} s ({'met' if t['seconds'] < 180 else 'NOT met'}: under 180 s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
