"""converters.hostbench: timing a real .tflite with the real interpreter (no time assertions)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from wbmm_mobile.errors import CorruptModelError, ModelNotFoundError
from converters.hostbench import compare_models, summarize, time_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import keras
    from converters.keras_convert import to_tflite

    inp = keras.Input((8, 8, 4), batch_size=1)
    model = keras.Model(inp, keras.layers.DepthwiseConv2D(5, padding="same")(inp))
    path = tmp_path_factory.mktemp("hb") / "tiny.tflite"
    path.write_bytes(to_tflite(model))
    return path


@pytest.mark.parametrize("kernels", ["xnnpack", "cpu"])
def test_time_model_reports_every_run(tiny_model, kernels):
    calls = []
    stats = time_model(tiny_model, runs=7, warmup=3, kernels=kernels, progress=lambda done, total: calls.append(done))
    assert stats.runs == 7 and len(stats.runs_ms) == 7 and stats.warmup == 3
    assert calls == list(range(1, 2 + 3 + 7))                     # first invoke + warm-up + timed
    assert stats.min_ms <= stats.p5_ms <= stats.median_ms <= stats.p95_ms <= stats.max_ms
    assert stats.median_ms == pytest.approx(float(np.median(stats.runs_ms)))
    assert stats.init_ms > 0 and stats.first_ms > 0 and stats.warmup_mean_ms > 0
    data = tiny_model.read_bytes()
    assert stats.model_bytes == len(data) and stats.model_sha256 == hashlib.sha256(data).hexdigest()
    assert stats.kernels == kernels and stats.threads == 1
    assert stats.to_dict()["runs"] == 7


def test_min_secs_extends_the_run(tiny_model):
    import time

    started = time.perf_counter()
    stats = time_model(tiny_model, runs=2, warmup=0, min_secs=0.05, progress=False)
    assert stats.runs > 2 and time.perf_counter() - started >= 0.05     # honoured min_secs, not a speed claim


def test_summarize_percentiles():
    s = summarize(list(range(1, 102)))
    assert s["median_ms"] == 51 and s["p5_ms"] == 6 and s["p95_ms"] == 96 and s["min_ms"] == 1


def test_compare_models_and_bad_inputs(tiny_model, tmp_path):
    result = compare_models([tiny_model, tiny_model.read_bytes()], runs=3, warmup=1, progress=False)
    assert result.speedups[0] == 1.0 and len(result.stats) == 2 and result.speedups[1] > 0
    with pytest.raises(ModelNotFoundError):
        compare_models([tiny_model, tmp_path / "missing.tflite"], runs=3, progress=False)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptModelError):
        time_model(bad, runs=1, progress=False)


def test_compare_models_interleaves_rounds(tiny_model):
    calls = []
    result = compare_models([tiny_model, tiny_model], runs=5, warmup=2, kernels="cpu",
                            progress=lambda done, total: calls.append((done, total)))
    assert [s.runs for s in result.stats] == [5, 5] and [s.warmup for s in result.stats] == [2, 2]
    assert calls[-1] == (2 * (1 + 2 + 5), 2 * (1 + 2 + 5))
    assert all(s.init_ms > 0 and s.first_ms > 0 for s in result.stats)
    sequential = compare_models([tiny_model, tiny_model], runs=3, warmup=0, progress=False, interleave=False)
    assert [s.runs for s in sequential.stats] == [3, 3]
