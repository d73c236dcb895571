"""Loading libwbmm_delegate.so: ai-edge-litert and tf.lite, options, errors, refusal.

Every test loads the real library through TFLite's external-delegate C ABI and
inspects the interpreter's node list: the model's custom op has no kernel in
either runtime, so a correct output proves the delegate ran it.
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import delegates
from delegate_models import wbmm_model
from wbmm_mobile import core
from wbmm_mobile.errors import DelegateError, DelegateNotBuiltError


@pytest.fixture(scope="module")
def wbmm_case():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 12, 10, 9)).astype(np.float32)
    kernel = rng.standard_normal((7, 7, 9)).astype(np.float32)
    bias = rng.standard_normal(9).astype(np.float32)
    table, window = core.kernel_to_table(kernel.astype(np.float64))
    expected = core.wbmm_forward(x.astype(np.float64), table, window, shortcut=True, bias=bias)
    return wbmm_model(x.shape, kernel, 4, True, bias), x, expected


def _invoke(interpreter, x):
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_library_path_finds_the_make_delegate_build_in_a_checkout(monkeypatch):
    monkeypatch.delenv(delegates.LIBRARY_ENV_VAR, raising=False)
    root = delegates.checkout_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert delegates.library_path() == root / "build" / "delegates" / "libwbmm_delegate.so"


def test_library_path_order_env_then_wheel_then_checkout(monkeypatch, tmp_path):
    """$WBMM_DELEGATE_LIB first, then the wheel's delegates/bin/, then (a checkout only) build/delegates/."""
    built = delegates.library_path()
    monkeypatch.delenv(delegates.LIBRARY_ENV_VAR, raising=False)
    packaged = tmp_path / "site-packages" / "delegates" / "bin"
    monkeypatch.setattr(delegates, "PACKAGED_DIR", packaged)
    assert delegates.library_path() == built                     # no wheel copy: the checkout's build
    packaged.mkdir(parents=True)
    (packaged / "libwbmm_delegate.so").write_bytes(built.read_bytes())
    assert delegates.library_path() == packaged / "libwbmm_delegate.so"
    monkeypatch.setenv(delegates.LIBRARY_ENV_VAR, str(built))
    assert delegates.library_path() == built
    monkeypatch.setenv(delegates.LIBRARY_ENV_VAR, str(tmp_path / "nope.so"))
    with pytest.raises(DelegateNotBuiltError, match="nope.so"):
        delegates.library_path()


def test_a_missing_library_is_explained(monkeypatch, tmp_path):
    monkeypatch.delenv(delegates.LIBRARY_ENV_VAR, raising=False)
    monkeypatch.setattr(delegates, "PACKAGED_DIR", tmp_path / "bin")
    monkeypatch.setattr(delegates, "checkout_root", lambda: tmp_path)          # a checkout without a build
    with pytest.raises(DelegateNotBuiltError, match="make delegate"):
        delegates.load()
    monkeypatch.setattr(delegates, "checkout_root", lambda: None)              # a wheel without the library
    with pytest.raises(DelegateNotBuiltError, match="reinstall the wheel"):
        delegates.library_path()
    assert issubclass(DelegateNotBuiltError, FileNotFoundError)


def test_ai_edge_litert_runs_the_custom_op_through_the_delegate(wbmm_case):
    model, x, expected = wbmm_case
    delegate = delegates.load(num_threads=2)
    interpreter = Interpreter(model_content=model, experimental_delegates=[delegate])
    y = _invoke(interpreter, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops == ["WBMM", "DELEGATE"]  # the original node and the delegate node that replaced it
    report = delegates.delegation_report(interpreter, delegate)
    assert report.claimed_ops == ("WBMM",) and report.num_threads == 2


def test_tf_lite_runs_the_custom_op_through_the_delegate(wbmm_case):
    tf = pytest.importorskip("tensorflow")
    model, x, expected = wbmm_case
    delegate = delegates.load_tf(num_threads=1)
    interpreter = tf.lite.Interpreter(model_content=model, experimental_delegates=[delegate])
    y = _invoke(interpreter, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    assert "DELEGATE" in [op["op_name"] for op in interpreter._get_ops_details()]
    assert delegates.delegation_report(interpreter, delegate).claimed_ops == ("WBMM",)


def test_without_the_delegate_the_custom_op_does_not_run(wbmm_case):
    model, x, _ = wbmm_case
    with pytest.raises((RuntimeError, ValueError), match="WBMM"):
        _invoke(Interpreter(model_content=model,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), x)


@pytest.mark.parametrize("options, words", [
    ({"num_threads": 0}, "num_threads"),
    ({"min_kernel": "big"}, "min_kernel"),
    ({"threads": 2}, "unknown option 'threads'"),
    ({"isa": "sse9"}, "isa"),
    ({"spin_us": -1}, "spin_us"),
])
def test_bad_options_fail_with_the_key_named(options, words):
    with pytest.raises(DelegateError, match=words):
        delegates.load(**options)


def test_options_help_lists_every_option_with_its_default():
    text = delegates.options_help()
    for key, default in [("num_threads", "1"), ("spin_us", "1000"), ("claim_depthwise", "0"), ("min_kernel", "7"),
                         ("verbose", "0"), ("isa", "auto")]:
        assert f"{key}" in text and f"(default {default})" in text
    assert "portable" in delegates.available_isas()


def test_layout_check_refuses_to_attach_with_a_clear_message(wbmm_case):
    # A live runtime state that does not look like our layout: a thread count
    # no real runtime reports. The delegate must refuse before claiming anything.
    model, _, _ = wbmm_case
    with pytest.raises((RuntimeError, ValueError), match="refusing to attach"):
        Interpreter(model_content=model, experimental_delegates=[delegates.load()], num_threads=5000)


def test_verbose_reports_claims_and_refusals(wbmm_case, capfd):
    model, x, _ = wbmm_case
    interpreter = Interpreter(model_content=model, experimental_delegates=[delegates.load(verbose=1)])
    _invoke(interpreter, x)
    err = capfd.readouterr().err
    assert "node 0 WBMM: claimed (7x7 kernel" in err


def test_resizing_the_input_re_prepares_the_delegate_kernel():
    rng = np.random.default_rng(12)
    kernel = rng.standard_normal((9, 9, 6)).astype(np.float32)
    delegate = delegates.load()
    interpreter = Interpreter(model_content=wbmm_model((1, 10, 10, 6), kernel, 5), experimental_delegates=[delegate],
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    table, window = core.kernel_to_table(kernel.astype(np.float64))
    for shape in [(1, 10, 10, 6), (2, 13, 7, 6)]:
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(shape))
        x = rng.standard_normal(shape).astype(np.float32)
        y = _invoke(interpreter, x)
        assert y.shape == shape
        np.testing.assert_allclose(y, core.wbmm_forward(x.astype(np.float64), table, window), rtol=1e-5, atol=1e-4)


def test_one_delegate_shared_by_two_interpreters_invoked_from_two_threads(wbmm_case):
    import threading

    model, x, expected = wbmm_case
    delegate = delegates.load(num_threads=2)
    interpreters = [Interpreter(model_content=model, experimental_delegates=[delegate],
                                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                    for _ in range(2)]
    for interpreter in interpreters:
        _invoke(interpreter, x)
    errors = []

    def hammer(interpreter):
        for _ in range(30):
            interpreter.invoke()
            y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            errors.append(float(np.abs(y - expected).max()))

    threads = [threading.Thread(target=hammer, args=(it,)) for it in interpreters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 60 and max(errors) <= 1e-4


def test_a_wbmm_op_the_delegate_cannot_run_fails_with_the_reason():
    import struct

    from converters.custom_ops import MAGIC
    from delegate_models import custom_op_model

    kernel = np.zeros((5, 5, 4), np.float32)
    newer_format = struct.pack("<6i", MAGIC, 99, 3, 3, 1, 0)  # a format version this build does not read
    model = custom_op_model("WBMM", (1, 6, 6, 4), kernel, newer_format)
    with pytest.raises((RuntimeError, ValueError), match="format version 99"):
        _invoke(Interpreter(model_content=model, experimental_delegates=[delegates.load()],
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                np.zeros((1, 6, 6, 4), np.float32))
