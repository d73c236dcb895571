"""``wbmm-mobile tune --target wbmm`` and integer layers, on the loopback ADB device.

The loopback device runs the fixture phone (passed explicitly); its wbmm delegate is this
checkout's build (``build/delegates/libwbmm_delegate.so``, passed as ``delegate_lib``). The
models: one float 12x12x8 7x7 layer, and the same shape as an int8 layer from the real TFLite
converter, so the table holds two rows that differ by dtype only. Small shapes, few runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from android_harness.loopback.daemon import LoopbackDevice
from android_harness.profile import runner_script
from android_harness.results import ResultsStore
from android_harness.tune import TunePlan, tune
from converters import strategy_table
from converters.layer_models import depthwise_model
from converters.strategy import LayerShape, pick
from tests._rewrite_case import converted_depthwise
from wbmm_mobile.cli import main as cli_main

# Whole-device runs (tuning, storms, interrupts) of 5-15 s each: in `make test`, not `make test-fast`.
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SHAPE = (12, 12, 8, 7)
ROW = {"height": 12, "width": 12, "channels": 8, "kernel": 7}


@pytest.fixture(scope="module")
def delegate_lib():
    import delegates

    try:
        return str(delegates.library_path())
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the wbmm delegate must be built for these tests (`make delegate`): {exc}")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    float_path = folder / "float.tflite"
    float_path.write_bytes(depthwise_model(LayerShape(*SHAPE)))
    int8_path = folder / "int8.tflite"
    int8_path.write_bytes(converted_depthwise(7, size=SHAPE[:2], channels=SHAPE[2], quantize="int8"))
    return {"float": str(float_path), "int8": str(int8_path)}


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return str(runner_script(tmp_path_factory.mktemp("bin") / "benchmark_model"))


def _tune(folder: Path, models, binary: str, **options):
    with LoopbackDevice(folder / "root", fixture_phone=True) as device:
        plan = TunePlan(models=tuple(models), out=str(folder / "table.json"), device=device.serial, direct=True,
                        runs=3, warmup=1, benchmark_binary=binary, cache=False, work_dir=str(folder / "work"),
                        **options)
        return tune(plan, progress=False)


def _rows(path) -> dict[str, dict]:
    entry = strategy_table.load(path).entries[0]
    return {row["dtype"]: row for row in entry.layers}


@pytest.fixture(scope="module")
def tuned_wbmm(models, binary, delegate_lib, tmp_path_factory):
    folder = tmp_path_factory.mktemp("wbmm")
    report = _tune(folder, models.values(), binary, target="wbmm", delegate_lib=delegate_lib,
                   delegate_options="spin_us:0")
    return report, folder


@pytest.fixture(scope="module")
def tuned_xnnpack(models, binary, tmp_path_factory):
    folder = tmp_path_factory.mktemp("xnnpack")
    return _tune(folder, models.values(), binary, target="xnnpack"), folder


def _int8_custom_runs(delegate_lib: str) -> tuple[bool, str]:
    from ai_edge_litert.interpreter import load_delegate

    from converters.quantized import delegate_runs_int8_custom_ops
    return delegate_runs_int8_custom_ops(lambda: load_delegate(delegate_lib))


def test_wbmm_candidates_run_through_the_delegate_with_its_options(tuned_wbmm, delegate_lib):
    from android_harness.device import file_sha256

    report, folder = tuned_wbmm
    assert report.complete and not report.failed, report
    entry = strategy_table.load(folder / "table.json").entries[0]
    identity = entry.identity
    assert identity.target == "wbmm" and identity.threads == 1
    assert identity.delegate_sha256 == file_sha256(delegate_lib) and identity.delegate_options == "spin_us:0"
    row = _rows(folder / "table.json")["float32"]
    assert row["refused"] == {}, row["refused"]
    assert set(row["candidates"]) == {"depthwise", "claim_depthwise", "custom", "split", "dilated", "halo",
                                      "builtin_kernel"}
    for measured in row["candidates"].values():
        assert measured["median_ms"] > 0 and measured["max_rel"] <= 1e-4 and measured["max_steps"] is None
    # The claimed conv is the kept conv's own file, run with claim_depthwise:1.
    assert row["candidates"]["claim_depthwise"]["model_sha256"] == row["candidates"]["depthwise"]["model_sha256"]
    # Every run went through the wbmm config: the pushed delegate, num_threads = the thread count,
    # claim_depthwise 1 for the claimed conv only, the user's options kept.
    plain = ResultsStore(folder / "work" / "runs-1t").records()
    claimed = ResultsStore(folder / "work" / "runs-1t-claim").records()
    assert len(claimed) == 1 and len(plain) == sum(len(r["candidates"]) for r in _rows(folder / "table.json").values()) - 1
    for records, claim in ((plain, 0), (claimed, 1)):
        for record in records:
            assert record.config == "wbmm" and record.delegate_lib["sha256"] == identity.delegate_sha256
            assert f"--external_delegate_options=num_threads:1;claim_depthwise:{claim};spin_us:0" in record.flags


def test_int8_layers_time_the_integer_candidates_only(tuned_wbmm, tuned_xnnpack, delegate_lib):
    wbmm_row = _rows(tuned_wbmm[1] / "table.json")["int8"]
    runs, why = _int8_custom_runs(delegate_lib)
    if runs:     # the delegate's int8 kernels: the custom op is timed, checked within one step
        assert set(wbmm_row["candidates"]) == {"depthwise", "builtin_kernel", "custom"}
        assert wbmm_row["candidates"]["custom"]["max_steps"] <= 1
    else:        # refused with the delegate's own reason, not timed, not failed
        assert set(wbmm_row["candidates"]) == {"depthwise", "builtin_kernel"}
        assert wbmm_row["refused"] == {"custom": why} and "WBMM_DEPTHWISE" in why and wbmm_row["failed"] == {}
    xnnpack_report, folder = tuned_xnnpack
    assert xnnpack_report.complete and not xnnpack_report.failed
    xnnpack_row = _rows(folder / "table.json")["int8"]
    assert set(xnnpack_row["candidates"]) == {"depthwise", "builtin_kernel"} and xnnpack_row["refused"] == {}
    for row in (wbmm_row, xnnpack_row):
        # No float island offered without --allow-float-islands, and the claim is for float convs.
        assert not {"split", "dilated", "halo", "claim_depthwise"} & (set(row["candidates"]) | set(row["refused"]))
        assert row["candidates"]["builtin_kernel"]["max_steps"] <= 1
        assert row["candidates"]["depthwise"]["max_steps"] == 0


def test_float_islands_are_timed_only_when_allowed(models, binary, tmp_path):
    report = _tune(tmp_path, [models["int8"]], binary, target="xnnpack", allow_float_islands=True)
    assert report.complete and not report.failed, report
    row = _rows(tmp_path / "table.json")["int8"]
    assert {"depthwise", "builtin_kernel", "split", "dilated", "halo"} == set(row["candidates"]) | set(row["refused"])
    assert "split" in row["candidates"] and row["candidates"]["split"]["max_steps"] <= 1


def _edited(path: Path, out: Path, times: dict[str, dict[str, float]]) -> Path:
    """The table with the medians of the rows of each dtype replaced (a candidate missing is added)."""
    data = json.loads(path.read_text())
    for row in data["entries"][0]["layers"]:
        for name, ms in times.get(row["dtype"], {}).items():
            row["candidates"].setdefault(name, dict(row["candidates"]["depthwise"]))["median_ms"] = ms
    out.write_text(json.dumps(data))
    return out


def _rewrite(model: str, table: Path, tmp_path: Path, *extra: str) -> dict:
    report = tmp_path / "report.json"
    code = cli_main(["rewrite", model, "-o", str(tmp_path / "out.tflite"), "--strategy-table", str(table),
                     "--report", str(report), *extra])
    assert code == 0
    return json.loads(report.read_text())


def test_wbmm_rewrite_picks_from_the_table_and_names_it(tuned_wbmm, models, tmp_path):
    path = tuned_wbmm[1] / "table.json"
    base = {"custom": 2.0, "split": 4.0, "dilated": 5.0, "halo": 6.0, "builtin_kernel": 7.0, "depthwise": 8.0,
            "claim_depthwise": 9.0}
    cases = [({}, "custom", "WBMM_DEPTHWISE is fastest"),
             ({"dilated": 1.0}, "dilated", "dilated (builtin ops, XNNPACK beside the delegate) is fastest"),
             ({"dilated": 1.9}, "custom", "WBMM_DEPTHWISE is fastest"),     # within the margin: custom stays
             ({"claim_depthwise": 1.0}, None, "run the delegate with claim_depthwise:1")]
    for change, strategy, words in cases:
        table = _edited(path, tmp_path / "t.json", {"float32": {**base, **change}})
        report = _rewrite(models["float"], table, tmp_path, "--target", "wbmm")
        layer = report["layers"][0]
        assert layer["strategy"] == strategy and layer["rewritten"] == (strategy is not None), layer
        assert words in layer["reason"] and "t.json (Pixel 7 (wbmm loopback fixture)), measured shape 12x12x8 K=7" in layer["reason"]
        assert "t.json" in report["strategy_table"] and "wbmm" in report["strategy_table"]
    # An int8 layer on wbmm reads the int8 row: custom (when the delegate ran it) is beaten here by builtin_kernel.
    int8_times = {"depthwise": 5.0, "builtin_kernel": 1.0}
    if "custom" in _rows(path)["int8"]["candidates"]:
        int8_times["custom"] = 3.0
    table = _edited(path, tmp_path / "t.json", {"float32": base, "int8": int8_times})
    layer = _rewrite(models["int8"], table, tmp_path, "--target", "wbmm")["layers"][0]
    assert layer["strategy"] == "builtin_kernel" and "wbmm, int8: builtin_kernel" in layer["reason"], layer
    # Without a table, today's fixed rule; an xnnpack table does not answer for wbmm.
    assert pick(LayerShape(*SHAPE), "wbmm").order == ("custom", "split")
    with pytest.raises(strategy_table.StrategyTableError, match="no table for target xnnpack"):
        strategy_table.load_for(target="xnnpack", path=path)


def test_int8_rewrite_reads_the_int8_row_only(tuned_xnnpack, models, tmp_path):
    path = tuned_xnnpack[1] / "table.json"
    # The float row says builtin_kernel, the int8 row says keep: the int8 layer is kept, the float one is not.
    table = _edited(path, tmp_path / "t.json", {"float32": {"depthwise": 9.0, "split": 8.0, "dilated": 8.0,
                                                           "halo": 8.0, "builtin_kernel": 1.0},
                                               "int8": {"depthwise": 1.0, "builtin_kernel": 5.0}})
    layer = _rewrite(models["int8"], table, tmp_path)["layers"][0]
    assert not layer["rewritten"] and "the stock integer conv is fastest" in layer["reason"]
    assert "t.json (Pixel 7 (wbmm loopback fixture)), measured shape 12x12x8 K=7" in layer["reason"] and "builtin_kernel 5.00 ms" in layer["reason"]
    assert _rewrite(models["float"], table, tmp_path)["layers"][0]["strategy"] == "builtin_kernel"
    # And the reverse: the int8 row's builtin_kernel answers the int8 layer, not the float row's keep.
    table = _edited(path, tmp_path / "t.json", {"float32": {"depthwise": 1.0, "split": 8.0, "dilated": 8.0,
                                                           "halo": 8.0, "builtin_kernel": 9.0},
                                               "int8": {"depthwise": 5.0, "builtin_kernel": 1.0}})
    layer = _rewrite(models["int8"], table, tmp_path)["layers"][0]
    assert layer["strategy"] == "builtin_kernel" and "builtin_kernel 1.00 ms" in layer["reason"]
    assert not _rewrite(models["float"], table, tmp_path)["layers"][0]["rewritten"]
    # A table without an int8 row: the shipped int8 table answers, and the reason says the device table had none.
    data = json.loads(path.read_text())
    data["entries"][0]["layers"] = [r for r in data["entries"][0]["layers"] if r["dtype"] != "int8"]
    (tmp_path / "float_only.json").write_text(json.dumps(data))
    layer = _rewrite(models["int8"], tmp_path / "float_only.json", tmp_path)["layers"][0]
    assert "no int8 measurement for xnnpack in" in layer["reason"] and "shipped int8 table" in layer["reason"]


def test_int8_float_islands_from_the_table_only_when_allowed(tuned_xnnpack, models, tmp_path):
    path = tuned_xnnpack[1] / "table.json"
    table = _edited(path, tmp_path / "t.json", {"int8": {"depthwise": 5.0, "builtin_kernel": 4.0, "split": 1.0}})
    layer = _rewrite(models["int8"], table, tmp_path)["layers"][0]
    assert layer["strategy"] == "builtin_kernel" and "float islands split not offered" in layer["reason"]
    report = _rewrite(models["int8"], table, tmp_path, "--allow-float-islands")
    assert report["layers"][0]["strategy"] == "split" and report["mixed_precision"]


def test_bad_delegate_options_are_one_line_and_exit_2(models, binary, capsys, tmp_path):
    common = ["tune", "--models", models["float"], "--out", str(tmp_path / "t.json"), "--device", "127.0.0.1:1",
              "--direct", "--benchmark-binary", binary]
    assert cli_main(common + ["--target", "wbmm", "--delegate-options", "num_threads:4"]) == 2
    assert "tune sets num_threads" in capsys.readouterr().err
    assert cli_main(common + ["--target", "xnnpack", "--delegate-lib", binary]) == 2
    assert "only --target wbmm runs the wbmm delegate" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_tune_wbmm_from_the_command_line(models, binary, delegate_lib, tmp_path, capsys):
    out = tmp_path / "t.json"
    with LoopbackDevice(tmp_path / "root", fixture_phone=True) as device:
        code = cli_main(["tune", "--models", models["float"], "--device", device.serial, "--direct", "--target",
                         "wbmm", "--delegate-lib", delegate_lib, "--runs", "3", "--warmup", "1",
                         "--benchmark-binary", binary, "--out", str(out), "--no-cache"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "1 layer shape(s), 7 candidate(s)" in printed and "7 timed now" in printed
    assert "wbmm, 1 thread" in printed and "delegate libwbmm_delegate.so" in printed
    assert strategy_table.load_for(target="wbmm", path=out).entry.identity.delegate.startswith("libwbmm_delegate.so")
    assert cli_main(["tune", "--list", str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["target"] == "wbmm" and row["delegate"].startswith("libwbmm_delegate.so") and row["timings"] == 7


def test_a_custom_op_the_devices_delegate_refuses_is_a_refusal(binary, delegate_lib, tmp_path):
    """The device's own run of an int8 WBMM_DEPTHWISE through the wbmm config: a delegate without int8
    kernels fails it, and tune reads that failure as the delegate's refusal (a delegate with them runs it)."""
    from android_harness.profile import ProfilePlan, profile
    from android_harness.tune import Candidate, LayerKey, delegate_refusal
    from converters.quantized import int8_depthwise_model

    model = tmp_path / "int8_custom.tflite"
    model.write_bytes(int8_depthwise_model(8, 8, 4, 7, custom_op="WBMM_DEPTHWISE"))
    with LoopbackDevice(tmp_path / "root", fixture_phone=True) as device:
        profile(ProfilePlan(models=(str(model),), out=str(tmp_path / "runs"), devices=(device.serial,), direct=True,
                            configs=("wbmm",), threads=(1,), runs=2, warmup=1, benchmark_binary=binary,
                            delegate_lib=delegate_lib, delegate_options="num_threads:1"), progress=False)
    record = ResultsStore(tmp_path / "runs").records()[0]
    candidate = Candidate(LayerKey(8, 8, 4, 7, 1, "SAME", "int8"), "custom", str(model), "", 0.0, 0.0)
    if _int8_custom_runs(delegate_lib)[0]:
        assert record.status == "ok"
    else:
        assert record.status == "failed"
        refusal = delegate_refusal(candidate, record.error)
        assert refusal and refusal.startswith("the device's wbmm delegate refused it:") and "WBMM_DEPTHWISE" in refusal
        # Only the custom op's refusal reads so; any other candidate's failure stays a failure.
        assert delegate_refusal(Candidate(candidate.layer, "builtin_kernel", "", "", 0.0), record.error) is None


def test_tables_written_before_the_delegate_fields_still_load(tuned_xnnpack, tmp_path):
    data = json.loads((tuned_xnnpack[1] / "table.json").read_text())
    identity = data["entries"][0]["identity"]
    assert identity["delegate"] == identity["delegate_sha256"] == identity["delegate_options"] == ""
    for name in ("delegate", "delegate_sha256", "delegate_options"):
        del identity[name]
    (tmp_path / "old.json").write_text(json.dumps(data))
    loaded = strategy_table.load(tmp_path / "old.json").entries[0].identity
    assert loaded == strategy_table.load(tuned_xnnpack[1] / "table.json").entries[0].identity
    del identity["threads"]                      # a field every table has is still required
    (tmp_path / "broken.json").write_text(json.dumps(data))
    with pytest.raises(strategy_table.StrategyTableError, match="device identity without threads"):
        strategy_table.load(tmp_path / "broken.json")
