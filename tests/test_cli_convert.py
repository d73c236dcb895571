"""`wbmm-mobile convert` and `wbmm-mobile bench` through wbmm_mobile.cli.main (and one subprocess):
files written, report contents, and the one-line error paths with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wbmm_mobile.cli import main


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((8, 8, 4), batch_size=1)
    x = WBMM(4, use_bias=True, name="w")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, keras.layers.Conv2D(4, 1, name="pw")(x))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        low, high = (0.5, 1.5) if "variance" in weight.path or "gamma" in weight.path else (-0.3, 0.3)
        weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    path = tmp_path_factory.mktemp("cli") / "tiny_wbmm.keras"
    model.save(path)
    return path


def test_convert_writes_model_and_report(keras_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(keras_file), "-o", str(out), "--lowering", "gather"]) == 0
    printed = capsys.readouterr().out
    assert "lowering gather" in printed and "verification: max abs" in printed and "ok" in printed
    model = out / "tiny_wbmm.tflite"
    report = json.loads((out / "report.json").read_text())
    assert model.is_file() and report["tflite_bytes"] == model.stat().st_size
    assert report["lowering"] == "gather" and report["precision"] == "float32"
    assert report["verification"]["passed"] and report["verification"]["max_rel"] <= 1e-4
    assert report["layers"][0]["folded"] == ["shortcut", "batchnorm 'bn'"]
    assert report["op_counts"]["GATHER"] == 1 and report["max_tensor_rank"] <= 4
    from converters.verify import load_interpreter

    load_interpreter(model)                                             # reloads


def test_convert_float16(keras_file, tmp_path):
    assert main(["convert", str(keras_file), "-o", str(tmp_path), "--precision", "float16"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["precision"] == "float16" and "float16" in report["verification"]["tolerance"]
    assert report["verification"]["max_rel"] <= 1e-2


def test_missing_file_is_one_line_exit_2(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "absent.keras"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "absent.keras: no such model file" in err[0]
    assert not (tmp_path / "o").exists()


def test_non_model_file_is_one_line_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip archive")
    code = main(["convert", str(junk), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "junk.keras" in err[0] and "Traceback" not in err[0]
    bad_tflite = tmp_path / "junk.tflite"
    bad_tflite.write_bytes(b"\x00" * 32)
    assert main(["bench", str(bad_tflite), "--runs", "1"]) == 2
    assert "not a .tflite model" in capsys.readouterr().err


def test_unsupported_layer_is_one_line_exit_2(tmp_path, capsys):
    import keras

    @keras.saving.register_keras_serializable(package="wbmm_test_only")
    class Mystery(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((4, 4, 2), batch_size=1)
    path = tmp_path / "mystery.keras"
    keras.Model(inp, Mystery(name="mystery")(inp)).save(path)
    keras.saving.get_custom_objects().pop("wbmm_test_only>Mystery")      # as on a machine without that code
    code = main(["convert", str(path), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not known to wbmm-mobile" in err[0] and "Mystery" in err[0]


def test_refused_lowering_names_layer_and_reason(tmp_path, capsys):
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((None, None, 4), batch_size=1)
    path = tmp_path / "dynamic.keras"
    keras.Model(inp, WBMM(4, name="w")(inp)).save(path)
    code = main(["convert", str(path), "-o", str(tmp_path / "o"), "--lowering", "custom"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "layer 'w'" in err[0] and "spatial size unknown" in err[0]


def test_convert_int8_custom_writes_an_integer_model(keras_file, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["convert", str(keras_file), "-o", str(out), "--lowering", "custom", "--precision", "int8"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["needs_delegate"] and report["op_counts"].get("WBMM") == 1
    assert report["layers"][0]["precision"] == "int8" and report["layers"][0]["strategy"] == "custom"
    from converters import tflite_io

    tree = tflite_io.load_model(out / "tiny_wbmm.tflite")
    assert all(t.type != 0 for t in tree.subgraphs[0].tensors)       # no FLOAT32 tensor


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "convert", str(tmp_path / "absent.keras"), "-o", str(tmp_path)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bench_two_models_with_speedups(keras_file, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["convert", str(keras_file), "-o", str(out)]) == 0
    model = out / "tiny_wbmm.tflite"
    capsys.readouterr()
    json_path = tmp_path / "bench.json"
    assert main(["bench", str(model), str(model), "--runs", "4", "--warmup", "1", "--kernels", "cpu",
                 "--json", str(json_path)]) == 0
    printed = capsys.readouterr().out
    assert "median ms" in printed and "1.00x" in printed
    data = json.loads(json_path.read_text())
    assert [len(m["runs_ms"]) for m in data["models"]] == [4, 4] and data["speedups_vs_first"][0] == 1.0
    assert data["models"][0]["kernels"] == "cpu"
    assert main(["bench", str(model), str(tmp_path / "gone.tflite"), "--runs", "2"]) == 2
    assert "gone.tflite: no such model file" in capsys.readouterr().err


def test_bench_rejects_bad_flags(keras_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "x.tflite", "--runs", "0"])
    assert exit_info.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_subprocess_error_path_and_fast_help(tmp_path):
    result = subprocess.run([sys.executable, "-m", "wbmm_mobile.cli", "convert", str(tmp_path / "nope.keras"),
                             "-o", str(tmp_path)], capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.startswith("wbmm-mobile:")]
    assert result.returncode == 2 and len(lines) == 1 and "nope.keras" in lines[0]
    assert "Traceback" not in result.stderr
    probe = ("import sys; import wbmm_mobile.cli.convert, wbmm_mobile.cli.bench, wbmm_mobile.cli.demo; "
             "print(sorted(m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert heavy.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def plain_depthwise(tmp_path_factory):
    """A Keras model with a 9x9 depthwise conv and no WBMM layer, as .keras and as .tflite."""
    import keras
    from converters.keras_convert import to_tflite

    keras.utils.set_random_seed(4)
    inp = keras.Input((12, 12, 4), batch_size=1)
    model = keras.Model(inp, keras.layers.DepthwiseConv2D(9, padding="same", name="dw9")(inp))
    folder = tmp_path_factory.mktemp("plain")
    model.save(folder / "plain_dw.keras")
    (folder / "plain_dw.tflite").write_bytes(to_tflite(model))
    return folder


def _depthwise_kernels(path) -> list[tuple[int, int]]:
    from converters import tflite_io

    tree = tflite_io.load_model(path)
    subgraph = tree.subgraphs[0]
    return [tuple(int(v) for v in subgraph.tensors[op.inputs[1]].shape[1:3]) for op in subgraph.operators
            if tflite_io.opcode_name(tree, op.opcodeIndex) == "DEPTHWISE_CONV_2D"]


@pytest.mark.parametrize("suffix", [".keras", ".tflite"])
def test_plain_depthwise_inputs_go_through_the_rewriter(plain_depthwise, tmp_path, suffix):
    source = plain_depthwise / f"plain_dw{suffix}"
    assert (9, 9) in _depthwise_kernels(plain_depthwise / "plain_dw.tflite")
    assert main(["convert", str(source), "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    layer = report["rewrite"]["layers"][0]
    assert report["rewrite"]["rewritten_count"] == 1 and layer["kernel"] == "9x9" and layer["strategy"]
    written = tmp_path / "plain_dw.tflite"
    assert report["tflite_bytes"] == written.stat().st_size
    assert report["rewrite"]["ops_after"] != report["rewrite"]["ops_before"]
    # The written file is the rewriter's, and it computes what the original computes.
    from converters.verify import verify_tflite_against_tflite

    assert verify_tflite_against_tflite(plain_depthwise / "plain_dw.tflite", written, seed=3).max_rel <= 1e-4


def test_grouped_conv_keras_model_goes_through_the_rewriter(tmp_path):
    """Keras writes ConvNeXt's 7x7 depthwise convs as Conv2D(groups=C), which converts to a grouped
    CONV_2D, not DEPTHWISE_CONV_2D: convert must still hand the model to the rewriter."""
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((16, 16, 8), batch_size=1)
    model = keras.Model(inp, keras.layers.Conv2D(8, 7, padding="same", groups=8, name="grouped7")(inp))
    model.save(tmp_path / "grouped.keras")
    assert main(["convert", str(tmp_path / "grouped.keras"), "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rewrite"]["rewritten_count"] == 1
    assert report["rewrite"]["layers"][0]["kernel"] == "7x7"
    assert "CONV_2D" not in report["op_counts"]


def test_convert_int8_with_representative_data(tmp_path, capsys):
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((8, 8, 4), batch_size=1)
    layer = WBMM(4, use_bias=True, name="w")
    model = keras.Model(inp, layer(inp))
    rng = np.random.default_rng(7)
    for weight in model.weights:
        weight.assign(rng.uniform(-0.3, 0.3, weight.shape).astype(np.float32))
    model.save(tmp_path / "one.keras")
    np.save(tmp_path / "calib.npy", rng.uniform(-1, 1, (16, 8, 8, 4)).astype(np.float32))
    assert main(["convert", str(tmp_path / "one.keras"), "-o", str(tmp_path / "o"), "--precision", "int8",
                 "--representative-data", str(tmp_path / "calib.npy")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["precision"] == "int8" and not report["warnings"]
    out = report["verification"]["outputs"][0]
    assert out["passed"] and out["max_abs"] <= float(out["tolerance"].rsplit("= ", 1)[1])
    capsys.readouterr()
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5, 5, 4), np.float32))
    assert main(["convert", str(tmp_path / "one.keras"), "-o", str(tmp_path / "o2"), "--precision", "int8",
                 "--representative-data", str(tmp_path / "wrong.npy")]) == 2
    assert "does not fit the model input" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "one.tflite").exists()


def test_large_depthwise_next_to_wbmm_is_reported_not_silently_kept(tmp_path, capsys):
    import keras

    from wbmm_mobile.layers import WBMM

    inp = keras.Input((8, 8, 4), batch_size=1)
    x = WBMM(4, name="w")(inp)
    model = keras.Model(inp, keras.layers.DepthwiseConv2D(7, padding="same", name="dw7")(x))
    model.save(tmp_path / "mixed.keras")
    assert main(["convert", str(tmp_path / "mixed.keras"), "-o", str(tmp_path / "o")]) == 0
    assert "1 depthwise conv(s) with kernel >= 7 left as they are" in capsys.readouterr().out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["rewrite"] is None and report["rewrite_notes"]


def test_bench_a_stock_model_with_and_without_the_delegate(tmp_path, capfd):
    """--delegate-options claim_depthwise:1 --also-without-delegate: the same stock model timed on
    XNNPACK alone and with the delegate taking its 9x9 depthwise conv, side by side."""
    import keras
    from converters.keras_convert import to_tflite

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8), batch_size=1)
    model = keras.Model(inp, keras.layers.DepthwiseConv2D(9, padding="same")(inp))
    path = tmp_path / "stock_dw9.tflite"
    path.write_bytes(to_tflite(model))
    capfd.readouterr()
    json_path = tmp_path / "bench.json"
    assert main(["bench", str(path), "--runs", "3", "--warmup", "1", "--delegate-options",
                 "claim_depthwise:1;verbose:1", "--also-without-delegate", "--json", str(json_path)]) == 0
    captured = capfd.readouterr()
    assert "stock_dw9.tflite + delegate" in captured.out
    # the options reached the library: it took the conv, said so itself, and bench asked it
    assert "DEPTHWISE_CONV_2D: claimed (9x9 kernel" in captured.err
    assert "the wbmm delegate runs 1 DEPTHWISE_CONV_2D of stock_dw9.tflite" in captured.out
    data = json.loads(json_path.read_text())
    assert [m["delegate"] is None for m in data["models"]] == [True, False]
    assert len(data["speedups_vs_first"]) == 2 and data["speedups_vs_first"][0] == 1.0

    # without claim_depthwise the delegate takes nothing from a stock model, and bench says why
    assert main(["bench", str(path), "--runs", "1", "--delegate"]) == 0
    assert ("note: the wbmm delegate takes no node of stock_dw9.tflite (a stock model's large depthwise "
            "convs need --delegate-options claim_depthwise:1)") in capfd.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(path), "--delegate-options", "claim_depthwise=1"])
    assert exit_info.value.code == 2 and "is not key:value" in capfd.readouterr().err
    assert main(["bench", str(path), "--runs", "1", "--delegate-options", "claim_depthwise:maybe"]) == 1
    assert "claim_depthwise" in capfd.readouterr().err
