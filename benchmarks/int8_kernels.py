"""The delegate's int8 kernels against XNNPACK's and TFLite's builtin int8 kernels, on this CPU.

(a) Exact int8 depthwise, 'same', K in {7, 13, 31} on 1x56x56x96, 1x28x28x192, 1x14x14x384
    (Keras DepthwiseConv2D through the real converter, full int8): XNNPACK (``xnnpack``), the
    builtin int8 kernel (``cpu``) and the delegate with ``claim_depthwise:1`` (``wbmm``, one
    variant per ``--isas`` entry); at 56x56x96 XNNPACK's own int8 5x5 runs in the same
    round-robin as the yardstick (the 7x7 target is a time ratio to it).
(b) The int8 WBMM custom op (hand-quantized per converters/custom_ops.py's int8 form; the
    Python emitter is built separately) against the float32 WBMM op, w in {7, 14}, same shapes,
    both on the delegate.
(c) Full-int8 keras.applications ConvNeXtTiny (``wbmm_mobile.zoo.convnext_tiny``: weights=None,
    seeded, layer scales 1 so the 7x7 convs matter to the output; 224x224, int8 input and
    output, calibrated on 4 seeded random images): XNNPACK alone against XNNPACK plus the
    delegate with ``claim_depthwise:1`` (its eighteen 7x7 grouped CONV_2D), 1 and 2 threads,
    and the largest output difference in quantization steps.

Every case times its variants in one process, interleaved invoke by invoke
(``converters.hostbench.time_round_robin``), medians of ``--runs`` rounds after ``--warmup``
untimed invokes; one thread unless named. Ratios are baseline median / candidate median.
Results: ``benchmarks/results/int8_kernels.json``. Run (under the machine's benchmark lock):

    make delegate && flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/int8_kernels.py
    .venv/bin/python benchmarks/int8_kernels.py --part depthwise --isas auto,avx2 --runs 30

Not a test: nothing here asserts; the issue's targets are printed as met / not met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # delegate_models: the hand-quantized custom-op models

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

import delegates  # noqa: E402
from benchmarks.delegate import _interpreter, source_revision  # noqa: E402
from delegate_models import to_int8_tflite  # noqa: E402

SHAPES = ((56, 56, 96), (28, 28, 192), (14, 14, 384))
KERNELS = (7, 13, 31)
WINDOWS = (7, 14)
YARDSTICK_KERNEL = 5
RESULTS = ROOT / "benchmarks" / "results" / "int8_kernels.json"

TARGETS = {  # name: (what, threshold)
    "depthwise_k13_56x56x96_vs_xnnpack": ("int8 depthwise 13x13 at 56x56x96: XNNPACK / wbmm >=", 25.0),
    "depthwise_k7_56x56x96_vs_xnnpack_5x5": ("int8 depthwise 7x7 at 56x56x96: wbmm / XNNPACK 5x5 <=", 2.0),
    "wbmm_w7_56x56x96_int8_vs_float32": ("int8 WBMM w=7 at 56x56x96: float32 op / int8 op >", 1.0),
    "convnext_tiny_int8_1t_vs_xnnpack": ("full-int8 ConvNeXtTiny, 1 thread: XNNPACK / XNNPACK+wbmm >=", 3.5),
    "convnext_tiny_int8_max_steps": ("full-int8 ConvNeXtTiny: output steps from XNNPACK alone <=", 2.0),
}


@dataclass
class Variant:
    name: str
    median_ms: float
    best_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


@dataclass
class Case:
    name: str
    variants: list[Variant] = field(default_factory=list)
    max_steps: dict = field(default_factory=dict)      # variant -> largest |difference| from the baseline, in steps
    identical: dict = field(default_factory=dict)      # variant -> fraction of outputs equal to the baseline's
    identical_to_xnnpack: dict = field(default_factory=dict)  # variant -> the same fraction against "xnnpack"
    baseline: str = ""
    claimed: dict = field(default_factory=dict)        # variant -> nodes the delegate took (whole models)

    def median(self, name: str) -> float:
        return next(v.median_ms for v in self.variants if v.name == name)


def _input_for(interpreter, seed: int = 1) -> np.ndarray:
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if detail["dtype"] == np.int8:
        return rng.integers(-128, 128, detail["shape"]).astype(np.int8)
    return rng.standard_normal(detail["shape"]).astype(np.float32)


def time_case(name: str, interpreters: dict, runs: int, warmup: int, baseline: str,
              inputs: dict | None = None) -> Case:
    """Warm-up, round-robin timing, and each variant's outputs against the baseline's (integer
    outputs in steps; float outputs are not compared)."""
    from converters.hostbench import time_round_robin

    outputs = {}
    for key, it in interpreters.items():
        it.set_tensor(it.get_input_details()[0]["index"], (inputs or {}).get(key, _input_for(it)))
        for _ in range(warmup):
            it.invoke()
        outputs[key] = it.get_tensor(it.get_output_details()[0]["index"]).copy()
    samples = time_round_robin(interpreters, runs)
    case = Case(name, baseline=baseline)
    for key, ms in samples.items():
        ms = np.asarray(ms)
        case.variants.append(Variant(key, float(np.median(ms)), float(ms.min()), float(np.percentile(ms, 10)),
                                     float(np.percentile(ms, 90)), len(ms)))
    reference = outputs[baseline]
    for key, out in outputs.items():
        if out.dtype == np.int8 and reference.dtype == np.int8 and out.shape == reference.shape:
            diff = np.abs(out.astype(np.int32) - reference.astype(np.int32))
            case.max_steps[key] = int(diff.max())
            case.identical[key] = float(np.mean(diff == 0))
            if "xnnpack" in outputs and outputs["xnnpack"].shape == out.shape and baseline != "xnnpack":
                case.identical_to_xnnpack[key] = float(np.mean(out == outputs["xnnpack"]))
    return case


def depthwise_model(shape, kernel: int) -> bytes:
    import keras

    keras.utils.set_random_seed(kernel)
    inp = keras.Input(shape, batch_size=1)
    out = keras.layers.DepthwiseConv2D(kernel, padding="same", bias_initializer="random_normal")(inp)
    return to_int8_tflite(keras.Model(inp, out), shape, seed=kernel)


def _wbmm_label(isa: str) -> str:
    return "wbmm" if isa == "auto" else f"wbmm_{isa}"


def depthwise_cases(isas, runs: int, warmup: int, progress, task) -> list[Case]:
    converted = {}
    for shape in SHAPES:
        for kernel in KERNELS + ((YARDSTICK_KERNEL,) if shape == SHAPES[0] else ()):
            progress.update(task, description=f"depthwise {kernel}x{kernel} {'x'.join(map(str, shape))}: converting")
            converted[shape, kernel] = depthwise_model(shape, kernel)
    time.sleep(1.0)  # TensorFlow's threads linger after a conversion
    cases = []
    for shape in SHAPES:
        for kernel in KERNELS:
            tflite = converted[shape, kernel]
            interpreters = {"xnnpack": _interpreter(tflite, kernels="xnnpack"),
                            "cpu": _interpreter(tflite, kernels="builtin")}
            for isa in isas:
                interpreters[_wbmm_label(isa)] = _interpreter(
                    tflite, kernels="builtin", delegate=delegates.load(claim_depthwise=1, num_threads=1, isa=isa))
            if shape == SHAPES[0]:
                interpreters[f"xnnpack_{YARDSTICK_KERNEL}x{YARDSTICK_KERNEL}"] = _interpreter(
                    converted[shape, YARDSTICK_KERNEL], kernels="xnnpack")
            name = f"depthwise_k{kernel}_{'x'.join(map(str, shape))}"
            progress.update(task, description=f"{name}: timing")
            # XNNPACK's 31x31 takes a quarter of a second an invoke: fewer rounds there.
            cases.append(time_case(name, interpreters, max(5, runs // 4) if kernel == 31 else runs, warmup, "cpu"))
            progress.advance(task)
    return cases


def wbmm_cases(isas, runs: int, warmup: int, progress, task) -> list[Case]:
    from converters.custom_ops import WbmmOptions
    from delegate_models import int8_conv_model, wbmm_model

    cases = []
    for shape in SHAPES:
        for window in WINDOWS:
            rng = np.random.default_rng(window)
            channels = shape[2]
            kernel = 2 * window - 1
            float_kernel = (rng.standard_normal((kernel, kernel, channels)) / kernel).astype(np.float32)
            # The int8 form of the same table: per-channel symmetric weights, the bias at x_scale * w_scale.
            w_scales = (np.abs(float_kernel).max(axis=(0, 1)) / 127).astype(np.float32)
            int8_kernel = np.clip(np.round(float_kernel / w_scales), -127, 127).astype(np.int8)
            bias = rng.integers(-500, 500, channels).astype(np.int32)
            int8_model = int8_conv_model("WBMM", (1, *shape), int8_kernel, w_scales, (0.02, -3), (0.03, 4), bias,
                                         options=WbmmOptions(window, window, False).pack())
            float_model = wbmm_model((1, *shape), float_kernel, window, shortcut=False,
                                     bias=(bias * 0.02 * w_scales).astype(np.float32))
            interpreters = {}
            for isa in isas:
                interpreters[f"float32_{_wbmm_label(isa)}"] = _interpreter(
                    float_model, kernels="builtin", delegate=delegates.load(num_threads=1, isa=isa))
                interpreters[f"int8_{_wbmm_label(isa)}"] = _interpreter(
                    int8_model, kernels="builtin", delegate=delegates.load(num_threads=1, isa=isa))
            name = f"wbmm_w{window}_{'x'.join(map(str, shape))}"
            progress.update(task, description=f"{name}: timing")
            cases.append(time_case(name, interpreters, runs, warmup, f"int8_{_wbmm_label(isas[0])}"))
            progress.advance(task)
    return cases


def convnext_cases(isas, runs: int, warmup: int, progress, task) -> list[Case]:
    from wbmm_mobile.zoo import convnext_tiny

    progress.update(task, description="ConvNeXtTiny int8: converting (calibration takes a while)")
    tflite = to_int8_tflite(convnext_tiny(), (224, 224, 3), images=4)
    time.sleep(1.0)
    cases = []
    for threads in (1, 2):
        interpreters = {"xnnpack": _interpreter(tflite, kernels="xnnpack", threads=threads)}
        claimed = {}
        for isa in isas:
            delegate = delegates.load(claim_depthwise=1, num_threads=threads, isa=isa)
            label = f"xnnpack_and_{_wbmm_label(isa)}"
            interpreters[label] = _interpreter(tflite, kernels="xnnpack", delegate=delegate, threads=threads)
            claimed[label] = delegates.delegation_report(interpreters[label], delegate).count("CONV_2D")
        name = f"convnext_tiny_int8_{threads}t"
        progress.update(task, description=f"{name}: timing")
        case = time_case(name, interpreters, runs, warmup, "xnnpack")
        case.claimed = claimed  # how many grouped 7x7 convs each delegate took
        cases.append(case)
        progress.advance(task)
    return cases


# Per case kind: (baseline variant prefixes, candidate variant prefix); a ratio is
# baseline median / candidate median, so > 1 means the candidate is faster.
RATIO_PAIRS = {"depthwise": (("xnnpack", "cpu"), "wbmm"), "wbmm": (("float32_",), "int8_"),
               "convnext": (("xnnpack",), "xnnpack_and_")}


def ratios(cases: list[Case]) -> dict:
    """Baseline-over-candidate median ratios for every case, and the issue's target figures."""
    out = {}
    for case in cases:
        baselines, candidate = RATIO_PAIRS[case.name.split("_")[0]]
        for v in case.variants:
            if not v.name.startswith(candidate):
                continue
            suffix = v.name[len(candidate):] if candidate.endswith("_") else ""
            for other in case.variants:
                if other.name.startswith(candidate) or not other.name.startswith(baselines):
                    continue
                if candidate.endswith("_") and case.name.startswith("wbmm") and other.name != f"float32_{suffix}":
                    continue  # float32 and int8 on the same ISA only
                out[f"{case.name}:{other.name}/{v.name}"] = other.median_ms / v.median_ms
    by_name = {c.name: c for c in cases}
    figures = {}
    if "depthwise_k13_56x56x96" in by_name:
        figures["depthwise_k13_56x56x96_vs_xnnpack"] = out.get("depthwise_k13_56x56x96:xnnpack/wbmm")
    if "depthwise_k7_56x56x96" in by_name:
        c = by_name["depthwise_k7_56x56x96"]
        figures["depthwise_k7_56x56x96_vs_xnnpack_5x5"] = c.median("wbmm") / c.median(f"xnnpack_{YARDSTICK_KERNEL}x{YARDSTICK_KERNEL}")
    if "wbmm_w7_56x56x96" in by_name:
        figures["wbmm_w7_56x56x96_int8_vs_float32"] = out.get("wbmm_w7_56x56x96:float32_wbmm/int8_wbmm")
    if "convnext_tiny_int8_1t" in by_name:
        c = by_name["convnext_tiny_int8_1t"]
        figures["convnext_tiny_int8_1t_vs_xnnpack"] = c.median("xnnpack") / c.median("xnnpack_and_wbmm")
        figures["convnext_tiny_int8_max_steps"] = max(
            v for case in cases if case.name.startswith("convnext") for k, v in case.max_steps.items()
            if k.startswith("xnnpack_and_"))
    return {"ratios": out, "targets": {k: {"what": TARGETS[k][0], "threshold": TARGETS[k][1], "value": v,
                                           "met": _met(k, v)} for k, v in figures.items() if v is not None}}


def _met(key: str, value: float) -> bool:
    threshold = TARGETS[key][1]
    if key.endswith("_vs_xnnpack_5x5") or key.endswith("_max_steps"):
        return value <= threshold
    if key.startswith("wbmm_w7"):
        return value > threshold
    return value >= threshold


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--part", choices=("all", "depthwise", "wbmm", "convnext"), default="all")
    parser.add_argument("--runs", type=int, default=40, help="timed rounds per case (default: 40; a quarter at K=31)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed invokes per variant first (default: 3)")
    parser.add_argument("--isas", default="auto",
                        help="comma-separated delegate ISAs to time (default: auto, the best this CPU runs; "
                             f"available here: {','.join(delegates.available_isas())})")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    console = Console(soft_wrap=True)
    isas = [isa.strip() for isa in args.isas.split(",") if isa.strip()]
    if args.runs < 1 or args.warmup < 0:
        console.print("--runs must be >= 1 and --warmup >= 0")
        return 2
    for isa in isas:
        if isa != "auto" and isa not in delegates.available_isas():
            console.print(f"isa {isa!r} is not available on this CPU (available: {', '.join(delegates.available_isas())})")
            return 2
    try:
        delegates.library_path()
    except Exception as error:  # the delegate is not built
        console.print(str(error))
        return 2
    parts = ("depthwise", "wbmm", "convnext") if args.part == "all" else (args.part,)
    steps = {"depthwise": len(SHAPES) * len(KERNELS), "wbmm": len(SHAPES) * len(WINDOWS), "convnext": 2}
    cases: list[Case] = []
    started = time.time()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting", total=sum(steps[p] for p in parts))
        for part in parts:
            cases += {"depthwise": depthwise_cases, "wbmm": wbmm_cases, "convnext": convnext_cases}[part](
                isas, args.runs, args.warmup, progress, task)
    summary = ratios(cases)
    record = {
        "benchmark": "int8_kernels",
        "command": " ".join([Path(sys.executable).name, "benchmarks/int8_kernels.py", *(argv or sys.argv[1:])]),
        "source_revision": source_revision(),
        "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "isas": isas, "available_isas": delegates.available_isas(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "runs": args.runs, "warmup": args.warmup,
        "cases": [asdict(c) for c in cases], **summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    for case in cases:
        console.print(f"[bold]{case.name}[/bold]  " + "  ".join(
            f"{v.name} {v.median_ms:.3f} ms" for v in case.variants))
        steps_text = "  ".join(
            f"{k}: max {v} steps, {case.identical[k]:.4%} identical"
            + (f" ({case.identical_to_xnnpack[k]:.4%} to xnnpack)" if k in case.identical_to_xnnpack else "")
            for k, v in case.max_steps.items() if k != case.baseline)
        if steps_text:
            console.print(f"    vs {case.baseline}: {steps_text}")
    for key, value in sorted(summary["ratios"].items()):
        console.print(f"  {key}: {value:.2f}x")
    for key, target in summary["targets"].items():
        console.print(f"target {target['what']} {target['threshold']}: {target['value']:.3f} "
                      f"{'[green]met[/green]' if target['met'] else '[red]NOT met[/red]'}")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
