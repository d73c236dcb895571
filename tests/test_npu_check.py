"""npu-check against the real NPU compilers: Qualcomm's (LiteRT's AOT plugin over onnxruntime-qnn's
QNN libraries) and Arm's Vela, on models made by the real TFLite converter.

Skipped, with the reason, only when the npu extra is not installed (``make test`` installs it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import npu_models

ROOT = Path(__file__).resolve().parents[1]


def _extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime_qnn", "ethosu"))


needs_extra = pytest.mark.skipif(not _extra_installed(), reason="the npu extra is not installed "
                                 "(SKIP_SDK_DOWNLOAD=1 pip install -e '.[npu]'; `make test` installs it)")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def qualcomm():
    from converters.npu import qualcomm as module

    return module


@pytest.fixture(scope="module")
def ethos_u():
    from converters.npu import ethos_u as module

    return module


# ----------------------------------------------------------------------------- Qualcomm

@needs_extra
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_one_depthwise_layer_runs_whole_on_sm8650(tmp_path, qualcomm, precision):
    path = _write(tmp_path, f"dw7_{precision}", npu_models.depthwise(7, precision))
    result = qualcomm.check(path, "SM8650")
    assert (result.status, result.ops_npu, result.ops_total, result.partitions) == ("compiled", 1, 1, 1)
    assert {k: (v.npu, v.cpu) for k, v in result.per_op.items()} == {"DEPTHWISE_CONV_2D": (1, 0)}
    assert result.cpu_ops == [] and result.estimate_ms is None
    # The DDR summary of the one partition: it at least reads the input map once.
    elements = 28 * 28 * 32 * (4 if precision == "float32" else 1)
    assert result.traffic["ddr_read_total_bytes"] >= elements > 0
    assert result.seconds < 60


@needs_extra
@pytest.mark.parametrize("precision", ["float32", "int8"])
@pytest.mark.parametrize("strategy", ["split", "dilated", "halo", "builtin_kernel"])
def test_every_builtin_rewrite_stays_on_sm8650(tmp_path, qualcomm, strategy, precision):
    from converters.rewrite import RewriteOptions, rewrite_model

    # An int8 layer has an integer form only under builtin_kernel; the other strategies are float
    # islands there, which the compiler must still place wholly on the HTP.
    islands = precision == "int8" and strategy != "builtin_kernel"
    result = rewrite_model(npu_models.depthwise(7, precision),
                           RewriteOptions(strategy=strategy, verify=False, allow_float_islands=islands))
    layer = result.report.layers[0]
    assert layer.rewritten and layer.strategy == strategy
    check = qualcomm.check(_write(tmp_path, strategy, result.model), "SM8650")
    total = sum(result.report.ops_after.values())
    assert (check.status, check.ops_npu, check.ops_total, check.partitions) == ("compiled", total, total, 1)
    assert all(p.cpu == 0 for p in check.per_op.values()), check.per_op


@needs_extra
def test_custom_op_is_left_on_the_cpu_with_a_reason(tmp_path, qualcomm):
    from converters.rewrite import RewriteOptions, rewrite_model

    model = rewrite_model(npu_models.depthwise(7), RewriteOptions(strategy="custom", verify=False)).model
    check = qualcomm.check(_write(tmp_path, "custom", model), "SM8650")
    # The only op is WBMM_DEPTHWISE: nothing to offload (the compiler's exit 1) is 0 of 1, not a crash.
    assert (check.status, check.ops_npu, check.ops_total) == ("none-offloaded", 0, 1)
    assert [(c.op, c.reason) for c in check.cpu_ops] == [("WBMM_DEPTHWISE",
                                                         "custom op: the Qualcomm plugin lowers builtin ops only")]


@needs_extra
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_rank6_transpose_control_stays_partial(tmp_path, qualcomm, precision):
    path = _write(tmp_path, "control", npu_models.transpose_control(precision))
    result = qualcomm.check(path, "SM8650")
    assert (result.status, result.ops_npu, result.ops_total, result.partitions) == ("compiled", 2, 5, 2)
    assert {k: (v.npu, v.cpu) for k, v in result.per_op.items()} == {
        "DEPTHWISE_CONV_2D": (2, 0), "RESHAPE": (0, 2), "TRANSPOSE": (0, 1)}
    assert [(c.op, c.index) for c in result.cpu_ops] == [("RESHAPE", 1), ("TRANSPOSE", 2), ("RESHAPE", 3)]
    assert all("Rank 6" in c.reason for c in result.cpu_ops), result.cpu_ops


@needs_extra
def test_exit_1_with_nothing_offloaded_is_zero_of_m(tmp_path, qualcomm):
    result = qualcomm.check(_write(tmp_path, "t6", npu_models.rank6_transpose_only()), "SM8650")
    assert (result.status, result.compiled, result.ops_npu, result.ops_total, result.partitions) == \
        ("none-offloaded", False, 0, 1, 0)
    assert [(c.op, c.index) for c in result.cpu_ops] == [("TRANSPOSE", 0)]
    assert "Rank 6" in result.cpu_ops[0].reason and "exits 1" in result.note


@needs_extra
def test_exit_5_on_complex64_is_a_named_refusal(tmp_path, qualcomm):
    result = qualcomm.check(_write(tmp_path, "rfft", npu_models.rfft2d()), "SM8650")
    assert result.status == "refused" and result.ops_npu == 0 and result.ops_total == 2
    assert "COMPLEX64" in result.note and "RFFT2D" in result.note and "exit 5" in result.note
    assert [c.op for c in result.cpu_ops] == ["RFFT2D"]


@needs_extra
def test_qualcomm_soc_list_is_the_plugins(qualcomm):
    from ai_edge_litert.aot.vendors.qualcomm.target import SocModel

    assert set(qualcomm.SOCS) == {m.value for m in SocModel if m.value.startswith(("SM", "SA"))}


# ----------------------------------------------------------------------------- Ethos-U

@needs_extra
def test_int8_layer_on_ethos_u55_with_vela_estimate(tmp_path, ethos_u):
    small = ethos_u.check(_write(tmp_path, "dw7", npu_models.depthwise(7, "int8")), "ethos-u55-256")
    large = ethos_u.check(_write(tmp_path, "dw13", npu_models.depthwise(13, "int8")), "ethos-u55-256")
    for result in (small, large):
        assert (result.status, result.ops_npu, result.ops_total, result.partitions) == ("compiled", 1, 1, 1)
        assert result.cpu_ops == [] and result.estimate_cycles > 0
        assert result.traffic["sram_total_bytes"] > 28 * 28 * 32
    # Vela's cost follows the work: 13x13 taps are 169/49 of 7x7's.
    assert large.estimate_ms > 1.5 * small.estimate_ms
    assert small.estimate_ms == pytest.approx(small.estimate_cycles / 500e6 * 1e3, rel=0.01)   # 500 MHz U55


@needs_extra
def test_int8_control_model_runs_whole_on_ethos_u(tmp_path, ethos_u):
    # Vela takes rank-6 RESHAPE/TRANSPOSE with a leading 1, unlike the HTP.
    result = ethos_u.check(_write(tmp_path, "control", npu_models.transpose_control("int8")), "ethos-u55-256")
    assert (result.status, result.ops_npu, result.ops_total, result.partitions) == ("compiled", 5, 5, 1)


@needs_extra
def test_float_model_is_not_applicable_on_ethos_u(tmp_path, ethos_u):
    result = ethos_u.check(_write(tmp_path, "dw7f", npu_models.depthwise(7)), "ethos-u55-256")
    assert (result.status, result.compiled, result.ops_npu, result.ops_total) == ("not-applicable", False, 0, 1)
    assert "int8" in result.note and result.estimate_ms is None


@needs_extra
def test_float_island_ops_carry_velas_reasons(tmp_path, ethos_u):
    from converters.rewrite import RewriteOptions, rewrite_model

    rewritten = rewrite_model(npu_models.depthwise(7, "int8"), RewriteOptions(strategy="dilated", verify=False,
                                                                            allow_float_islands=True))
    ops_after = rewritten.report.ops_after
    result = ethos_u.check(_write(tmp_path, "dilated8", rewritten.model), "ethos-u55-256")
    assert result.status == "compiled" and result.ops_total == sum(ops_after.values())
    assert "DEQUANTIZE" in ops_after and rewritten.report.mixed_precision
    dequantize = [c for c in result.cpu_ops if c.op == "DEQUANTIZE"]
    assert dequantize and dequantize[0].reason == "Unsupported opType"
    assert any("unsupported DataType Float32" in c.reason for c in result.cpu_ops if c.op == "DEPTHWISE_CONV_2D")
    assert result.per_op["DEPTHWISE_CONV_2D"].cpu == ops_after["DEPTHWISE_CONV_2D"]


@needs_extra
def test_ethos_u_config_list_is_velas(ethos_u):
    from ethosu.vela.architecture_features import Accelerator

    assert set(ethos_u.CONFIGS) == {a.value for a in Accelerator}


# ----------------------------------------------------------------------------- setup and CLI

@needs_extra
def test_qnn_folder_is_prepared_once_and_repaired(tmp_path, monkeypatch):
    from converters.npu import environment

    monkeypatch.setenv("WBMM_MOBILE_CACHE", str(tmp_path / "cache"))
    tools = environment.qualcomm_tools()
    folder = tools.qnn_dir
    assert folder.parent == tmp_path / "cache" / "qnn" and folder.name.startswith("2.7.0-")
    stub = folder / "libQnnLpai.so"
    assert stub.is_file() and not stub.is_symlink()
    soname = subprocess.run(["readelf", "-d", str(stub)], capture_output=True, text=True).stdout
    assert "Library soname: [libQnnLpai.so]" in soname
    assert (folder / "libQnnHtp.so").resolve().parent.name == "onnxruntime_qnn"
    assert any(p.name.startswith("libc++-") for p in folder.iterdir())   # the wheel's C++ runtime
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]     # no staging left behind
    # LD_LIBRARY_PATH is the subprocess's only.
    assert str(folder) not in os.environ.get("LD_LIBRARY_PATH", "")
    assert environment.qualcomm_env(tools)["LD_LIBRARY_PATH"].startswith(str(folder))
    stamp = stub.stat().st_mtime_ns
    assert environment.qualcomm_tools().qnn_dir == folder and stub.stat().st_mtime_ns == stamp   # reused
    (folder / "libQnnHtp.so").unlink()
    os.symlink(tmp_path / "gone.so", folder / "libQnnHtp.so")                                    # dangling
    repaired = environment.qualcomm_tools().qnn_dir
    assert repaired == folder and (folder / "libQnnHtp.so").exists()


def _cli(*args, env_extra=None, prelude=""):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    code = prelude + "import sys; from wbmm_mobile.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


# Makes the npu extra's packages unimportable in that process only, as on a machine without it.
_WITHOUT_EXTRA = """
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('onnxruntime_qnn', 'ethosu'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None
sys.meta_path.insert(0, _Missing())
"""


def test_without_the_extra_one_line_says_what_to_install(tmp_path):
    model = _write(tmp_path, "dw", npu_models.depthwise(7))
    run = _cli("npu-check", str(model), prelude=_WITHOUT_EXTRA)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "SKIP_SDK_DOWNLOAD=1 pip install 'wbmm-mobile[npu]'" in lines[0], lines
    assert "onnxruntime-qnn" in lines[0] and run.stdout == ""


@needs_extra
def test_cli_json_records_and_plain_text(tmp_path):
    control = _write(tmp_path, "control", npu_models.transpose_control("int8"))
    floaty = _write(tmp_path, "dwf", npu_models.depthwise(7))
    out = tmp_path / "npu.json"
    run = _cli("npu-check", str(control), str(floaty), "--qualcomm", "SM8650", "--ethos-u", "ethos-u55-256",
               "--json", str(out))
    assert run.returncode == 0, run.stderr
    records = json.loads(out.read_text())
    assert [(r["model"], r["target"]) for r in records] == [
        (str(control), "qualcomm:SM8650"), (str(control), "ethos-u:ethos-u55-256"),
        (str(floaty), "qualcomm:SM8650"), (str(floaty), "ethos-u:ethos-u55-256")]
    for record in records:
        for key in ("model", "target", "compiled", "ops_total", "ops_npu", "partitions", "per_op", "cpu_ops",
                    "estimate_ms"):
            assert key in record
    assert (records[0]["ops_npu"], records[0]["ops_total"], records[0]["partitions"]) == (2, 5, 2)
    assert records[0]["per_op"]["TRANSPOSE"] == {"npu": 0, "cpu": 1} and records[0]["estimate_ms"] is None
    assert {"op": "TRANSPOSE", "reason": "QNN: has incorrect Rank 6"}.items() <= records[0]["cpu_ops"][1].items()
    assert records[1]["compiled"] and records[1]["estimate_ms"] > 0
    assert records[3]["compiled"] is False and records[3]["status"] == "not-applicable"
    # Piped: plain text, all of it (the CPU ops with QNN's reason, no box drawing).
    assert "CPU: TRANSPOSE #2 (Transpose_2): QNN: has incorrect Rank 6" in run.stdout
    assert "─" not in run.stdout and f"wrote {out}" in run.stdout


def test_cli_refuses_unknown_targets_and_missing_models(tmp_path):
    run = _cli("npu-check", "x.tflite", "--qualcomm", "SM9999")
    assert run.returncode == 2 and "unknown Qualcomm SoC 'SM9999'" in run.stderr and "SM8650" in run.stderr
    run = _cli("npu-check", str(tmp_path / "missing.tflite"), "--qualcomm", "SM8650", "--ethos-u", "none")
    assert run.returncode == 2 and "missing.tflite" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_cli_defaults_are_the_librarys():
    from converters import npu
    from wbmm_mobile.cli import npu_check

    assert npu_check._QUALCOMM_DEFAULT.split(",") == list(npu.QUALCOMM_DEFAULT)
    assert npu_check._ETHOS_U_DEFAULT.split(",") == list(npu.ETHOS_U_DEFAULT)


# ----------------------------------------------------------------------------- compare

@needs_extra
def test_compare_shows_placement_next_to_latency(tmp_path):
    """Real npu-check JSON of two real models, beside hand-written latency records of the same names."""
    from android_harness.results import ResultsStore
    from converters.rewrite import RewriteOptions, rewrite_model
    from tests.test_compare import record
    from wbmm_mobile.compare import compare, format_table

    models = tmp_path / "models"
    models.mkdir()
    base = _write(models, "net", npu_models.transpose_control("int8"))
    rewritten = rewrite_model(npu_models.depthwise(7), RewriteOptions(strategy="halo", verify=False)).model
    wbmm = _write(models, "net_wbmm", rewritten)
    results = tmp_path / "results"
    ResultsStore(results).extend([record("net", "xnnpack", 10.0), record("net_wbmm", "xnnpack", 5.0)])
    # Found in the results folder by its name.
    run = _cli("npu-check", str(base), str(wbmm), "--qualcomm", "SM8650", "--json", str(results / "npu_check.json"))
    assert run.returncode == 0, run.stderr
    comparison = compare(results, plots=False)
    assert comparison.npu_source == str(results / "npu_check.json")
    text = format_table(comparison)
    header = next(line for line in text.splitlines() if line.startswith("model"))
    assert header.index("median ms") < header.index("NPU ops") < header.index("speedup")
    net_row = next(line for line in text.splitlines() if line.startswith("net ") and "xnnpack" in line)
    assert "SM8650 2/5, ethos-u55-256 5/5" in net_row
    wbmm_row = next(line for line in text.splitlines() if line.startswith("net_wbmm "))
    assert "SM8650 23/23, ethos-u55-256 n/a" in wbmm_row
    report = (results / "report.md").read_text()
    assert "## NPU placement" in report and "TRANSPOSE (QNN: has incorrect Rank 6)" in report
    # Given explicitly (elsewhere) through the CLI.
    elsewhere = tmp_path / "placement.json"
    (results / "npu_check.json").rename(elsewhere)
    assert compare(results, plots=False, report=False).npu == []
    run = _cli("compare", str(results), "--no-plots", "--npu-check", str(elsewhere))
    assert run.returncode == 0 and "SM8650 2/5" in run.stdout and "NPU placement (from" in run.stdout


def test_compare_refuses_a_file_that_is_not_npu_check_json(tmp_path):
    from android_harness.results import ResultsStore
    from tests.test_compare import record

    ResultsStore(tmp_path).extend([record("net", "xnnpack", 10.0)])
    bad = tmp_path / "other.json"
    bad.write_text('{"not": "a list"}')
    run = _cli("compare", str(tmp_path), "--no-plots", "--npu-check", str(bad))
    assert run.returncode == 2 and "other.json: not npu-check JSON" in run.stderr
