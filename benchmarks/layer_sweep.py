"""Latency against receptive field: large depthwise convs vs WBMM lowerings, one layer, this CPU.

For each map 1x56x56x96, 1x28x28x192, 1x14x14x384 ('same', stride 1, 1 thread):
- DepthwiseConv2D K in {3, 5, 7, 13, 27, 31} on XNNPACK and on TFLite's builtin kernels;
- WBMM w in {7, 14} (receptive field 2w-1 = 13, 27 inside each window) with the ``bmm`` and
  ``gather`` lowerings on XNNPACK and builtin kernels, and ``custom`` with the project's C++
  delegate when it is built.
All variants of one map are loaded together and timed interleaved, invoke by invoke (median of
``--runs`` invokes after ``--warmup``), so machine noise hits them alike. Every converted model
was verified against Keras by the converter. Writes ``benchmarks/results/layer_sweep.json`` and
``layer_sweep.png`` (latency vs receptive field, the paper's "inverted curve") and checks:
- WBMM w=7 ``bmm`` >= 10x faster than the 13x13 depthwise conv on XNNPACK at 56x56x96;
- ``gather`` file <= 1.2 x (compact table bytes + the rest of the model), where the rest is
  the ``bmm`` file minus its dense M bytes.

    .venv/bin/python benchmarks/layer_sweep.py            # everything, 50 runs
    .venv/bin/python benchmarks/layer_sweep.py --runs 10 --shapes 56x56x96
    .venv/bin/python benchmarks/layer_sweep.py --rank-check   # only: rank-6 vs our rank-4 partition

``--rank-check`` answers "what does the converter do with the textbook partition?": the same
WBMM written with rank-6 reshape/transpose (B, nh, wh, nw, ww, C) keeps rank-6 tensors in the
.tflite (NNAPI refuses TRANSPOSE above rank 4); it is timed against the ``bmm`` lowering's
rank-4 sequence, interleaved, and written to ``layer_sweep_rank.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from converters.keras_convert import convert_keras  # noqa: E402
from converters.verify import load_interpreter, random_inputs  # noqa: E402
from converters.hostbench import summarize  # noqa: E402
from wbmm_mobile.json_output import write_json  # noqa: E402

SHAPES = ((56, 56, 96), (28, 28, 192), (14, 14, 384))
KERNELS = (3, 5, 7, 13, 27, 31)
WINDOWS = (7, 14)
RESULTS = ROOT / "benchmarks" / "results"


def _delegate():
    try:
        import delegates
        return delegates.load(num_threads=1)
    except Exception as exc:  # noqa: BLE001 - any failure: custom is left out, and the JSON says why
        return f"custom lowering not timed: {' '.join(str(exc).split())[:160]}"


def build_variants(shape, delegate):
    """[(label, family, receptive field, runtime, model bytes, extra facts)] for one map."""
    from wbmm_mobile.zoo import single_layer_model

    variants = []
    for k in KERNELS:
        data = convert_keras(single_layer_model("depthwise", shape, k, seed=k), name=f"dw{k}").tflite
        for runtime in ("xnnpack", "cpu"):
            variants.append(dict(label=f"dw{k} {runtime}", family=f"depthwise ({runtime})", field=k,
                                 runtime=runtime, data=data, facts={}))
    for w in WINDOWS:
        model = single_layer_model("wbmm", shape, w, seed=w)
        for lowering in ("bmm", "gather", "custom"):
            if lowering == "custom" and isinstance(delegate, str):
                continue
            result = convert_keras(model, lowering=lowering, name=f"wbmm{w}_{lowering}",
                                   delegate=None if lowering != "custom" else delegate)
            layer = result.report.layers[0]
            facts = {"tflite_bytes": len(result.tflite), "table_bytes": layer.table_bytes,
                     "dense_bytes": layer.dense_bytes, "max_tensor_rank": result.report.max_tensor_rank,
                     "verification": result.report.verification.summary() if result.report.verification else
                     result.report.verification_note, "ops": result.report.op_counts}
            runtimes = ("wbmm",) if lowering == "custom" else ("xnnpack", "cpu")
            for runtime in runtimes:
                variants.append(dict(label=f"wbmm{w} {lowering} {runtime}", family=f"WBMM {lowering} ({runtime})",
                                     field=2 * w - 1, runtime=runtime, data=result.tflite, facts=facts,
                                     window=w, lowering=lowering))
    return variants


def time_interleaved(variants, delegate, runs: int, warmup: int, progress) -> None:
    interpreters = []
    for v in variants:
        kernels = "xnnpack" if v["runtime"] in ("xnnpack", "wbmm") else "cpu"
        interp = load_interpreter(v["data"], threads=1, kernels=kernels,
                                  delegate=delegate if v["runtime"] == "wbmm" else None)
        for detail, value in zip(interp.get_input_details(), random_inputs(interp, 0)):
            interp.set_tensor(detail["index"], value)
        for _ in range(warmup):
            interp.invoke()
        interpreters.append(interp)
        v["runs_ms"] = []
    for _ in range(runs):
        for v, interp in zip(variants, interpreters):
            start = time.perf_counter()
            interp.invoke()
            v["runs_ms"].append((time.perf_counter() - start) * 1e3)
        progress()
    for v in variants:
        v.update(summarize(v["runs_ms"]))


def rank_check(shape, window: int, runs: int, warmup: int) -> dict:
    """Rank-6 partition (converted as written) against the bmm lowering's rank-4 one."""
    import keras
    import tensorflow as tf

    from converters.keras_convert import model_facts, to_tflite
    from wbmm_mobile import core
    from wbmm_mobile.zoo import single_layer_model

    height, width, channels = shape
    model = single_layer_model("wbmm", shape, window, seed=window)
    matrices = core.dense_matrices(model.layers[1].table.numpy(), window, shortcut=True).astype(np.float32)

    class Rank6Partition(keras.layers.Layer):
        def call(self, x):
            t = tf.reshape(x, (1, height // window, window, width // window, window, channels))
            t = tf.reshape(tf.transpose(t, (5, 0, 1, 3, 2, 4)), (channels, -1, window * window))
            t = tf.linalg.matmul(t, tf.constant(matrices))
            t = tf.reshape(t, (channels, 1, height // window, width // window, window, window))
            return tf.reshape(tf.transpose(t, (1, 2, 4, 3, 5, 0)), (1, height, width, channels))

    inp = keras.Input(shape, batch_size=1)
    rank6 = keras.Model(inp, Rank6Partition()(inp))
    files = {"rank6": to_tflite(rank6),
             "rank4 (bmm lowering)": convert_keras(model, lowering="bmm").tflite}
    x = random_inputs(files["rank6"], 0)[0]
    deviation = float(np.abs(np.asarray(rank6(x)) - np.asarray(model(x))).max())
    variants = []
    for name, data in files.items():
        counts, max_rank, _ = model_facts(data)
        for runtime in ("xnnpack", "cpu"):
            variants.append(dict(label=f"{name} {runtime}", runtime=runtime, data=data, ops=dict(counts),
                                 max_tensor_rank=max_rank))
    time_interleaved(variants, None, runs, warmup, lambda: None)
    for v in variants:
        v.pop("data")
    return {"shape": "x".join(map(str, shape)), "window": window, "max_abs_between_the_two": deviation,
            "rows": variants}


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({r["shape"] for r in rows}, key=lambda s: -int(s.split("x")[0]))
    fig, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4.8), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        families = sorted({r["family"] for r in rows if r["shape"] == shape})
        for family in families:
            points = sorted((r["field"], r["median_ms"]) for r in rows if r["shape"] == shape and r["family"] == family)
            style = "o-" if family.startswith("depthwise") else "s--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=family)
        ax.set_yscale("log")
        ax.set_xlabel("receptive field (kernel K, or 2w-1 inside a WBMM window)")
        ax.set_ylabel("median latency, ms (1 thread)")
        ax.set_title(f"1x{shape}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Depthwise conv vs WBMM lowerings, ai-edge-litert on this CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed invokes per variant (default: 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed invokes first (default: 5)")
    parser.add_argument("--shapes", nargs="*", default=None, help="subset, e.g. 56x56x96 (default: all three)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for layer_sweep.json/.png")
    parser.add_argument("--rank-check", action="store_true",
                        help="only compare a rank-6 partition with the bmm lowering's rank-4 one (56x56x96, w=7)")
    args = parser.parse_args(argv)
    if args.rank_check:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = rank_check((56, 56, 96), 7, args.runs, args.warmup)
        for v in result["rows"]:
            print(f"{v['label']:<30} max rank {v['max_tensor_rank']}  ops {v['ops']}  median {v['median_ms']:.3f} ms")
        print(f"max |rank6 - rank4 model| = {result['max_abs_between_the_two']:.2g}")
        write_json(result, Path(args.out) / "layer_sweep_rank.json")
        return 0
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes]

    from rich.console import Console
    from rich.progress import Progress

    console = Console(width=150)
    delegate = _delegate()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for shape in shapes:
            tag = "x".join(map(str, shape))
            console.print(f"[bold]1x{tag}[/]: converting and verifying {len(KERNELS)} depthwise and "
                          f"{len(WINDOWS)} WBMM models...")
            variants = build_variants(shape, delegate)
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task(f"timing {len(variants)} variants interleaved", total=args.runs)
                time_interleaved(variants, delegate, args.runs, args.warmup, lambda: bar.advance(task))
            for v in variants:
                v.pop("data")
                rows.append({"shape": tag, **{k: v[k] for k in v if k != "runs_ms"}, "runs_ms": v["runs_ms"]})
                console.print(f"  {v['label']:<28} median {v['median_ms']:9.3f} ms  p5 {v['p5_ms']:9.3f}  "
                              f"p95 {v['p95_ms']:9.3f}", highlight=False)

    def median(shape, label):
        match = [r for r in rows if r["shape"] == shape and r["label"] == label]
        return match[0]["median_ms"] if match else None

    checks = {}
    for shape in {r["shape"] for r in rows}:
        dw13, bmm7 = median(shape, "dw13 xnnpack"), median(shape, "wbmm7 bmm xnnpack")
        if dw13 and bmm7:
            checks[f"{shape}: dw13 xnnpack / wbmm7 bmm xnnpack"] = dw13 / bmm7
        for w in WINDOWS:
            facts = {r["lowering"]: r["facts"] for r in rows if r["shape"] == shape and r.get("window") == w}
            if "bmm" in facts and "gather" in facts:
                rest = facts["bmm"]["tflite_bytes"] - facts["bmm"]["dense_bytes"]
                checks[f"{shape}: wbmm{w} gather bytes / (table + rest)"] = \
                    facts["gather"]["tflite_bytes"] / (facts["gather"]["table_bytes"] + rest)
    targets = {}
    speed = checks.get("56x56x96: dw13 xnnpack / wbmm7 bmm xnnpack")
    if speed is not None:
        targets["wbmm7 bmm >= 10x dw13 on XNNPACK at 56x56x96"] = {"ratio": speed, "met": speed >= 10}
    size = [v for k, v in checks.items() if "gather bytes" in k]
    if size:
        targets["gather file <= 1.2 x (table + rest), every map and window"] = {"worst": max(size),
                                                                                "met": max(size) <= 1.2}
    console.print("\n[bold]ratios[/]")
    for key, value in sorted(checks.items()):
        console.print(f"  {key}: {value:.2f}", highlight=False)
    for key, value in targets.items():
        console.print(f"  target {key}: {'met' if value['met'] else 'NOT met'} ({value})", highlight=False)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "layer_sweep", "command": "python benchmarks/layer_sweep.py " + " ".join(argv or sys.argv[1:]),
               "machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "python": platform.python_version()},
               "runs": args.runs, "warmup": args.warmup, "threads": 1,
               "delegate": "wbmm delegate" if not isinstance(delegate, str) else delegate,
               "ratios": checks, "targets": targets, "rows": rows}
    write_json(payload, out / "layer_sweep.json")
    plot(rows, out / "layer_sweep.png")
    console.print(f"wrote {out / 'layer_sweep.json'} and {out / 'layer_sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
