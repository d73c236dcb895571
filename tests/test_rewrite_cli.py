"""`wbmm-mobile rewrite` end to end, in process: files written, report JSON, one-line errors."""

import json

import numpy as np
import pytest

from converters import tflite_io, verify
from tests._rewrite_case import converted_depthwise
from wbmm_mobile.cli import main


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "in.tflite"
    path.write_bytes(converted_depthwise(7, activation="relu"))
    return path


def test_rewrite_writes_model_and_report(model_path, tmp_path, capsys):
    out, report = tmp_path / "out.tflite", tmp_path / "report.json"
    assert main(["rewrite", str(model_path), "-o", str(out), "--strategy", "split", "--report", str(report)]) == 0
    model = tflite_io.load_model(out)
    assert tflite_io.op_names(model).count("DEPTHWISE_CONV_2D") == 3
    data = json.loads(report.read_text())
    assert data["rewritten_count"] == 1 and data["layers"][0]["strategy"] == "split"
    assert data["verification"]["passed"] and data["verification"]["max_rel"] <= 1e-4
    printed = capsys.readouterr().out
    assert "split" in printed and "1 of 1 depthwise convs rewritten" in printed
    inputs = verify.random_inputs(model_path.read_bytes(), 9)
    np.testing.assert_allclose(verify.run_tflite(out, inputs, kernels="cpu")[0],
                               verify.run_tflite(model_path, inputs, kernels="cpu")[0], rtol=1e-5, atol=1e-6)


def test_windowed_mode_warns(model_path, tmp_path, capsys):
    assert main(["rewrite", str(model_path), "-o", str(tmp_path / "w.tflite"), "--mode", "windowed"]) == 0
    printed = capsys.readouterr().out
    assert "warning" in printed and "changes the function" in printed and "deviation" in printed


def test_user_inputs_are_used(model_path, tmp_path):
    npz = tmp_path / "inputs.npz"
    np.savez(npz, x=np.full((1, 12, 12, 4), 0.5, dtype=np.float32))
    report = tmp_path / "r.json"
    assert main(["rewrite", str(model_path), "-o", str(tmp_path / "o.tflite"), "--inputs", str(npz),
                 "--report", str(report)]) == 0
    assert "the user's" in json.loads(report.read_text())["verification"]["inputs"]


def test_min_kernel_leaves_layers_alone(model_path, tmp_path):
    report = tmp_path / "r.json"
    assert main(["rewrite", str(model_path), "-o", str(tmp_path / "o.tflite"), "--min-kernel", "9",
                 "--report", str(report)]) == 0
    layer = json.loads(report.read_text())["layers"][0]
    assert not layer["rewritten"] and "below --min-kernel 9" in layer["reason"]


def test_missing_and_corrupt_inputs_fail_with_one_line(tmp_path, capsys, model_path):
    out = tmp_path / "never.tflite"
    assert main(["rewrite", str(tmp_path / "absent.tflite"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent.tflite" in err[0] and "not found" in err[0]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(model_path.read_bytes()[:300])
    assert main(["rewrite", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.tflite" in err[0] and "corrupt" in err[0]
    assert not out.exists()


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["rewrite", "--help"])
    text = " ".join(capsys.readouterr().out.split())      # argparse wraps lines
    for flag in ("--mode", "--min-kernel", "--target", "--strategy", "--inputs", "--report", "--measure"):
        assert flag in text
    assert "default: 7" in text and "default: auto" in text
