"""The C++ WBMM delegate against XNNPACK and TFLite's builtin kernels, on this machine's CPU.

(a) Fused WBMM (custom op ``WBMM`` from the converter's ``custom`` lowering, run by
    libwbmm_delegate.so) against the ``bmm`` lowering (reshape/transpose/BATCH_MATMUL
    with a constant dense M) on XNNPACK, w in {7, 14} on 1x56x56x96, 1x28x28x192,
    1x14x14x384; plus the fused kernel with 1 against 2 threads on 56x56x96 (a second pass).
(b) Exact 'same' depthwise K in {7, 13, 31} on 1x56x56x96: the stock DEPTHWISE_CONV_2D on
    XNNPACK, on the builtin kernels, and claimed by the delegate (``claim_depthwise:1``).
(c) numpy sgemm, one thread (OpenBLAS), in the same process: the machine's reference FMA rate.
(d) A stock model, no rewrite: keras.applications.ConvNeXtTiny (``wbmm_mobile.zoo.convnext_tiny``,
    224x224, fp32, from_keras_model) on XNNPACK alone against XNNPACK plus the delegate with
    ``claim_depthwise:1`` (it takes the 18 7x7 convs, which Keras stores as grouped CONV_2D),
    1 and 2 threads for both; at most 30 invokes each.

Medians decide the targets; the best (least disturbed) invoke of each variant is
recorded too, because on a shared 2-core machine the medians mostly measure the neighbours.
FMA counts follow the dense-M form: B*H*W*C*d for WBMM (d = wh*ww), B*H*W*C*K^2 for a
depthwise conv. All variants of one case are timed in one process, interleaved invoke by
invoke (``converters.hostbench.time_round_robin``), median of ``--runs`` invokes after
``--warmup`` untimed ones; one 384^3 sgemm (``SgemmProbe``) takes its turn in the same
round-robin, so the reference rate is sampled under the same machine load as the invokes.
Everything runs with 1 thread unless named otherwise; the 2-thread delegate runs with its
default options (``spin_us`` 1000: its worker polls 1 ms for the next invoke before
sleeping). Results: ``benchmarks/results/delegate.json``. Run by hand:

    make delegate && .venv/bin/python benchmarks/delegate.py            # everything, 200 runs
    .venv/bin/python benchmarks/delegate.py --part wbmm --runs 100
    .venv/bin/python benchmarks/delegate.py --part convnext           # the stock ConvNeXtTiny only

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

# One BLAS thread, set before numpy loads OpenBLAS: the sgemm reference is single-thread.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

import delegates  # noqa: E402

WBMM_SHAPES = ((56, 56, 96), (28, 28, 192), (14, 14, 384))
WINDOWS = (7, 14)
DEPTHWISE_SHAPE = (56, 56, 96)
DEPTHWISE_KERNELS = (7, 13, 31)
RESULTS = ROOT / "benchmarks" / "results" / "delegate.json"

TARGETS = {
    "wbmm_w7_56x56x96_vs_bmm": 1.5,
    "wbmm_w7_56x56x96_fraction_of_sgemm": 0.70,
    "wbmm_w14_vs_bmm": 1.5,
    "depthwise_k13_vs_xnnpack": 15.0,
    "wbmm_56x56x96_2_threads_vs_1": 1.7,
}


@dataclass
class Variant:
    name: str
    median_ms: float
    best_ms: float                    # the least disturbed invoke: what the code can do
    p10_ms: float
    p90_ms: float
    runs: int
    gfma_per_s: float                 # 0 for whole models


@dataclass
class Case:
    name: str
    fmas: int
    variants: list[Variant] = field(default_factory=list)
    sgemm_gfma_per_s: float = 0.0     # median of the SgemmProbe interleaved with this case's first pass
    sgemm_best_gfma_per_s: float = 0.0
    sgemm_block_gfma_per_s: float = 0.0  # median of 60 back-to-back sgemms right after the case
    parallel_capacity: float = 0.0    # 2-thread scaling of independent sgemms, right after this case
    max_rel_error: float = 0.0        # candidate outputs against the baseline's

    def median(self, variant: str) -> float:
        return next(v.median_ms for v in self.variants if v.name == variant)

    def best(self, variant: str) -> float:
        return next(v.best_ms for v in self.variants if v.name == variant)


@dataclass
class ModelCase:
    """A whole stock model on XNNPACK alone ("xnnpack") and with the delegate taking its large
    depthwise convs ("xnnpack_and_delegate"), both with ``threads`` threads."""
    name: str
    threads: int
    claimed_ops: int                  # nodes the delegate took
    variants: list[Variant] = field(default_factory=list)
    max_rel_error: float = 0.0        # with the delegate against XNNPACK alone

    def median(self, variant: str) -> float:
        return next(v.median_ms for v in self.variants if v.name == variant)


def sgemm_block_rate(n: int = 384, repeats: int = 60) -> tuple[float, float]:
    """Single-thread sgemm rate in GFMA/s from ``repeats`` back-to-back calls (warm caches, one
    short stretch of machine time): (median, best). Recorded beside the interleaved probe's."""
    probe = SgemmProbe(n)
    for _ in range(3):
        probe.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        probe.invoke()
        times.append(time.perf_counter() - start)
    return n ** 3 / float(np.median(times)) / 1e9, n ** 3 / float(np.min(times)) / 1e9


def parallel_capacity(n: int = 384, repeats: int = 40) -> float:
    """How much faster 2 threads finish 2 independent single-thread sgemms than 1 thread does
    them one after the other: 2.0 on two free cores, ~1.0 when other processes hold a core.
    The ceiling of any 2-thread speedup measured in the same run (numpy releases the GIL)."""
    import threading

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)

    def work(out):
        for _ in range(repeats):
            np.matmul(a, a, out=out)

    buffers = [np.empty_like(a), np.empty_like(a)]
    start = time.perf_counter()
    work(buffers[0])
    work(buffers[1])
    serial = time.perf_counter() - start
    threads = [threading.Thread(target=work, args=(b,)) for b in buffers]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return serial / (time.perf_counter() - start)


def source_revision() -> str:
    """The commit the timed kernels were built from ("-dirty" with uncommitted changes to tracked
    files), so runs at different commits can be told apart; "unknown" outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if changed else "")


def _interpreter(model: bytes, *, kernels: str, delegate=None, threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if kernels == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, num_threads=threads, experimental_op_resolver_type=resolver,
                              experimental_delegates=[delegate] if delegate is not None else None)
    interpreter.allocate_tensors()
    return interpreter


class SgemmProbe:
    """One single-thread numpy sgemm (n x n times n x n) per ``invoke()``: timed by the same
    round-robin loop as the interpreters, between their invokes, so the reference FMA rate sees
    the same machine load (on this shared VM the core's speed changes within a second: a pure
    register FMA loop alternates between ~47 and ~33 GFMA/s)."""

    def __init__(self, n: int = 384):
        self.n = n
        self.a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        self.c = np.empty_like(self.a)

    def invoke(self):
        np.matmul(self.a, self.a, out=self.c)


SGEMM = "sgemm_probe"


def time_side_by_side(interpreters: dict, x: np.ndarray, runs: int, warmup: int, fmas: int, *,
                      sgemm: bool = False):
    """Warm-up, then ``hostbench.time_round_robin`` over the interpreters (and, with ``sgemm``,
    an interleaved SgemmProbe); returns variants, each one's output and the probe's (median,
    best) GFMA/s (zeros without it)."""
    from converters.hostbench import time_round_robin

    outputs = {}
    for name, it in interpreters.items():
        it.set_tensor(it.get_input_details()[0]["index"], x)
        for _ in range(warmup):
            it.invoke()
        outputs[name] = it.get_tensor(it.get_output_details()[0]["index"]).copy()
    timed = dict(interpreters)
    if sgemm:
        probe = SgemmProbe()
        for _ in range(warmup):
            probe.invoke()
        timed[SGEMM] = probe
    samples = time_round_robin(timed, runs)
    variants = []
    for name in interpreters:
        ms = np.asarray(samples[name])
        median = float(np.median(ms))
        variants.append(Variant(name, median, float(ms.min()), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)), len(ms),
                                fmas / median / 1e6))
    rates = (0.0, 0.0)
    if sgemm:
        ms = np.asarray(samples[SGEMM])
        rates = (probe.n ** 3 / float(np.median(ms)) / 1e6, probe.n ** 3 / float(ms.min()) / 1e6)
    return variants, outputs, rates


def _max_rel(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.abs(reference - candidate).max() / max(np.abs(reference).max(), 1e-30))


def wbmm_cases(runs: int, warmup: int, progress, task) -> list[Case]:
    from converters.keras_convert import convert_keras
    from wbmm_mobile.zoo import single_layer_model

    # Convert everything first: TensorFlow's threads stay busy for a while after a
    # conversion and would sit beside whatever is timed next.
    converted = {}
    for shape in WBMM_SHAPES:
        for window in WINDOWS:
            progress.update(task, description=f"WBMM w={window} {'x'.join(map(str, shape))}: converting")
            model = single_layer_model("wbmm", shape, window)
            converted[shape, window] = (convert_keras(model, lowering="bmm", verify=False).tflite,
                                        convert_keras(model, lowering="custom", verify=False).tflite)
    time.sleep(1.0)
    sgemm_block_rate(repeats=200)  # half a second of work first: the first timed case saw a cold core
    cases = []
    for shape in WBMM_SHAPES:
        for window in WINDOWS:
            height, width, channels = shape
            fmas = height * width * channels * window * window
            bmm, fused = converted.pop((shape, window))
            interpreters = {
                "bmm_xnnpack": _interpreter(bmm, kernels="xnnpack"),
                "fused_delegate_1t": _interpreter(fused, kernels="cpu", delegate=delegates.load(num_threads=1)),
            }
            progress.update(task, description=f"WBMM w={window} {height}x{width}x{channels}: timing")
            x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
            variants, outputs, sgemm_rates = time_side_by_side(interpreters, x, runs, warmup, fmas, sgemm=True)
            capacity = 0.0
            if shape == (56, 56, 96):
                # A second pass, 1 against 2 threads: timed apart from the bmm pass so the
                # 2-thread pool's polling worker does not sit beside the 1-thread variants.
                threaded = {"fused_delegate_1t_again": interpreters["fused_delegate_1t"],
                            "fused_delegate_2t": _interpreter(fused, kernels="cpu",
                                                              delegate=delegates.load(num_threads=2))}
                more, more_outputs, _ = time_side_by_side(threaded, x, runs, warmup, fmas)
                variants += more
                outputs["fused_delegate_2t"] = more_outputs["fused_delegate_2t"]
                capacity = parallel_capacity()
            case = Case(f"wbmm_w{window}_{height}x{width}x{channels}", fmas, variants,
                        *sgemm_rates, sgemm_block_gfma_per_s=sgemm_block_rate()[0], parallel_capacity=capacity,
                        max_rel_error=max(_max_rel(outputs["bmm_xnnpack"], o) for o in outputs.values()))
            cases.append(case)
            del interpreters, outputs
            progress.advance(task)
    return cases


def depthwise_cases(runs: int, warmup: int, progress, task) -> list[Case]:
    from converters.keras_convert import to_tflite
    from wbmm_mobile.zoo import single_layer_model

    converted = {}
    for kernel in DEPTHWISE_KERNELS:
        progress.update(task, description=f"depthwise {kernel}x{kernel}: converting")
        model = single_layer_model("depthwise", DEPTHWISE_SHAPE, kernel)
        converted[kernel] = to_tflite(model)
    time.sleep(1.0)
    cases = []
    height, width, channels = DEPTHWISE_SHAPE
    for kernel in DEPTHWISE_KERNELS:
        fmas = height * width * channels * kernel * kernel
        tflite = converted.pop(kernel)
        interpreters = {
            "xnnpack": _interpreter(tflite, kernels="xnnpack"),
            "cpu": _interpreter(tflite, kernels="cpu"),
            "delegate_1t": _interpreter(tflite, kernels="cpu",
                                        delegate=delegates.load(num_threads=1, claim_depthwise=1)),
        }
        progress.update(task, description=f"depthwise {kernel}x{kernel}: timing")
        x = np.random.default_rng(2).standard_normal((1, *DEPTHWISE_SHAPE)).astype(np.float32)
        # XNNPACK's K=31 takes ~0.25 s per invoke: cap its runs at what the issue asks (>= 50).
        variants, outputs, sgemm_rates = time_side_by_side(interpreters, x, runs if kernel < 31 else min(runs, 50),
                                                           warmup, fmas, sgemm=True)
        cases.append(Case(f"depthwise_k{kernel}_{height}x{width}x{channels}", fmas, variants,
                          *sgemm_rates, sgemm_block_gfma_per_s=sgemm_block_rate()[0],
                          max_rel_error=max(_max_rel(outputs["cpu"], o) for o in outputs.values())))
        del interpreters, outputs
        progress.advance(task)
    return cases


CONVNEXT_RUNS = 30  # invokes per variant: ConvNeXtTiny takes 0.1-0.25 s here


def convnext_cases(runs: int, warmup: int, progress, task) -> list[ModelCase]:
    from converters.keras_convert import to_tflite
    from wbmm_mobile.zoo import convnext_tiny

    progress.update(task, description="ConvNeXtTiny: converting")
    stock = to_tflite(convnext_tiny())
    time.sleep(1.0)  # TensorFlow's threads stay busy for a while after a conversion
    x = np.random.default_rng(3).standard_normal((1, 224, 224, 3)).astype(np.float32)
    cases = []
    for threads in (1, 2):
        progress.update(task, description=f"ConvNeXtTiny {threads} thread(s): timing")
        delegate = delegates.load(num_threads=threads, claim_depthwise=1)
        interpreters = {"xnnpack": _interpreter(stock, kernels="xnnpack", threads=threads),
                        "xnnpack_and_delegate": _interpreter(stock, kernels="xnnpack", threads=threads,
                                                             delegate=delegate)}
        claimed = len(delegates.delegation_report(interpreters["xnnpack_and_delegate"], delegate).claimed_ops)
        variants, outputs, _ = time_side_by_side(interpreters, x, min(runs, CONVNEXT_RUNS), warmup, 0)
        cases.append(ModelCase(f"convnext_tiny_{threads}t", threads, claimed, variants,
                               _max_rel(outputs["xnnpack"], outputs["xnnpack_and_delegate"])))
        del interpreters, outputs
        progress.advance(task)
    return cases


def summarize(cases: list[Case], models: list[ModelCase] = ()) -> dict:
    by_name = {c.name: c for c in cases}
    ratios: dict[str, float] = {}
    for c in cases:
        if c.name.startswith("wbmm"):
            ratios[f"{c.name}_fused_vs_bmm"] = c.median("bmm_xnnpack") / c.median("fused_delegate_1t")
            ratios[f"{c.name}_fused_vs_bmm_best"] = c.best("bmm_xnnpack") / c.best("fused_delegate_1t")
            ratios[f"{c.name}_fused_fraction_of_sgemm"] = \
                next(v.gfma_per_s for v in c.variants if v.name == "fused_delegate_1t") / c.sgemm_gfma_per_s
            ratios[f"{c.name}_fused_fraction_of_block_sgemm"] = \
                next(v.gfma_per_s for v in c.variants if v.name == "fused_delegate_1t") / c.sgemm_block_gfma_per_s
            ratios[f"{c.name}_fused_fraction_of_sgemm_best"] = \
                c.fmas / c.best("fused_delegate_1t") / 1e6 / c.sgemm_best_gfma_per_s
        else:
            ratios[f"{c.name}_delegate_vs_xnnpack"] = c.median("xnnpack") / c.median("delegate_1t")
            ratios[f"{c.name}_delegate_vs_xnnpack_best"] = c.best("xnnpack") / c.best("delegate_1t")
            ratios[f"{c.name}_delegate_vs_cpu"] = c.median("cpu") / c.median("delegate_1t")
    targets = {}
    main = by_name.get("wbmm_w7_56x56x96")
    if main:
        targets["wbmm_w7_56x56x96_vs_bmm"] = ratios["wbmm_w7_56x56x96_fused_vs_bmm"]
        # The lower of the two sgemm references' fractions: the interleaved probe shares the
        # invokes' machine load, the back-to-back one runs with warm caches.
        targets["wbmm_w7_56x56x96_fraction_of_sgemm"] = min(ratios["wbmm_w7_56x56x96_fused_fraction_of_sgemm"],
                                                            ratios["wbmm_w7_56x56x96_fused_fraction_of_block_sgemm"])
        targets["wbmm_56x56x96_2_threads_vs_1"] = \
            main.median("fused_delegate_1t_again") / main.median("fused_delegate_2t")
        ratios["wbmm_56x56x96_2_threads_vs_1_best"] = main.best("fused_delegate_1t_again") / main.best("fused_delegate_2t")
        # Against the first pass's 1-thread median, timed with no 2-thread worker polling
        # beside it: if this is much lower than the target's ratio, the polling slowed 1t_again.
        ratios["wbmm_56x56x96_2_threads_vs_1_first_pass"] = \
            main.median("fused_delegate_1t") / main.median("fused_delegate_2t")
        ratios["machine_2_thread_capacity"] = main.parallel_capacity
    w14 = [ratios[f"{c.name}_fused_vs_bmm"] for c in cases if c.name.startswith("wbmm_w14")]
    if w14:
        targets["wbmm_w14_vs_bmm"] = min(w14)  # the worst of the three shapes
    if "depthwise_k13_56x56x96" in by_name:
        targets["depthwise_k13_vs_xnnpack"] = ratios["depthwise_k13_56x56x96_delegate_vs_xnnpack"]
    for m in models:  # no target in the issue: reported
        ratios[f"{m.name}_delegate_vs_xnnpack"] = m.median("xnnpack") / m.median("xnnpack_and_delegate")
    return {"ratios": ratios,
            "targets": {k: {"measured": v, "target": TARGETS[k], "met": v >= TARGETS[k]} for k, v in targets.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "wbmm", "depthwise", "convnext"), default="all",
                        help="which cases to run (default: all)")
    parser.add_argument("--runs", type=int, default=200,
                        help="timed invokes per variant (default: 200, minimum 50; XNNPACK's 31x31 runs 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed invokes per variant first (default: 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.runs < 50:
        parser.error("--runs must be at least 50")
    console = Console(soft_wrap=True)
    try:
        delegates.library_path()
    except delegates.DelegateNotBuiltError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2

    started = time.time()
    cases: list[Case] = []
    models: list[ModelCase] = []
    total = (len(WBMM_SHAPES) * len(WINDOWS) if args.part in ("all", "wbmm") else 0) + \
        (len(DEPTHWISE_KERNELS) if args.part in ("all", "depthwise") else 0) + \
        (2 if args.part in ("all", "convnext") else 0)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting", total=total)
        if args.part in ("all", "wbmm"):
            cases += wbmm_cases(args.runs, args.warmup, progress, task)
        if args.part in ("all", "depthwise"):
            cases += depthwise_cases(args.runs, args.warmup, progress, task)
        if args.part in ("all", "convnext"):
            models += convnext_cases(args.runs, args.warmup, progress, task)

    summary = summarize(cases, models)
    isa = delegates.available_isas()[-1]
    for c in cases:
        line = ", ".join(f"{v.name} {v.median_ms:.3f} ms (best {v.best_ms:.3f}; {v.gfma_per_s:.1f} GFMA/s)"
                         for v in c.variants)
        capacity = f"; 2-thread capacity {c.parallel_capacity:.2f}x" if c.parallel_capacity else ""
        console.print(f"{c.name}: {line}; sgemm {c.sgemm_gfma_per_s:.1f} GFMA/s (best {c.sgemm_best_gfma_per_s:.1f}, "
                      f"back-to-back {c.sgemm_block_gfma_per_s:.1f})"
                      f"{capacity}; "
                      f"max rel diff {c.max_rel_error:.1e}")
    for m in models:
        line = ", ".join(f"{v.name} {v.median_ms:.1f} ms (best {v.best_ms:.1f})" for v in m.variants)
        console.print(f"{m.name}: {line}; the delegate took {m.claimed_ops} nodes; max rel diff {m.max_rel_error:.1e}")
    for name, value in summary["ratios"].items():
        console.print(f"  {name}: {value:.2f}")
    for name, t in summary["targets"].items():
        verdict = "[green]met[/green]" if t["met"] else "[red]NOT met[/red]"
        console.print(f"target {name}: {t['measured']:.2f} (>= {t['target']}) {verdict}")

    record = {
        "benchmark": "delegate",
        "command": "python benchmarks/delegate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_unix": started,
        "seconds": time.time() - started,
        "source_revision": source_revision(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "delegate_isa": isa,
        "runs": args.runs,
        "warmup": args.warmup,
        "cases": [asdict(c) for c in cases],
        "models": [asdict(m) for m in models],
        **summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
