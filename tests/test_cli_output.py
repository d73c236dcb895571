"""What table commands print into a pipe (whole values, no 80-column cut) and their --json.

Run as subprocesses with stdout a pipe, as ``wbmm-mobile devices | cat`` would: the CLI
decides how to print from that alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from android_harness.loopback.daemon import LoopbackDevice
from android_harness.results import ResultsStore
from tests._rewrite_case import converted_depthwise
from tests.test_compare import record

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="80")   # what a narrow terminal would say; a pipe must ignore it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "wbmm_mobile.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_devices_piped_shows_whole_values_and_writes_json(tmp_path):
    with LoopbackDevice(tmp_path / "phone", fixture_phone=True) as phone:
        piped = cli("devices", "--no-server", "--direct", phone.serial, "--json", str(tmp_path / "devices.json"))
        to_stdout = cli("devices", "--no-server", "--direct", phone.serial, "--json", "-")
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout
    row = next(line for line in piped.stdout.splitlines() if phone.serial in line)
    # Every cell whole on one line: serial, model, SoC, Android version.
    for cell in (phone.serial, "Google Pixel 7 (wbmm loopback fixture)", "Tensor G2", "14 (SDK 34)"):
        assert cell in row, row
    assert len(row) > 80
    rows = json.loads((tmp_path / "devices.json").read_text())
    assert [r["serial"] for r in rows] == [phone.serial]
    assert rows[0]["snapshot"]["info"]["model"] == "Pixel 7 (wbmm loopback fixture)" and rows[0]["snapshot"]["info"]["abi"] == "arm64-v8a"
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert json.loads(to_stdout.stdout) == rows          # stdout is the JSON alone; the table went to stderr
    assert phone.serial in to_stdout.stderr


def test_compare_json_has_every_row_and_the_piped_table_keeps_long_names(tmp_path):
    long_name = "a_model_name_much_longer_than_any_terminal_column_would_allow_" * 2
    ResultsStore(tmp_path).extend([record(long_name, "xnnpack", 10.0), record(long_name, "wbmm", 4.0),
                                   record("net", "gpu", 0, status="failed", error="GPU delegate refused")])
    piped = cli("compare", str(tmp_path), "--no-plots", "--json", str(tmp_path / "comparison.json"))
    assert piped.returncode == 0, piped.stderr
    assert long_name in piped.stdout and "2.50x vs xnnpack" in piped.stdout
    data = json.loads((tmp_path / "comparison.json").read_text())
    rows = {(r["model"], r["config"]): r for r in data["rows"]}
    assert rows[(long_name, "xnnpack")]["median_ms"] == 10.0 and rows[(long_name, "wbmm")]["speedup"] == 2.5
    assert [f["config"] for f in data["failed"]] == ["gpu"]
    to_stdout = cli("compare", str(tmp_path), "--no-plots", "--json", "-")
    assert json.loads(to_stdout.stdout)["rows"] == data["rows"]


def test_rewrite_report_piped_in_full_and_as_json_on_stdout(tmp_path):
    model = tmp_path / "a_long_folder_name_to_make_the_path_wide" / "in.tflite"
    model.parent.mkdir()
    model.write_bytes(converted_depthwise(7))
    piped = cli("rewrite", str(model), "-o", str(tmp_path / "out.tflite"), "--strategy", "split")
    assert piped.returncode == 0, piped.stderr
    row = next(line for line in piped.stdout.splitlines() if "split" in line and "DEPTHWISE_CONV_2D" in line)
    assert "…" not in piped.stdout and len(row) > 80
    to_stdout = cli("rewrite", str(model), "-o", str(tmp_path / "out2.tflite"), "--strategy", "split", "--json", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    report = json.loads(to_stdout.stdout)
    assert report["rewritten_count"] == 1 and report["layers"][0]["strategy"] == "split"
    assert "1 of 1 depthwise convs rewritten" in to_stdout.stderr
