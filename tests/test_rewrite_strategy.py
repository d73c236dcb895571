"""The ``auto`` picker: fixed rules per target and measured choices from a table."""

import json
from pathlib import Path

from converters import rewrite, strategy, strategy_measure
from converters.strategy import LayerShape, pick
from tests._rewrite_case import Case


def test_fixed_rules_per_target():
    shape = LayerShape(56, 56, 96, 13)
    assert pick(shape, "nnapi").order == ("split",) and "feature level 6" in pick(shape, "nnapi").reason
    assert pick(shape, "gpu").order == ("split",) and "BATCH_MATMUL" in pick(shape, "gpu").reason
    assert pick(shape, "wbmm").order[0] == "custom"
    assert pick(shape, "xnnpack", "halo").order == ("halo",)


def _table(tmp_path, split_ms, halo_ms):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"machine": "test", "layers": [
        {"kernels": "xnnpack", "height": 56, "width": 56, "channels": 96, "kernel": 13,
         "median_ms": {"split": split_ms, "halo": halo_ms}},
        {"kernels": "xnnpack", "height": 14, "width": 14, "channels": 384, "kernel": 7,
         "median_ms": {"split": 1.0, "halo": 5.0}}]}))
    strategy._load_table.cache_clear()
    return path


def test_table_picks_the_faster_with_a_margin(tmp_path):
    path = _table(tmp_path, split_ms=4.0, halo_ms=2.0)
    chosen = pick(LayerShape(56, 56, 96, 13), "xnnpack", table_path=path)
    assert chosen.order[0] == "halo" and "halo is fastest (halo 2.00 ms, split 4.00 ms" in chosen.reason
    assert pick(LayerShape(14, 14, 384, 7), "xnnpack", table_path=path).order[0] == "split"
    path = _table(tmp_path, split_ms=4.0, halo_ms=3.8)              # within the margin: keep split
    assert pick(LayerShape(56, 56, 96, 13), "xnnpack", table_path=path).order[0] == "split"


def test_no_table_row_for_kernels_falls_back_to_split(tmp_path):
    path = _table(tmp_path, 4.0, 2.0)
    chosen = pick(LayerShape(56, 56, 96, 13), "cpu", table_path=path)
    assert chosen.order[0] == "split" and "no shipped measurement" in chosen.reason


def test_report_states_the_pick_and_why():
    case = Case.depthwise(7).convert().rewrite(target="nnapi")
    assert case.report.layers[0].strategy == "split" and "nnapi" in case.report.layers[0].reason


def test_measure_times_both_rewrites_on_this_machine():
    times = strategy_measure.measure_strategies(LayerShape(16, 16, 8, 7), "xnnpack", runs=3,
                                                rewrite_with=rewrite.rewrite_one_strategy)
    assert set(times) == {"depthwise", "split", "halo"} and all(t > 0 for t in times.values())


def test_keep_and_builtin_kernel_choices(tmp_path):
    path = tmp_path / "table.json"
    row = {"height": 14, "width": 14, "channels": 384, "kernel": 13}
    path.write_text(json.dumps({"machine": "test", "layers": [
        dict(row, kernels="xnnpack", median_ms={"split": 6.0, "halo": 10.0, "builtin_kernel": 1.7, "depthwise": 17.0}),
        dict(row, kernels="cpu", median_ms={"split": 25.0, "halo": 88.0, "depthwise": 1.8})]}))
    strategy._load_table.cache_clear()
    shape = LayerShape(14, 14, 384, 13)
    assert pick(shape, "xnnpack", table_path=path).order[0] == "builtin_kernel"
    kept = pick(shape, "cpu", table_path=path)
    assert kept.order == ("keep",) and "stock conv is fastest" in kept.reason


def test_builtin_kernel_rewrite_keeps_the_conv_behind_a_reshape():
    case = Case.depthwise(13).convert().rewrite(strategy="builtin_kernel")
    case.expect_rewritten("builtin_kernel").expect_ops({"DEPTHWISE_CONV_2D": 1, "RESHAPE": 1})
    case.compare(rtol=1e-5, atol=1e-6).compare(rtol=1e-5, atol=1e-6, kernels="xnnpack").reloads()
    # int8 keeps its integers: the same int8 filter behind the RESHAPE, identical outputs.
    Case.depthwise(7, quantize="int8").convert().rewrite(strategy="builtin_kernel") \
        .expect_rewritten("builtin_kernel").expect_ops({"RESHAPE": 1, "DEPTHWISE_CONV_2D": 1},
                                                       absent=("DEQUANTIZE", "QUANTIZE")).compare_int8(steps=0)


def test_builtin_kernel_turns_a_grouped_conv_into_a_depthwise_conv():
    case = Case.depthwise(7, grouped=True, activation="relu").convert().rewrite(strategy="builtin_kernel")
    case.expect_rewritten("builtin_kernel").expect_ops({"DEPTHWISE_CONV_2D": 1, "RESHAPE": 1}, absent=("CONV_2D",))
    case.compare(rtol=1e-5, atol=1e-6)
    Case.depthwise(7, quantize="float16").convert().rewrite(strategy="builtin_kernel") \
        .expect_ops({"DEPTHWISE_CONV_2D": 1, "RESHAPE": 1, "DEQUANTIZE": 1}).compare(rtol=1e-5, atol=1e-6)


def test_measure_picks_from_timings_made_now():
    chosen = pick(LayerShape(12, 12, 8, 9), "xnnpack", table=strategy_measure.MeasuredHere(rewrite.rewrite_one_strategy))
    assert "measured now on this machine" in chosen.reason
    assert chosen.order[0] in ("split", "dilated", "halo", "builtin_kernel", "keep")
    for name in ("split", "dilated", "halo", "builtin_kernel", "depthwise"):
        assert f"{name} " in chosen.reason        # every candidate's time is stated


def test_dilated_is_picked_when_measured_faster_and_split_takes_what_it_refuses(tmp_path, monkeypatch):
    path = tmp_path / "table.json"
    row = {"kernels": "xnnpack", "height": 12, "width": 12, "channels": 4, "kernel": 7}
    path.write_text(json.dumps({"machine": "test", "layers": [
        dict(row, median_ms={"split": 2.5, "dilated": 2.0, "halo": 5.0, "depthwise": 9.0})]}))
    strategy._load_table.cache_clear()
    assert pick(LayerShape(12, 12, 4, 7), "xnnpack", table_path=path).order == ("dilated", "split")
    monkeypatch.setattr(strategy, "TABLE_PATH", path)
    try:
        # 'same' 7x7: dilated; 'valid' 7x7 (no centred cut): dilated refuses, split takes it.
        same = Case.depthwise(7).convert().rewrite(strategy="auto").report.layers[0]
        valid = Case.depthwise(7, padding="valid").convert().rewrite(strategy="auto").report.layers[0]
    finally:
        strategy._load_table.cache_clear()
    assert same.strategy == "dilated" and "dilated is fastest" in same.reason
    assert valid.strategy == "split" and "dilated: only 'same' convs" in valid.reason


def test_the_policy_module_imports_neither_the_rewriter_nor_any_timing():
    """converters.strategy holds the policy only: no import of the rewriter, the timing loop or the
    model builders, at module level or inside a function (the old rewrite <-> strategy cycle)."""
    import ast

    tree = ast.parse(Path(strategy.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    forbidden = {"converters.rewrite", "converters.strategy_measure", "converters.layer_models",
                 "converters.hostbench", "converters.rewrites"}
    assert not {name for name in imported if any(name == f or name.startswith(f + ".") for f in forbidden)}
    # ... and nothing the measuring module imports leads back to the rewriter.
    measuring = ast.parse(Path(strategy_measure.__file__).read_text())
    modules = {n.module for n in ast.walk(measuring) if isinstance(n, ast.ImportFrom)}
    assert "converters.rewrite" not in modules and "converters.strategy" in modules
