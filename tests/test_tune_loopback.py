"""``wbmm-mobile tune`` on the loopback ADB device: a per-device strategy table, and rewrite picking from it.

The loopback device runs the fixture phone (its getprop answers are a Pixel 7's; the tests
change them in the device's root to show the table's keys are read from the device);
the benchmark binary is the project's ``wbmm-mobile-benchmark``. Small shapes, few runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from android_harness.loopback.daemon import LoopbackDevice
from android_harness.profile import runner_script
from android_harness.tune import TunePlan, collect_layers, tune
from converters import strategy_table
from converters.layer_models import depthwise_model
from converters.strategy import LayerShape
from wbmm_mobile.cli import main as cli_main

# Whole-device runs (tuning, storms, interrupts) of 5-15 s each: in `make test`, not `make test-fast`.
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

PROPS = Path("system/etc/wbmm_fixture/getprop.txt")


def set_prop(device: LoopbackDevice, name: str, value: str) -> None:
    """Change one getprop answer of the fixture phone in the device's own root."""
    path = device.root / PROPS
    text = re.sub(rf"^\[{re.escape(name)}\]: \[.*\]$", f"[{name}]: [{value}]", path.read_text(), flags=re.MULTILINE)
    path.write_text(text)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from converters.keras_convert import to_tflite

    folder = tmp_path_factory.mktemp("tune-models")
    # Two 7x7 layers of one shape (one table row), a 3x3 one (below --min-kernel), by the real converter.
    inp = keras.Input((12, 12, 8), batch_size=1)
    x = keras.layers.DepthwiseConv2D(7, padding="same")(inp)
    x = keras.layers.DepthwiseConv2D(7, padding="same")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    keras_path = folder / "two_sevens.tflite"
    keras_path.write_bytes(to_tflite(keras.Model(inp, x)))
    schema_path = folder / "nine.tflite"       # another shape, built directly with the schema
    schema_path.write_bytes(depthwise_model(LayerShape(8, 8, 16, 9)))
    return [str(keras_path), str(schema_path)]


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return str(runner_script(tmp_path_factory.mktemp("bin") / "benchmark_model"))


def plan_for(device: LoopbackDevice, models, out: Path, binary: str, **options) -> TunePlan:
    return TunePlan(models=tuple(models), out=str(out), device=device.serial, direct=True, runs=3, warmup=1,
                    benchmark_binary=binary, cache_dir=str(out.parent / "cache"), **options)


@pytest.fixture(scope="module")
def tuned(models, binary, tmp_path_factory):
    """One tune of both models on a fixture phone whose model and serial answers were changed."""
    folder = tmp_path_factory.mktemp("tuned")
    with LoopbackDevice(folder / "root", fixture_phone=True) as device:
        set_prop(device, "ro.product.model", "Pixel 7 test unit")
        set_prop(device, "ro.serialno", "TUNE0001")
        report = tune(plan_for(device, models, folder / "table.json", binary), progress=False)
        pushed = sorted((device.root / "data/local/tmp/wbmm/models").glob("*.tflite"))
    return report, folder / "table.json", pushed


def test_distinct_layers_are_collected_once_and_small_ones_skipped(models):
    layers, skipped = collect_layers(models)
    assert [layer.key.label for layer in layers] == ["12x12x8_k7_same_float32", "8x8x16_k9_same_float32"]
    assert len(layers[0].used_by) == 2                       # both 7x7 layers of the Keras model
    assert len(skipped) == 1 and "below --min-kernel 7" in skipped[0]


def test_table_keys_come_from_the_device_and_every_candidate_is_timed(tuned):
    report, path, pushed = tuned
    assert report.complete and not report.failed, report
    table = strategy_table.load(path)
    assert len(table.entries) == 1
    entry = table.entries[0]
    identity = entry.identity
    # The answers changed in the device's root, and the fixture's others, are what the table is keyed by.
    assert (identity.model, identity.hardware_serial) == ("Pixel 7 test unit", "TUNE0001")
    assert (identity.soc, identity.abi, identity.sdk, identity.android_version) == (
        "Tensor G2 (gs201)", "arm64-v8a", 34, "14")
    assert identity.loopback is True and identity.target == "xnnpack" and identity.threads == 1
    assert identity.runtime_sha256 and identity.library.startswith("wbmm-mobile ")
    rows = {(r["height"], r["width"], r["channels"], r["kernel"]): r for r in entry.layers}
    assert set(rows) == {(12, 12, 8, 7), (8, 8, 16, 9)}
    for row in rows.values():
        assert set(row["candidates"]) == {"depthwise", "split", "dilated", "halo", "builtin_kernel"} - set(row["refused"])
        for name, measured in row["candidates"].items():
            assert measured["median_ms"] > 0 and measured["count"] >= 3
            assert measured["p5_ms"] <= measured["median_ms"] <= measured["p95_ms"]
            assert measured["pinning"] == "taskset f0 (big cores)"    # profile's big-core pinning
            assert measured["max_rel"] <= 1e-4                        # checked against the kept layer
    # dilated covers 7x7 and 9x9 only; on a 9x9 it must have been timed, not refused.
    assert "dilated" in rows[(8, 8, 16, 9)]["candidates"]
    # Each candidate went to the device once, under its content hash, byte for byte.
    shas = {m["model_sha256"] for r in entry.layers for m in r["candidates"].values()}
    assert {p.name[:16] for p in pushed} == {s[:16] for s in shas}
    # The cache keeps a copy, where rewrite --device looks.
    cached = strategy_table.load(report.cache_copy)
    assert cached.entries[0].identity == identity


def _with_times(path: Path, out: Path, times: dict[str, float]) -> Path:
    """The measured table with the 12x12x8 row's medians replaced: what rewrite must then pick."""
    data = json.loads(path.read_text())
    for row in data["entries"][0]["layers"]:
        if row["height"] == 12:
            for name, ms in times.items():
                row["candidates"][name]["median_ms"] = ms
    out.write_text(json.dumps(data))
    return out


def test_rewrite_picks_from_the_given_table_and_names_it(tuned, models, tmp_path, capsys):
    _, path, _ = tuned
    halo = _with_times(path, tmp_path / "halo.json",
                       {"depthwise": 9.0, "split": 4.0, "dilated": 5.0, "halo": 1.0, "builtin_kernel": 6.0})
    report_path = tmp_path / "report.json"
    code = cli_main(["rewrite", models[0], "-o", str(tmp_path / "out.tflite"), "--strategy-table", str(halo),
                     "--report", str(report_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(report_path.read_text())
    sevens = [layer for layer in report["layers"] if layer["kernel"] == "7x7"]
    assert [layer["strategy"] for layer in sevens] == ["halo", "halo"]
    assert "halo.json (Pixel 7 test unit), measured shape 12x12x8 K=7 (this layer's)" in sevens[0]["reason"]
    assert str(halo) in report["strategy_table"] and "TUNE0001" in report["strategy_table"]
    assert "strategy table:" in printed and "TUNE0001" in printed

    keep = _with_times(path, tmp_path / "keep.json",
                       {"depthwise": 1.0, "split": 4.0, "dilated": 5.0, "halo": 6.0, "builtin_kernel": 6.0})
    code = cli_main(["rewrite", models[0], "-o", str(tmp_path / "out2.tflite"), "--strategy-table", str(keep),
                     "--report", str(report_path)])
    assert code == 0
    sevens = [layer for layer in json.loads(report_path.read_text())["layers"] if layer["kernel"] == "7x7"]
    assert not any(layer["rewritten"] for layer in sevens) and "stock conv is fastest" in sevens[0]["reason"]


def test_nearest_measured_shape_is_used_and_its_distance_said(tuned, tmp_path):
    _, path, _ = tuned
    table = strategy_table.load_for(target="xnnpack", path=path)
    answer = table.lookup(LayerShape(24, 24, 8, 7), "xnnpack")
    assert (answer.nearest.height, answer.nearest.kernel) == (12, 7)
    assert "nearest measured shape 12x12x8 K=7 (log-distance 1.39)" in answer.source   # log(4)


def test_a_table_of_another_device_or_thread_count_is_refused(tuned, models, tmp_path, capsys):
    _, path, _ = tuned
    out = str(tmp_path / "out.tflite")
    assert cli_main(["rewrite", models[0], "-o", out, "--strategy-table", str(path), "--device", "OTHER42"]) == 2
    assert "no xnnpack table of device OTHER42" in capsys.readouterr().err
    assert cli_main(["rewrite", models[0], "-o", out, "--strategy-table", str(path), "--threads", "4"]) == 2
    assert "measured at 1 thread(s), not 4" in capsys.readouterr().err
    assert cli_main(["rewrite", models[0], "-o", out, "--strategy-table", str(path), "--target", "cpu"]) == 2
    assert "no table for target cpu" in capsys.readouterr().err
    assert not Path(out).exists()
    # The device's own serial (hardware or as ADB named it) is accepted.
    assert cli_main(["rewrite", models[0], "-o", out, "--strategy-table", str(path), "--device", "TUNE0001"]) == 0


def test_rewrite_device_finds_the_cached_table(tuned, models, tmp_path, monkeypatch, capsys):
    report, _, _ = tuned
    monkeypatch.setattr(strategy_table, "CACHE_DIR", Path(report.cache_copy).parent)
    assert cli_main(["rewrite", models[1], "-o", str(tmp_path / "o.tflite"), "--device", "TUNE0001",
                     "--report", str(tmp_path / "r.json")]) == 0
    assert f"strategy table: {report.cache_copy}" in capsys.readouterr().out.replace("\n", "")
    layer = json.loads((tmp_path / "r.json").read_text())["layers"][0]
    assert f"{Path(report.cache_copy).name} (Pixel 7 test unit), measured shape 8x8x16 K=9" in layer["reason"]
    assert cli_main(["rewrite", models[1], "-o", str(tmp_path / "o.tflite"), "--device", "NOPE"]) == 2
    assert "no table of device NOPE" in capsys.readouterr().err


def test_resume_onto_another_devices_table_is_refused(tuned, models, binary, tmp_path, capsys):
    _, path, _ = tuned
    copy = tmp_path / "table.json"
    copy.write_bytes(path.read_bytes())
    with LoopbackDevice(tmp_path / "root", fixture_phone=True) as device:
        set_prop(device, "ro.serialno", "SOMEONE_ELSE")
        command = ["tune", "--models", models[1], "--device", device.serial, "--direct", "--runs", "3",
                   "--warmup", "1", "--benchmark-binary", binary, "--out", str(copy), "--no-cache"]
        code = cli_main(command + ["--resume"])
        err = capsys.readouterr().err
        assert code == 2
        assert "holds no measurement of this device" in err and "SOMEONE_ELSE" in err and "TUNE0001" in err
        assert copy.read_bytes() == path.read_bytes()          # nothing lost or changed
        # Without --resume this device gets its own entry; the other device's stays as it was.
        assert cli_main(command) == 0
    printed = capsys.readouterr().out
    assert "1 layer shape(s), 5 candidate(s)" in printed and "5 timed now" in printed
    entries = strategy_table.load(copy).entries
    assert [e.identity.hardware_serial for e in entries] == ["TUNE0001", "SOMEONE_ELSE"]
    assert entries[0].to_dict() == strategy_table.load(path).entries[0].to_dict()


def test_a_killed_device_leaves_a_table_that_resume_completes(models, binary, tmp_path):
    out = tmp_path / "table.json"
    root = tmp_path / "root"
    device = LoopbackDevice(root, fixture_phone=True).start()
    port = device.port
    timed = []

    def kill_after_two(label: str) -> None:
        if label.startswith("ok:"):
            timed.append(label)
            if len(timed) == 2:
                device.stop()                               # the phone goes away mid-tune

    try:
        first = tune(plan_for(device, models[1:], out, binary), progress=kill_after_two)
    finally:
        device.stop()
    assert not first.complete and first.device_error and first.missing
    kept = strategy_table.load(out).entries[0]
    measured = {name: m["measured_at"] for name, m in kept.layers[0]["candidates"].items()}
    assert len(measured) == 2 == first.timed                # every finished measurement was written
    assert not list(tmp_path.glob("*.partial"))

    with LoopbackDevice(root, port=port, fixture_phone=True) as again:
        second = tune(plan_for(again, models[1:], out, binary, resume=True), progress=False)
    assert second.complete and second.resumed == 2 and second.timed == first.candidates - 2
    entry = strategy_table.load(out).entries[0]
    candidates = entry.layers[0]["candidates"]
    assert set(candidates) == {"depthwise", "split", "dilated", "halo", "builtin_kernel"}
    assert all(candidates[name]["measured_at"] == at for name, at in measured.items())   # not timed again


def test_merge_and_list(tuned, tmp_path, capsys):
    _, path, _ = tuned
    other = json.loads(path.read_text())
    other["entries"][0]["identity"].update(hardware_serial="SECOND", serial="127.0.0.1:1", model="Galaxy S24",
                                           soc="Exynos 2400", manufacturer="samsung")
    other_path = tmp_path / "s24.json"
    other_path.write_text(json.dumps(other))
    merged = tmp_path / "team.json"
    assert cli_main(["tune", "--merge", str(path), str(other_path), str(path), "-o", str(merged)]) == 0
    table = strategy_table.load(merged)
    assert sorted(e.identity.hardware_serial for e in table.entries) == ["SECOND", "TUNE0001"]
    assert all(len(e.layers) == 2 for e in table.entries)   # the same device twice: one entry, rows joined
    capsys.readouterr()
    assert cli_main(["tune", "--list", str(merged), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["device"], r["serial"], r["soc"]) for r in rows} == {
        ("Google Pixel 7 test unit", "TUNE0001", "Tensor G2 (gs201)"), ("samsung Galaxy S24", "SECOND", "Exynos 2400")}
    assert all(r["timings"] >= 9 for r in rows)
    # Two devices in one file: rewrite must be told which.
    with pytest.raises(strategy_table.StrategyTableError, match="2 devices .* pass --device"):
        strategy_table.load_for(target="xnnpack", path=merged)
    assert strategy_table.load_for(target="xnnpack", path=merged, device="SECOND").entry.identity.model == "Galaxy S24"


def test_bad_input_is_one_line_and_exit_2(models, tmp_path, capsys):
    assert cli_main(["tune", "--models", models[0], "--out", str(tmp_path / "t.json"), "--target", "nnapi",
                     "--device", "127.0.0.1:1", "--direct"]) == 2
    assert "fixed rule" in capsys.readouterr().err
    assert cli_main(["tune", "--models", models[0]]) == 2
    assert "--out are required" in capsys.readouterr().err
    not_table = tmp_path / "x.json"
    not_table.write_text('{"machine": "x", "layers": []}')
    assert cli_main(["rewrite", models[0], "-o", str(tmp_path / "o.tflite"), "--strategy-table", str(not_table)]) == 2
    assert "not a strategy table" in capsys.readouterr().err
    newer = tmp_path / "v9.json"
    newer.write_text(json.dumps({"format": strategy_table.FORMAT, "version": 9, "entries": []}))
    assert cli_main(["tune", "--list", str(newer)]) == 2
    assert "version 9" in capsys.readouterr().err
    assert cli_main(["rewrite", models[0], "-o", str(tmp_path / "o.tflite"), "--strategy-table", str(newer),
                     "--measure"]) == 2
    assert "--strategy auto only, without --measure" in capsys.readouterr().err
