"""The ``make demo`` run: a small WBMM-P-like network against its 13x13-depthwise twin, here.

Model (``wbmm_mobile.zoo.wbmm_p_small``): WBMM-P's layout scaled down, random seeded
weights, 224x224x3 input, batch 1: stem (two stride-2 3x3 convs + LayerNorm), four stages
of widths 32/64/128/256 with blocks D | W,D | W,D | W+,W+ ('D' = 3x3 depthwise block,
'W' = WBMM 7x7-window block, 'W+' = WBMM plus 3x3 and 5x5 depthwise branches), each block
``x + gamma * BN(pwconv2(GRN(GELU(pwconv1(SE(BN(op(x))))))))``, head pool + LayerNorm +
Linear(1000). The twin is the same network with a 13x13 depthwise conv (the receptive
field of a 7x7 window) wherever WBMM is. Not trained: it measures latency and checks
conversion, not accuracy.

Both are converted with the ``bmm`` lowering at float32 and verified against Keras, then
timed with ai-edge-litert (XNNPACK, 1 thread by default) in one process, interleaved invoke
by invoke. Not for phones (``wbmm-mobile profile``) and not a benchmark of record
(``benchmarks/``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wbmm_mobile.report import human_bytes, markdown_table, write_json


@dataclass
class DemoModel:
    kind: str
    path: str
    params: int
    tflite_bytes: int
    wbmm_layers: int
    verification: str
    convert_seconds: float


@dataclass
class DemoResult:
    models: list[DemoModel]
    comparison: object                    # hostbench.BenchComparison
    speedup: float                        # median(twin) / median(wbmm)
    json_path: str = ""
    markdown_path: str = ""
    notes: list[str] = field(default_factory=list)


def run_demo(out_dir: str | Path = "results/demo", *, runs: int = 50, warmup: int = 5, threads: int = 1,
             kernels: str = "xnnpack", seed: int = 0, log: Callable[[str], None] = print,
             progress: bool = True) -> DemoResult:
    """Build, convert (bmm, float32, verified), time both models; write demo.json and demo.md."""
    from converters.keras_convert import convert_keras
    from wbmm_mobile.hostbench import compare_models
    from wbmm_mobile.zoo import count_ops, wbmm_p_small

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models, paths = [], []
    # The twin first: speedups in the table are then "WBMM vs 13x13 depthwise".
    for kind in ("dw13", "wbmm"):
        started = time.perf_counter()
        log(f"building and converting the {kind} model (bmm lowering, float32, verified against Keras)...")
        model = wbmm_p_small(kind, seed=seed)
        result = convert_keras(model, precision="float32", lowering="bmm", seed=seed, name=model.name)
        path = out / f"{model.name}.tflite"
        path.write_bytes(result.tflite)
        paths.append(path)
        verification = result.report.verification.summary() if result.report.verification else "not verified"
        models.append(DemoModel(kind=kind, path=str(path), params=count_ops(model).params,
                                tflite_bytes=len(result.tflite), wbmm_layers=len(result.report.layers),
                                verification=verification, convert_seconds=time.perf_counter() - started))
        log(f"  {path.name}: {human_bytes(len(result.tflite))}, {verification}")
    log(f"timing both with ai-edge-litert ({kernels}, {threads} thread(s), {runs} runs after {warmup} warm-up)...")
    comparison = compare_models(paths, threads=threads, runs=runs, warmup=warmup, kernels=kernels,
                                progress=progress, seed=seed)
    twin, wbmm = comparison.stats
    demo = DemoResult(models, comparison, speedup=twin.median_ms / wbmm.median_ms)
    demo.json_path = str(write_json({"models": models, "benchmark": comparison.to_dict(),
                                     "speedup_wbmm_vs_dw13": demo.speedup}, out / "demo.json"))
    demo.markdown_path = str(_write_markdown(demo, out / "demo.md", kernels, threads, runs, warmup))
    return demo


def _write_markdown(demo: DemoResult, path: Path, kernels: str, threads: int, runs: int, warmup: int) -> Path:
    rows = []
    for model, stats in zip(demo.models, demo.comparison.stats):
        rows.append([model.kind, f"{model.params:,}", human_bytes(model.tflite_bytes), model.wbmm_layers,
                     f"{stats.median_ms:.2f}", f"{stats.p5_ms:.2f}", f"{stats.p95_ms:.2f}"])
    text = ["# wbmm-mobile demo", "",
            "Small WBMM-P-like network (224x224x3, widths 32/64/128/256, blocks D | W,D | W,D | W+,W+, random "
            "seeded weights) against its twin with 13x13 depthwise convs where the WBMM layers are. Both "
            "converted with the `bmm` lowering at float32 and verified against Keras; timed here with "
            f"ai-edge-litert ({kernels}, {threads} thread(s)), median of {runs} invokes after {warmup} warm-up, the two models interleaved invoke by invoke.", "",
            markdown_table(["model", "params", ".tflite", "WBMM layers", "median ms", "p5 ms", "p95 ms"], rows),
            f"WBMM model vs 13x13 twin: **{demo.speedup:.2f}x** (ratio of medians).", "",
            "Verification: " + "; ".join(f"{m.kind}: {m.verification}" for m in demo.models), ""]
    path.write_text("\n".join(text))
    return path
