"""The whole profile pipeline on this computer: one WBMM layer against its 13x13 depthwise twin.

Converts three single-layer models with the real converter (1x28x28x64, float32):
  dw13        a 13x13 'same' depthwise conv (the receptive field of a 7x7 window),
  wbmm_bmm    WBMM 7x7 window, ``bmm`` lowering (reshape/transpose/BATCH_MATMUL, dense M),
  wbmm_custom WBMM 7x7 window, ``custom`` lowering (the WBMM custom op; needs the delegate),
then runs ``profile`` on a loopback device (fixture phone; the binary is
``wbmm-mobile-benchmark``) with configs cpu, xnnpack and wbmm, and ``compare``.
Each (model, config) is one benchmark_model-style process, as on a phone: 50 timed runs
(and at least 1 s) after 5 warm-up runs. The custom-op model cannot run without the
delegate: its cpu/xnnpack runs are expected to be recorded as failed.

    .venv/bin/python benchmarks/profile_loopback.py

Writes benchmarks/results/profile_loopback.json and prints ratios of medians.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
SHAPE = (28, 28, 64)


def build_models(folder: Path) -> list[str]:
    import keras

    from converters.keras_convert import convert_keras
    from wbmm_mobile.layers import WBMM

    paths = []
    for name, make, lowering in (
            ("dw13", lambda: keras.layers.DepthwiseConv2D(13, padding="same", use_bias=False), "bmm"),
            ("wbmm_bmm", lambda: WBMM(7), "bmm"),
            ("wbmm_custom", lambda: WBMM(7), "custom")):
        inp = keras.Input(SHAPE, batch_size=1)
        model = keras.Model(inp, make()(inp), name=name)
        result = convert_keras(model, precision="float32", lowering=lowering, name=name)
        path = folder / f"{name}.tflite"
        path.write_bytes(result.tflite)
        paths.append(str(path))
    return paths


def main() -> None:
    from android_harness.profile import profile_on_this_computer
    from wbmm_mobile.compare import compare, format_table

    with tempfile.TemporaryDirectory(prefix="wbmm-profile-bench-") as scratch:
        folder = Path(scratch)
        models = build_models(folder)
        report = profile_on_this_computer(models, folder / "results", configs=("cpu", "xnnpack", "wbmm"),
                                          runs=50, warmup=5, progress=True)
        comparison = compare(folder / "results", plots=False, report=False)
        print(format_table(comparison))
    rows = {(r.model, r.config): r for r in comparison.rows}
    base = rows[("dw13", "xnnpack")].median_ms
    ratios = {f"{m}/{c}": base / r.median_ms for (m, c), r in rows.items() if r.median_ms}
    for label, ratio in sorted(ratios.items()):
        print(f"dw13/xnnpack median / {label} median = {ratio:.2f}x")
    out = HERE / "results" / "profile_loopback.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": ".venv/bin/python benchmarks/profile_loopback.py",
        "shape": SHAPE,
        "rows": [{"model": r.model, "config": r.config, "count": r.count, "median_ms": r.median_ms,
                  "p5_ms": r.p5_ms, "p95_ms": r.p95_ms, "std_ms": r.std_ms,
                  "speedup_vs_xnnpack_same_model": r.speedup} for r in comparison.rows],
        "failed": [{"model": f.model, "config": f.config, "error": f.error} for f in comparison.failed],
        "speedup_vs_dw13_xnnpack": ratios,
        "runs": {s.label: s.status for s in report.runs},
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
