"""wbmm-mobile-benchmark: benchmark_model's flags in, benchmark_model's lines out, read by our parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from android_harness.benchmark_output import parse_benchmark_output
from android_harness.linux_benchmark import delegate_coverage, parse_delegate_options
from wbmm_mobile.errors import BenchmarkFailedError, BenchmarkFlagsIgnoredError

RUNNER = [sys.executable, "-m", "android_harness.linux_benchmark"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny models from the real converter: all-XNNPACK, and one with CUMSUM (not in XNNPACK)."""
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from converters.keras_convert import to_tflite

    folder = tmp_path_factory.mktemp("models")
    inp = keras.Input((8, 8, 4), batch_size=1)
    full = keras.Model(inp, keras.layers.Conv2D(4, 1)(keras.layers.DepthwiseConv2D(3, padding="same")(inp)))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(inp)
    partial = keras.Model(inp, keras.layers.Conv2D(4, 1)(keras.ops.cumsum(x, axis=1)))
    paths = {}
    for name, model in (("full", full), ("partial", partial)):
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(to_tflite(model))
    return paths


def run_runner(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNNER, *flags], capture_output=True, text=True, timeout=120)


def test_prints_benchmark_model_lines_that_our_parser_reads(tiny_models):
    done = run_runner(f"--graph={tiny_models['full']}", "--num_threads=1", "--num_runs=30", "--warmup_runs=3",
                      "--min_secs=0")
    assert done.returncode == 0, done.stdout + done.stderr
    out = parse_benchmark_output(done.stdout + done.stderr)
    assert out.summary_format == "current"
    assert out.inference.count == 30          # exactly num_runs with min_secs=0
    assert out.warmup.count == 4              # the first inference + 3 warm-up runs
    stats = out.inference
    assert stats.min_us <= stats.p5_us <= stats.median_us <= stats.p95_us <= stats.max_us
    assert stats.min_us <= stats.avg_us <= stats.max_us
    assert out.inference_avg_us == pytest.approx(stats.avg_us, rel=1e-5)
    assert out.first_inference_us == out.warmup.first_us
    # A 1 KB model on XNNPACK: every original node is in one delegate kernel.
    assert [(d.delegate, d.coverage) for d in out.delegates] == [("XNNPACK", "full")]
    assert (out.replacements[0].replaced, out.replacements[0].total) == (2, 2)
    assert out.memory is not None and out.memory.kind == "delta"


def test_min_secs_makes_more_runs(tiny_models):
    done = run_runner(f"--graph={tiny_models['full']}", "--num_runs=1", "--warmup_runs=0", "--min_secs=0.3")
    out = parse_benchmark_output(done.stdout)
    assert out.inference.count > 1


def test_builtin_kernels_and_partial_delegation(tiny_models):
    builtin = parse_benchmark_output(run_runner(f"--graph={tiny_models['partial']}", "--use_xnnpack=false",
                                                "--num_runs=5", "--min_secs=0").stdout)
    assert builtin.delegates == ()
    partial = parse_benchmark_output(run_runner(f"--graph={tiny_models['partial']}", "--num_runs=5",
                                                "--min_secs=0").stdout)
    # CUMSUM stays on the builtin kernels: XNNPACK takes the conv before and the conv after.
    assert [(d.coverage, d.kernels) for d in partial.delegates] == [("partial", 2)]
    assert (partial.replacements[0].replaced, partial.replacements[0].total) == (2, 3)


def test_delegate_coverage_counts_running_nodes(tiny_models):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(tiny_models["partial"]), num_threads=1)
    interpreter.allocate_tensors()
    assert delegate_coverage(interpreter).__dict__ == {"original_nodes": 3, "replaced_nodes": 2,
                                                       "delegate_kernels": 2}
    plain = Interpreter(model_path=str(tiny_models["partial"]), num_threads=1,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    plain.allocate_tensors()
    assert delegate_coverage(plain).replaced_nodes == 0


def test_unknown_flags_are_reported_like_benchmark_model(tiny_models):
    done = run_runner(f"--graph={tiny_models['full']}", "--use_gpu=true", "--num_runs=2", "--min_secs=0")
    assert done.returncode == 0
    assert "Unconsumed cmdline flags: --use_gpu=true" in done.stdout
    with pytest.raises(BenchmarkFlagsIgnoredError) as info:
        parse_benchmark_output(done.stdout)
    assert info.value.flags == "--use_gpu=true"


def test_missing_model_and_bad_delegate_fail_with_the_tools_words(tiny_models, tmp_path):
    missing = run_runner(f"--graph={tmp_path / 'none.tflite'}")
    assert missing.returncode == 1
    with pytest.raises(BenchmarkFailedError, match="none.tflite: no such model file"):
        parse_benchmark_output(missing.stdout)
    not_a_library = tmp_path / "libfake.so"
    not_a_library.write_bytes(b"not an ELF file")
    bad = run_runner(f"--graph={tiny_models['full']}", f"--external_delegate_path={not_a_library}")
    assert bad.returncode == 1
    with pytest.raises(BenchmarkFailedError, match="libfake.so"):
        parse_benchmark_output(bad.stdout)


def test_delegate_options_use_semicolons():
    assert parse_delegate_options("kernel:fused; threads:2;") == {"kernel": "fused", "threads": "2"}
    with pytest.raises(ValueError):
        parse_delegate_options("kernel=fused")


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("wbmm-mobile-benchmark")
    assert script.is_file()
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--external_delegate_options" in done.stdout and "(default: 50)" in done.stdout


def test_tflite_runtime_only_board(tiny_models):
    """A board with tflite_runtime and no ai-edge-litert: set WBMM_TFLITE_RUNTIME_PYTHON to such an
    interpreter (e.g. a venv with tflite-runtime==2.14.0 and numpy<2) to run this."""
    import os

    python = os.environ.get("WBMM_TFLITE_RUNTIME_PYTHON")
    if not python:
        pytest.skip("set WBMM_TFLITE_RUNTIME_PYTHON to a Python that has tflite_runtime but not ai_edge_litert")
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([python, "-m", "android_harness.linux_benchmark", f"--graph={tiny_models['full']}",
                           "--num_runs=10", "--min_secs=0"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Initialized TensorFlow Lite runtime (tflite_runtime)." in done.stdout
    assert parse_benchmark_output(done.stdout).inference.count == 10
