"""rewrite --target qualcomm-htp / ethos-u: every rewrite picked stays on the NPU, checked by the real
compilers; the Ethos-U pick follows Vela's estimate; int8 models stay integer.

Skipped, with the reason, only when the npu extra is not installed (``make test`` installs it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import npu_placement, tflite_io, verify
from converters.rewrite import RewriteOptions, rewrite_model
from tests import npu_models
from tests.test_npu_check import needs_extra
from converters.npu.models import activation_precision

pytestmark = needs_extra


def _ops(data: bytes) -> dict[str, int]:
    tree = tflite_io.load_model_bytes(data)
    counts: dict[str, int] = {}
    for name in tflite_io.op_names(tree):
        counts[name] = counts.get(name, 0) + 1
    return counts


def _all_on_npu(report) -> None:
    placement = report.npu_placement
    assert placement.confirmed, placement.summary
    for target, facts in placement.after.items():
        assert facts["ops_npu"] == facts["ops_total"] and facts["cpu_by_type"] == {}, (target, facts)


def test_auto_on_qualcomm_htp_rewrites_a_float_layer_and_stays_on_both_socs():
    result = rewrite_model(npu_models.depthwise(7), RewriteOptions(target="qualcomm-htp"))
    layer = result.report.layers[0]
    assert layer.rewritten and layer.strategy == "split"
    assert "qualcomm:SM8650 8/8, qualcomm:SM8750 8/8" in layer.reason
    _all_on_npu(result.report)
    assert set(result.report.npu_placement.after) == {"qualcomm:SM8650", "qualcomm:SM8750"}
    assert result.report.verification["passed"]    # and the numbers still match the original


@pytest.mark.parametrize("strategy", ["split", "dilated", "halo"])
def test_each_builtin_strategy_asked_for_stays_on_the_htp(strategy):
    result = rewrite_model(npu_models.depthwise(7), RewriteOptions(target="qualcomm-htp", strategy=strategy))
    layer = result.report.layers[0]
    assert layer.rewritten and layer.strategy == strategy, layer.reason
    _all_on_npu(result.report)
    assert result.report.npu_placement.after["qualcomm:SM8650"]["ops_total"] == sum(result.report.ops_after.values())


def test_a_rewrite_that_would_leave_the_npu_is_refused_with_the_reason():
    result = rewrite_model(npu_models.depthwise(7), RewriteOptions(target="qualcomm-htp", strategy="custom"))
    layer = result.report.layers[0]
    assert not layer.rewritten and result.model == npu_models.depthwise(7)
    assert "custom refused: qualcomm:SM8650: 0 of 1 ops on the NPU" in layer.reason
    assert "custom op: the Qualcomm plugin lowers builtin ops only" in layer.reason


def test_the_rank6_control_keeps_its_cpu_ops_and_nothing_more_leaves():
    original = npu_models.transpose_control()
    result = rewrite_model(original, RewriteOptions(target="qualcomm-htp"))
    assert [layer.rewritten for layer in result.report.layers] == [True, True]
    placement = result.report.npu_placement
    assert placement.confirmed
    for target in ("qualcomm:SM8650", "qualcomm:SM8750"):
        before, after = placement.before[target], placement.after[target]
        assert (before["ops_npu"], before["ops_total"]) == (2, 5)
        assert before["cpu_by_type"] == after["cpu_by_type"] == {"RESHAPE": 2, "TRANSPOSE": 1}
        assert after["ops_npu"] == after["ops_total"] - 3


@pytest.mark.parametrize("target", ["qualcomm-htp", "ethos-u"])
def test_int8_models_stay_integer_and_on_the_npu(target):
    original = npu_models.depthwise(13, "int8")
    result = rewrite_model(original, RewriteOptions(target=target))
    assert activation_precision(result.model) == "integer"
    assert "DEQUANTIZE" not in _ops(result.model)
    _all_on_npu(result.report)
    layer = result.report.layers[0]
    if not layer.rewritten:
        assert any(words in layer.reason for words in ("integer-only target for int8 models", "cheapest",
                                                       "runs the integer conv itself")), layer.reason


def test_ethos_u_pick_is_by_velas_estimate_and_never_dearer():
    original = npu_models.depthwise(13, "int8")
    result = rewrite_model(original, RewriteOptions(target="ethos-u"))
    placement = result.report.npu_placement
    facts = placement.after["ethos-u:ethos-u55-256"]
    assert facts["estimate_ms"] <= placement.before["ethos-u:ethos-u55-256"]["estimate_ms"]
    layer_choice = placement.layers[0]
    kept = layer_choice.candidates[0]
    assert kept.name == "keep" and kept.placement == {"ethos-u:ethos-u55-256": "1/1"} and kept.estimate_ms > 0
    priced = [c for c in layer_choice.candidates[1:] if not c.refusal]
    if layer_choice.choice == "keep":
        assert all(c.estimate_ms >= kept.estimate_ms for c in priced)
        assert "Vela's estimate" in result.report.layers[0].reason
    else:
        assert min(c.estimate_ms for c in priced) < kept.estimate_ms


def test_float_model_on_ethos_u_is_left_alone_with_the_reason():
    result = rewrite_model(npu_models.depthwise(7), RewriteOptions(target="ethos-u"))
    layer = result.report.layers[0]
    assert not layer.rewritten and "ethos-u runs integer models only and this layer is float32" in layer.reason
    assert "n/a (float model)" in result.report.npu_placement.summary


@pytest.mark.parametrize("precision", ["int8", "float16"])
def test_a_layer_cut_out_computes_what_it_computed_in_the_model(precision):
    """layer_model keeps types, quantisation and a float16 weight's DEQUANTIZE: on a model that is
    just that layer, the cut-out layer gives the model's very numbers."""
    model = npu_models.depthwise(7, precision)
    tree = tflite_io.load_model_bytes(model)
    names = tflite_io.op_names(tree)
    index = names.index("DEPTHWISE_CONV_2D")
    one = npu_placement.layer_model(tree, 0, index)
    assert tflite_io.op_names(tflite_io.load_model_bytes(one)) == names     # the DEQUANTIZE came along
    spec = verify.input_specs(model)[0]
    rng = np.random.default_rng(3)
    x = (rng.integers(-128, 128, spec.shape).astype(np.int8) if precision == "int8"
         else rng.uniform(-1, 1, spec.shape).astype(np.float32))
    expected = verify.run_tflite(model, [x])[0]
    got = verify.run_tflite(one, [x])[0]
    assert got.dtype == expected.dtype == (np.int8 if precision == "int8" else np.float32)
    np.testing.assert_array_equal(got, expected)


def test_cli_rewrite_for_ethos_u_says_where_the_ops_run(tmp_path):
    from wbmm_mobile.cli import main

    source = tmp_path / "dw13_int8.tflite"
    source.write_bytes(npu_models.depthwise(13, "int8"))
    out, report = tmp_path / "out.tflite", tmp_path / "report.json"
    assert main(["rewrite", str(source), "-o", str(out), "--target", "ethos-u", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["target"] == "ethos-u" and data["npu_placement"]["confirmed"] is True
    assert data["npu_placement"]["npu_targets"] == ["ethos-u:ethos-u55-256"]
    assert data["npu_placement"]["summary"].startswith("checked by compiling the rewritten model")


@pytest.fixture(scope="module")
def wbmm_keras_int8(tmp_path_factory):
    """One WBMM layer (window 4 on 16x16x8), saved, with calibration data for an int8 conversion."""
    import keras

    from wbmm_mobile.layers import WBMM

    folder = tmp_path_factory.mktemp("npu_convert")
    inp = keras.Input((16, 16, 8), batch_size=1)
    model = keras.Model(inp, WBMM(4, use_bias=True, name="w")(inp))
    rng = np.random.default_rng(7)
    for weight in model.weights:
        weight.assign(rng.uniform(-0.3, 0.3, weight.shape).astype(np.float32))
    model.save(folder / "one.keras")
    np.save(folder / "calib.npy", rng.uniform(-1, 1, (16, 16, 16, 8)).astype(np.float32))
    return folder


def test_convert_for_ethos_u_checks_the_lowering_by_compiling(wbmm_keras_int8, tmp_path, capsys):
    from wbmm_mobile.cli import main

    source, calib = wbmm_keras_int8 / "one.keras", wbmm_keras_int8 / "calib.npy"
    assert main(["convert", str(source), "-o", str(tmp_path / "bmm"), "--precision", "int8", "--representative-data",
                 str(calib), "--target", "ethos-u"]) == 0
    report = json.loads((tmp_path / "bmm" / "report.json").read_text())
    facts = report["npu_placement"]["ethos-u:ethos-u55-256"]
    assert facts["ops_npu"] == facts["ops_total"] > 1 and facts["estimate_ms"] > 0
    assert "NPU placement (checked by compiling): ethos-u:ethos-u55-256" in capsys.readouterr().out
    # gather's GATHER stays on the Ethos-U's CPU: refused with Vela's words, nothing written.
    code = main(["convert", str(source), "-o", str(tmp_path / "gather"), "--precision", "int8",
                 "--representative-data", str(calib), "--lowering", "gather", "--target", "ethos-u"])
    err = capsys.readouterr().err
    assert code == 2 and "--lowering gather leaves the NPU for --target ethos-u" in err and "GATHER" in err
    assert not (tmp_path / "gather" / "one.tflite").exists()
    code = main(["convert", str(source), "-o", str(tmp_path / "custom"), "--lowering", "custom",
                 "--target", "qualcomm-htp"])
    assert code == 2 and "no NPU compiler takes" in capsys.readouterr().err


def test_convert_for_the_htp_accepts_bmm_on_both_socs(wbmm_keras_int8, tmp_path):
    from wbmm_mobile.cli import main

    assert main(["convert", str(wbmm_keras_int8 / "one.keras"), "-o", str(tmp_path), "--target", "qualcomm-htp"]) == 0
    placement = json.loads((tmp_path / "report.json").read_text())["npu_placement"]
    assert set(placement) == {"qualcomm:SM8650", "qualcomm:SM8750"}
    assert all(f["ops_npu"] == f["ops_total"] > 1 for f in placement.values())


def test_ethos_u_rule_takes_the_cheapest_and_keeps_the_conv_on_ties():
    """The decision alone, on candidates as choose() fills them from Vela (the integer rewrites that
    would reach it come with the int8 work; today every int8 candidate is refused before Vela)."""
    from converters.npu_placement import Candidate, cheaper_than_keeping

    kept = Candidate("keep", {"ethos-u:ethos-u55-256": "1/1"}, 1.0)
    split = Candidate("split", {"ethos-u:ethos-u55-256": "8/8"}, 0.8)
    halo = Candidate("halo", {"ethos-u:ethos-u55-256": "23/23"}, 3.0)
    assert cheaper_than_keeping(kept, [halo, split]) is split
    assert cheaper_than_keeping(kept, [halo]) is None
    assert cheaper_than_keeping(kept, [Candidate("split", {}, 1.0)]) is None      # a tie keeps the conv
    assert cheaper_than_keeping(kept, []) is None
    partial = Candidate("keep", {"ethos-u:ethos-u55-256": "0/1"}, None, "GATHER on the CPU")
    assert cheaper_than_keeping(partial, [halo]) is halo
