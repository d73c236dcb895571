"""``wbmm-mobile demo`` (what ``make demo`` runs), end to end at 64x64: real conversions, the
loopback ADB device running wbmm-mobile-benchmark, compare's table, plot and report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from android_harness.results import load_records
from tests._adb_helpers import free_port
from wbmm_mobile.cli import main
from wbmm_mobile.compare import compare
from wbmm_mobile.demo import TWIN, WBMM_BMM, WBMM_CUSTOM

DELEGATE = Path(__file__).resolve().parent.parent / "build" / "delegates" / "libwbmm_delegate.so"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_converts_profiles_each_model_and_config_and_compares(tmp_path, capsys):
    # An ADB server address where none listens: no phone, and no adb daemon started by the test.
    code = main(["demo", "--out", str(tmp_path), "--input-size", "64", "--runs", "5", "--warmup", "1",
                 "--adb", f"127.0.0.1:{free_port()}"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    run_dir = (tmp_path / "latest").resolve()
    assert run_dir.parent == tmp_path / "runs"

    data = json.loads((run_dir / "demo.json").read_text())
    built = DELEGATE.is_file()
    models = {m["name"]: m for m in data["models"]}
    assert list(models) == ([TWIN, WBMM_BMM, WBMM_CUSTOM] if built else [TWIN, WBMM_BMM])
    assert all(m["verification"].endswith(": ok") for m in models.values()), models
    assert models[TWIN]["wbmm_layers"] == 0 and models[WBMM_BMM]["wbmm_layers"] == 4
    assert data["loopback"] is True and data["input_size"] == 64

    # One successful record per model x config; the custom-op file only under wbmm.
    configs = ("cpu", "xnnpack", "wbmm") if built else ("cpu", "xnnpack")
    expected = {(name, config) for name in (TWIN, WBMM_BMM) for config in configs}
    if built:
        expected.add((WBMM_CUSTOM, "wbmm"))
        assert models[WBMM_CUSTOM]["needs_delegate"] and models[WBMM_CUSTOM]["wbmm_layers"] == 4
    records = load_records(run_dir)
    by_run = {(r.model["name"], r.config): r for r in records}
    assert set(by_run) == expected and len(records) == len(expected)
    assert all(r.status == "ok" and r.device["loopback"] and r.latency["count"] >= 5 for r in records)

    # The printed and saved table carries the records' own medians, p5 and p95.
    comparison = compare(run_dir, plots=False, report=False)
    assert {(row.model, row.config) for row in comparison.rows} == expected
    for row in comparison.rows:
        latency = by_run[(row.model, row.config)].latency
        assert (row.median_ms, row.p5_ms, row.p95_ms) == (latency["median_ms"], latency["p5_ms"], latency["p95_ms"])
        line = next(line for line in printed.splitlines() if line.split()[:2] == [row.model, row.config])
        assert f"{latency['median_ms']:.3f}" in line.split() and f"{latency['p95_ms']:.3f}" in line.split()
    rows = {(row.model, row.config): row for row in comparison.rows}
    twin, wbmm = rows[(TWIN, "xnnpack")], rows[(WBMM_BMM, "xnnpack")]
    assert wbmm.model_speedup == pytest.approx(twin.median_ms / wbmm.median_ms, rel=1e-12)
    if built:
        assert rows[(TWIN, "wbmm")].speedup == pytest.approx(twin.median_ms / rows[(TWIN, "wbmm")].median_ms,
                                                             rel=1e-12)
        assert rows[(WBMM_CUSTOM, "wbmm")].model_speedup is not None
    headline = next(h for h in data["headlines"] if h["what"] == f"{WBMM_BMM} on xnnpack vs {TWIN} on xnnpack")
    assert headline["speedup"] == pytest.approx(wbmm.model_speedup, rel=1e-12)

    plots = sorted(run_dir.glob("latency_*.png"))
    assert len(plots) == 1 and plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run_dir / "report.md").read_text()
    assert f"]({plots[0].name})" in report and all(name in report for name in models)
    assert f"]({plots[0].name})" in (run_dir / "demo.md").read_text()
    assert "this computer's numbers, not a phone's" in printed
    for path in [*(m["path"] for m in models.values()), run_dir / "runs.jsonl", plots[0], run_dir / "report.md"]:
        assert str(path) in printed or str(Path(path)) in printed

    # With the npu extra (make test installs it): the models placed on the NPU targets, in the report.
    if importlib.util.find_spec("onnxruntime_qnn") and importlib.util.find_spec("ethosu"):
        placement = json.loads((run_dir / "npu_check.json").read_text())
        assert {(Path(r["model"]).stem, r["target"]) for r in placement} == {
            (name, target) for name in models for target in ("qualcomm:SM8650", "qualcomm:SM8750",
                                                              "ethos-u:ethos-u55-256")}
        twin_htp = next(r for r in placement if Path(r["model"]).stem == TWIN and r["target"] == "qualcomm:SM8650")
        assert twin_htp["compiled"] and twin_htp["ops_npu"] == twin_htp["ops_total"] > 0
        assert "## NPU placement" in report and "Where the models would run on NPUs" in (run_dir / "demo.md").read_text()
        assert "NPU ops" in printed


def test_demo_refuses_a_phone_that_is_not_attached_before_converting(tmp_path, capsys):
    from android_harness.profile import profile_phone_or_here
    from wbmm_mobile.errors import DeviceNotFoundError

    with pytest.raises(DeviceNotFoundError, match="device R58M is not attached"):
        profile_phone_or_here(["unused.tflite"], tmp_path, adb_server=f"127.0.0.1:{free_port()}", devices=("R58M",))
    code = main(["demo", "--out", str(tmp_path / "demo"), "--device", "R58M", "--adb", f"127.0.0.1:{free_port()}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "wbmm-mobile: device error: device R58M is not attached (the ADB server lists none)"]
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_an_input_too_small_for_the_network(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path), "--input-size", "16"])
    assert exit_info.value.code == 2
    assert "too small" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.timeout(180)
def test_a_listed_phone_with_a_benchmark_binary_is_used_instead_of_this_computer(tmp_path):
    """The demo's phone path: a (loopback) phone behind a private adb server (Debian's adb) and a
    benchmark binary given -> profile_phone_or_here profiles there, not on a fresh loopback device."""
    import sys

    import keras

    from android_harness.loopback.daemon import LoopbackDevice
    from android_harness.profile import ARM64_DELEGATE, profile_phone_or_here, runner_script
    from converters.keras_convert import to_tflite
    from tests._adb_helpers import adb_binaries, start_adb_server

    binaries = adb_binaries()
    if not binaries:
        pytest.skip("no adb binary on this machine (make test installs Debian's adb)")
    inp = keras.Input((8, 8, 4), batch_size=1)
    model = to_tflite(keras.Model(inp, keras.layers.DepthwiseConv2D(7, padding="same")(inp)))
    path = tmp_path / "dw7.tflite"
    path.write_bytes(model)
    server = start_adb_server(binaries[0][1], tmp_path / "adb-home")
    phone = LoopbackDevice(tmp_path / "root", fixture_phone=True).start()
    try:
        server.adb("connect", phone.serial, timeout=60)
        server.adb("-s", phone.serial, "wait-for-device", timeout=60)
        where, report = profile_phone_or_here(
            [str(path)], tmp_path / "results", benchmark_binary=str(runner_script(tmp_path / "bm", sys.executable)),
            adb_server=server.address, configs=("xnnpack", "wbmm"), runs=5, warmup=1, progress=False,
            devices=(phone.serial,))
    finally:
        server.stop()
        phone.stop()
    assert where.startswith(f"phone(s) {phone.serial}")
    records = load_records(tmp_path / "results")
    assert {r.key.serial for r in records} == {phone.serial} and all(r.status == "ok" for r in records)
    # Without a phone build of the delegate the wbmm config is left out (said in `where`), not failed.
    expected = ["xnnpack", "wbmm"] if ARM64_DELEGATE.is_file() else ["xnnpack"]
    assert [r.config for r in records] == expected and report.complete
    assert ARM64_DELEGATE.is_file() or "no wbmm config" in where
