"""The one backend vocabulary: canonical names, the old spellings mapped with a note, and the
commands that take a backend refusing anything else."""

import pytest

from converters import strategy
from wbmm_mobile import backends
from wbmm_mobile.cli import main


def test_old_spellings_map_to_the_new_names_with_one_note(capsys):
    backends._warned.clear()
    assert backends.canonical("builtin") == "cpu"
    assert backends.canonical("delegate") == "wbmm"
    assert backends.canonical("builtin") == "cpu"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "'builtin' is now called 'cpu'" in err[0] and "'delegate'" in err[1]
    assert backends.canonical("xnnpack", ("xnnpack", "cpu")) == "xnnpack"
    assert capsys.readouterr().err == ""


def test_unknown_or_disallowed_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown target 'tpu'; choose from xnnpack, cpu"):
        backends.canonical("tpu", ("xnnpack", "cpu"), what="target")
    with pytest.raises(ValueError, match="unknown kernels 'gpu'"):
        backends.canonical("gpu", ("xnnpack", "cpu"), what="kernels")


def test_every_command_vocabulary_is_a_subset_of_the_one_list():
    from android_harness.profile import CONFIGS
    from converters.verify import KERNELS
    for names in (strategy.TARGETS, KERNELS, tuple(CONFIGS)):
        assert set(names) <= set(backends.NAMES), names


def test_strategy_pick_takes_the_old_target_names():
    shape = strategy.LayerShape(56, 56, 96, 7)
    assert strategy.pick(shape, "delegate").order == strategy.pick(shape, "wbmm").order == ("custom", "split")


def test_cli_refuses_an_unknown_target_with_usage_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rewrite", str(tmp_path / "m.tflite"), "-o", str(tmp_path / "o.tflite"), "--target", "tpu"])
    assert exit_info.value.code == 2
    assert "unknown target 'tpu'" in capsys.readouterr().err
