"""benchmark_model output parsing: one hand-written output file per format variant."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from android_harness.benchmark_output import (
    RunStats,
    format_stats_line,
    format_summary_line,
    parse_benchmark_output,
    parse_stats_line,
    stats_from_samples,
    tflite_percentile,
)
from wbmm_mobile.errors import (
    BenchmarkError,
    BenchmarkFailedError,
    BenchmarkFlagsIgnoredError,
    BenchmarkOutputError,
)

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def parse(name: str, **kwargs):
    return parse_benchmark_output((FIXTURES / name).read_text(), **kwargs)


def test_current_summary_with_percentiles_memory_and_full_xnnpack():
    out = parse("current_xnnpack_full.txt")
    assert out.summary_format == "current"
    assert (out.init_us, out.first_inference_us, out.warmup_avg_us, out.inference_avg_us) == (
        41207, 18342, 13588.4, 13170.9)
    assert out.warmup == RunStats(count=37, first_us=18342, last_us=13012, min_us=12874, max_us=18342,
                                  avg_us=13588.4, std_us=951, p5_us=12901, median_us=13377, p95_us=15208)
    assert out.inference.count == 76
    assert (out.inference.p5_us, out.inference.median_us, out.inference.p95_us) == (12833, 13052, 13958)
    assert out.inference.std_us == 541
    assert out.model_size_mb == pytest.approx(3.52847, abs=1e-9)
    assert out.memory.kind == "delta"
    assert (out.memory.init_mb, out.memory.overall_mb, out.memory.peak_mb) == (9.60938, 12.1758, 17.4375)
    assert [(d.delegate, d.coverage, d.kernels) for d in out.delegates] == [("XNNPACK", "full", None)]
    assert [(r.delegate_kernel, r.replaced, r.total, r.partitions) for r in out.replacements] == [
        ("TfLiteXNNPackDelegate", 14, 14, 1)]
    assert out.warnings == ()


def test_stats_without_percentiles_and_old_peak_memory_line():
    out = parse("current_no_percentiles.txt")
    assert out.summary_format == "current"
    assert out.inference.count == 50 and out.inference.avg_us == 71090.2
    assert out.inference.median_us is None and out.inference.p5_us is None and not out.inference.has_percentiles
    assert out.warmup.first_us == 82811
    assert out.memory.kind == "peak_rss" and out.memory.overall_mb == 30.1172
    assert out.delegates == ()


def test_older_average_inference_form():
    out = parse("legacy_average_inference.txt")
    assert out.summary_format == "average"
    assert (out.warmup_avg_us, out.init_us, out.inference_avg_us) == (20004.2, 6082, 19388.6)
    assert out.first_inference_us is None
    assert out.inference.count == 52 and out.inference.min_us == 19023
    assert out.memory is None


def test_oldest_average_no_stats_form_and_single_run_warmup():
    out = parse("legacy_average_no_stats.txt")
    assert out.summary_format == "average_no_stats"
    assert out.inference_avg_us == 186711 and out.init_us == 1706
    # "count=1 curr=X": one run, no "(all same)" suffix, every statistic is X.
    assert out.warmup == RunStats(count=1, first_us=215339, last_us=215339, min_us=215339, max_us=215339,
                                  avg_us=215339, std_us=0, all_same=True)
    assert out.inference.max_us == 190987


def test_all_same_runs():
    out = parse("all_same.txt")
    assert out.inference.all_same and out.inference.count == 3
    assert out.inference.min_us == out.inference.max_us == out.inference.median_us == 4
    assert out.inference.std_us == 0
    assert out.warmup.count == 1 and out.warmup.median_us == 9


def test_count_zero_and_nan_averages_of_a_dry_run():
    out = parse("dry_run_count0.txt")
    assert out.warmup == RunStats(count=0) and out.inference == RunStats(count=0)
    assert out.warmup_avg_us is None  # "nan"
    assert math.isnan(out.inference_avg_us)  # "-nan"
    assert out.init_us == 39880


def test_gpu_partial_delegation_with_kernel_count():
    out = parse("gpu_partial.txt")
    assert [(d.delegate, d.coverage, d.kernels) for d in out.delegates] == [("GPU", "partial", 3)]
    assert out.replacements[0].replaced == 24 and out.replacements[0].total == 30
    assert out.replacements[0].partitions == 3
    assert out.inference.median_us == 7990


def test_nnapi_took_none_of_the_graph():
    out = parse("nnapi_not_applied.txt")
    assert [(d.delegate, d.coverage, d.kernels) for d in out.delegates] == [("NNAPI", "none", 0)]


def test_external_delegate_full_and_exponent_numbers():
    out = parse("external_full.txt")
    assert out.delegates[0].delegate == "EXTERNAL" and out.delegates[0].coverage == "full"
    assert out.warmup.max_us == pytest.approx(1.00423e6, rel=0, abs=0.5)
    assert out.inference.median_us == 278


def test_op_profiling_csv_tables():
    out = parse("op_profiling_csv.txt")
    regular = [r for r in out.op_profile if r.section == "regular" and r.table == "Run Order"]
    assert [r.node_type for r in regular] == ["TfLiteXNNPackDelegate", "WBMM", "TfLiteXNNPackDelegate"]
    wbmm = regular[1]
    assert (wbmm.start_ms, wbmm.first_ms, wbmm.avg_ms, wbmm.percent, wbmm.cdf_percent, wbmm.times_called) == (
        0.401, 0.822, 0.801, 60.82, 91.04, 1)
    assert wbmm.name == "[wbmm/wbmm]:2"
    assert regular[0].name == "[wbmm/reshape_1;wbmm/transpose]:4"
    init_rows = [r for r in out.op_profile if r.section == "init" and r.table == "Run Order"]
    assert [r.node_type for r in init_rows] == ["ModifyGraphWithDelegate", "AllocateTensors"]
    by_type = {(t.section, t.node_type): t for t in out.op_types}
    assert by_type[("regular", "WBMM")].avg_ms == 0.801
    assert by_type[("regular", "TfLiteXNNPackDelegate")].count == 2
    # The profiler's own "Timings (microseconds): count=..." line is not the run's stats.
    assert out.inference.count == 751 and out.inference.median_us == 1315
    assert out.delegates[0].coverage == "partial" and out.delegates[0].kernels == 2
    assert out.warnings == ()


def test_op_profiling_csv_of_older_builds_without_start_column():
    text = (FIXTURES / "op_profiling_csv.txt").read_text()
    old_header = "node type, first, avg_ms, %, cdf%, mem KB, times called, name"
    lines = []
    for line in text.splitlines():
        if line.startswith("node type, start,"):
            lines.append(old_header)
        elif line.count(",") == 8 and not line.startswith("INFO"):
            parts = line.split(", ")
            lines.append(", ".join(parts[:1] + parts[2:]))
        else:
            lines.append(line)
    out = parse_benchmark_output("\n".join(lines))
    wbmm = [r for r in out.op_profile if r.section == "regular" and r.node_type == "WBMM"][0]
    assert wbmm.start_ms is None and wbmm.avg_ms == 0.801 and wbmm.first_ms == 0.822


def test_unconsumed_flags_is_an_error_carrying_the_flags():
    with pytest.raises(BenchmarkFlagsIgnoredError) as info:
        parse("unconsumed_flags.txt")
    assert "--use_xnnpack=true" in str(info.value)
    assert info.value.flags.startswith("--use_xnnpack=true --external_delegate_path=")
    assert "Unconsumed cmdline flags" in info.value.output
    # Asked explicitly, the numbers are still readable and the warning kept.
    out = parse("unconsumed_flags.txt", allow_ignored_flags=True)
    assert out.inference_avg_us == 41377.9 and out.warnings[0].startswith("Unconsumed cmdline flags")


def test_benchmarking_failed_carries_the_devices_words():
    with pytest.raises(BenchmarkFailedError) as info:
        parse("benchmarking_failed.txt")
    message = str(info.value)
    assert "Node number 2 (WBMM_DEPTHWISE) failed to prepare" in message
    assert "Failed to apply EXTERNAL delegate" in message
    assert "Benchmarking failed." in info.value.output
    assert isinstance(info.value, BenchmarkError) and isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("name", ["crash_segfault.txt", "garbage.txt"])
def test_crash_and_garbage_are_output_errors(name):
    with pytest.raises(BenchmarkOutputError) as info:
        parse(name)
    assert info.value.output == (FIXTURES / name).read_text()
    assert "no timing summary" in str(info.value)


def test_stats_line_rejects_non_stats():
    with pytest.raises(ValueError):
        parse_stats_line("INFO: Initialized session in 3ms.")


def test_percentile_is_the_tools_index_rule():
    values = list(range(100, 120))  # 20 values
    assert tflite_percentile(values, 50) == 110   # index 10, no interpolation
    assert tflite_percentile(values, 5) == 101    # index 1
    assert tflite_percentile(values, 95) == 119   # index 19
    assert tflite_percentile(values, 100) == 119


@given(st.lists(st.integers(min_value=1, max_value=10**7), min_size=0, max_size=60))
def test_written_stats_lines_read_back(samples):
    stats = stats_from_samples(samples)
    line = format_stats_line(stats)
    back = parse_stats_line("INFO: " + line)
    assert back.count == stats.count
    if samples:
        assert back.min_us == min(samples) and back.max_us == max(samples)
        ordered = sorted(samples)
        assert back.median_us == ordered[len(samples) // 2]
        # avg prints with 6 significant digits, like the C++ tool.
        assert back.avg_us == pytest.approx(sum(samples) / len(samples), rel=5e-6)
        assert back.all_same == (min(samples) == max(samples))


def test_written_summary_line_reads_back():
    text = "INFO: " + format_summary_line(1234, 5678.0, 4321.5, 4000.25) + "\n"
    out = parse_benchmark_output(text)
    assert (out.init_us, out.first_inference_us, out.warmup_avg_us, out.inference_avg_us) == (
        1234, 5678, 4321.5, 4000.25)
