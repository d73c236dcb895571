"""wbmm-mobile compare: rows, speedups, sweeps, flags, plots and report from hand-written records."""

from __future__ import annotations

import math

import pytest

from android_harness.results import ResultsStore, RunKey, RunRecord, load_records
from wbmm_mobile.cli import main as cli_main
from wbmm_mobile.compare import compare, format_table
from wbmm_mobile.errors import ResultsFileError

DEVICE = {"serial": "R58M", "model": "Pixel 7", "manufacturer": "Google", "soc": "Tensor G2 (gs201)",
          "abi": "arm64-v8a", "sdk": 34, "android_version": "14", "loopback": False}


def record(model: str, config: str, median: float, *, status: str = "ok", threads: int = 1,
           throttled: bool = False, energy: float | None = None, p5: float | None = None,
           error: str | None = None, median_missing: bool = False) -> RunRecord:
    key = RunKey("R58M", f"{model}-sha", config, threads, 50, 5, "bin-sha", energy is not None)
    latency = None
    if status == "ok":
        latency = {"count": 50, "median_ms": None if median_missing else median, "avg_ms": median * 1.01,
                   "p5_ms": p5 if p5 is not None else median * 0.9, "p95_ms": median * 1.2, "std_ms": 0.05}
    thermal = {"before": {"status": 0, "status_name": "none"},
               "after": {"status": 2 if throttled else 0, "status_name": "moderate" if throttled else "none"},
               "status_rose": throttled, "throttled": throttled}
    return RunRecord(key=key, status=status, device=DEVICE, model={"name": model, "sha256": f"{model}-sha"},
                     binary={"sha256": "bin-sha"}, config=config, flags=[], threads=threads,
                     started_at="t0", finished_at="t1", latency=latency, thermal=thermal,
                     energy=None if energy is None else {"energy_per_inference_mj": energy, "flags": []},
                     error=error, output="boom" if error else None)


@pytest.fixture
def results(tmp_path):
    store = ResultsStore(tmp_path)
    store.extend([
        record("net", "xnnpack", 10.0, energy=2.5),
        record("net", "wbmm", 4.0, energy=1.0, throttled=True),
        record("net", "cpu", 20.0, median_missing=True),
        record("net_wbmm", "xnnpack", 5.0),
        record("net", "gpu", 0, status="failed", error="benchmark_model failed: GPU delegate refused\nmore"),
        record("dw_k3", "xnnpack", 1.0), record("dw_k7", "xnnpack", 3.0), record("dw_k13", "xnnpack", 9.0),
        # A later successful re-run (--resume) replaces an earlier failure of the same run.
        record("dw_k3", "cpu", 0, status="failed", error="crash"), record("dw_k3", "cpu", 2.0),
    ])
    return tmp_path


def rows_by(comparison):
    return {(r.model, r.config): r for r in comparison.rows}


def test_rows_speedups_and_energy(results):
    comparison = compare(results, plots=False, report=False)
    rows = rows_by(comparison)
    assert rows[("net", "wbmm")].speedup == pytest.approx(10.0 / 4.0, rel=1e-12)
    assert rows[("net", "wbmm")].reference == "xnnpack"
    assert rows[("net", "xnnpack")].speedup == 1.0
    # No median printed (older builds): the average stands in.
    assert rows[("net", "cpu")].median_ms == pytest.approx(20.2, rel=1e-12)
    # <base>_wbmm next to <base>: speedup of the WBMM model on the same config.
    assert rows[("net_wbmm", "xnnpack")].model_speedup == pytest.approx(2.0, rel=1e-12)
    assert rows[("net", "xnnpack")].energy_mj == 2.5 and rows[("net", "wbmm")].energy_mj == 1.0
    assert rows[("net", "wbmm")].throttled and not rows[("net", "xnnpack")].throttled
    assert rows[("dw_k3", "cpu")].median_ms == 2.0
    assert [(f.model, f.config) for f in comparison.failed] == [("net", "gpu")]
    assert comparison.failed[0].error == "benchmark_model failed: GPU delegate refused"
    # Natural order: k3 < k7 < k13.
    models = [r.model for r in comparison.rows if r.config == "xnnpack"]
    assert models.index("dw_k3") < models.index("dw_k7") < models.index("dw_k13")


def test_sweep_detection_and_plots(results, tmp_path):
    out = tmp_path / "report"
    comparison = compare(results, out_dir=out)
    assert len(comparison.sweeps) == 1
    sweep = comparison.sweeps[0]
    assert sweep.kind == "kernel" and sweep.family == "dw*"
    assert [(p[0], p[2], p[4]) for p in sweep.points] == [(3, "cpu", 2.0), (3, "xnnpack", 1.0),
                                                         (7, "xnnpack", 3.0), (13, "xnnpack", 9.0)]
    assert sorted(p.rsplit("/", 1)[1] for p in comparison.plots) == ["latency_R58M.png", "sweep_kernel_dw_R58M.png"]
    for plot in comparison.plots:
        assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| net | wbmm | 1 | 50 | 4.000 | 3.600 | 4.800 | 0.050 | 2.50x vs xnnpack |" in report
    assert "![latency_R58M.png](latency_R58M.png)" in report
    assert "Throttled runs" in report and "net wbmm 1t" in report
    assert "## Failed runs" in report and "GPU delegate refused" in report


def test_cli_table(results, capsys):
    assert cli_main(["compare", str(results), "--no-plots"]) == 0
    table = capsys.readouterr().out
    assert "R58M: Pixel 7 (Tensor G2 (gs201), Android 14)" in table
    assert "2.50x vs xnnpack" in table and "THROTTLED (thermal status none -> moderate)" in table
    assert "FAILED R58M net gpu 1t: benchmark_model failed: GPU delegate refused" in table
    assert format_table(compare(results, plots=False, report=False)) in table


def test_missing_results_folder_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["compare", str(tmp_path / "nothing")]) == 2
    assert "no results file" in capsys.readouterr().err


def test_truncated_last_record_is_skipped_and_the_store_keeps_appending(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(record("a", "xnnpack", 1.0))
    with open(store.path, "a") as handle:
        handle.write('{"key": {"serial": "R58M", "model_sha')   # a crash mid-write
    with pytest.warns(UserWarning, match="incomplete last record"):
        assert len(load_records(tmp_path)) == 1
    with pytest.warns(UserWarning, match="unfinished last record was cut off"):
        store = ResultsStore(tmp_path)      # reopening cuts the partial line off, keeping it aside
    assert (tmp_path / "runs.jsonl.partial").read_text().startswith('{"key"')
    store.append(record("b", "xnnpack", 2.0))
    records = [r for r in load_records_quiet(tmp_path)]
    assert [r.model["name"] for r in records] == ["a", "b"]
    assert store.done_keys() == {records[0].key, records[1].key}


def load_records_quiet(path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_records(path)


def test_corrupt_record_in_the_middle_is_an_error(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(record("a", "xnnpack", 1.0))
    with open(store.path, "a") as handle:
        handle.write("not json\n")
    store.append(record("b", "xnnpack", 1.0))
    with pytest.raises(ResultsFileError, match=r"runs.jsonl:2"):
        load_records(tmp_path)


def test_record_round_trip_keeps_unknown_fields(tmp_path):
    original = record("a", "wbmm", 1.5, energy=0.25)
    original.extra["session"] = {"energy": {"supply": "/sys/class/power_supply/battery"}}
    store = ResultsStore(tmp_path)
    store.append(original)
    back = load_records(tmp_path)[0]
    assert back == original
    assert not math.isnan(back.latency["median_ms"])


def test_a_wbmm_model_named_with_its_lowering_is_compared_with_its_base(tmp_path):
    store = ResultsStore(tmp_path)
    store.extend([record("net", "wbmm", 8.0), record("net_wbmm_custom", "wbmm", 2.0),
                  record("net_wbmm_bmm", "wbmm", 4.0), record("net_wbmm_other", "wbmm", 1.0)])
    rows = rows_by(compare(tmp_path, plots=False, report=False))
    assert rows[("net_wbmm_custom", "wbmm")].model_speedup == pytest.approx(4.0, rel=1e-12)
    assert rows[("net_wbmm_bmm", "wbmm")].model_speedup == pytest.approx(2.0, rel=1e-12)
    # Only lowering names count as a tag: another suffix is another model.
    assert rows[("net_wbmm_other", "wbmm")].model_speedup is None


def test_loopback_records_are_never_labelled_as_a_phone_s(tmp_path):
    """By the flag, and by 'loopback' in the model even when the flag is missing (an older or
    hand-edited record); the fixture phone's made-up ABI and SoC are not shown as facts."""
    import dataclasses
    truthful = dict(DEVICE, model="wbmm loopback (this computer)", abi="x86_64", soc="Intel(R) Xeon(R) Processor",
                    loopback=True)
    flag_lost = dict(truthful, loopback=False)
    fixture = dict(DEVICE, model="Pixel 7 (wbmm loopback fixture)", loopback=True)
    store = ResultsStore(tmp_path)
    for serial, device in (("127.0.0.1:1", truthful), ("127.0.0.1:2", flag_lost), ("127.0.0.1:3", fixture),
                           ("R58M", DEVICE)):
        base = record("net", "xnnpack", 1.0)
        store.append(dataclasses.replace(base, key=dataclasses.replace(base.key, serial=serial), device=device))
    rows = {row.serial: row for row in compare(tmp_path, plots=False, report=False).rows}
    for serial in ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"):
        assert rows[serial].loopback and rows[serial].device.startswith("loopback device: this computer's numbers")
        assert rows[serial].device.endswith("not a phone's")
    assert "(x86_64, Intel(R) Xeon(R) Processor)" in rows["127.0.0.1:1"].device
    assert "arm64" not in rows["127.0.0.1:3"].device and "Tensor" not in rows["127.0.0.1:3"].device
    assert not rows["R58M"].loopback and rows["R58M"].device.startswith("Pixel 7 (Tensor G2")
