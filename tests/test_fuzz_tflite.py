"""Fuzzing corrupt .tflite files: seeded, bounded in time, in ``make test``.

Thousands of mutants (``tests/_fuzz.py``: flatbuffer field flips, offsets out of range,
wrong vtables, huge vectors, byte flips, truncation) of models made here by the real
TFLite converter (float32, int8, and their split and WBMM-custom-op rewrites) go
through:
- the library in this process: ``tflite_io.load_model_bytes`` and ``rewrite_model``
  (no verification: pure Python), thousands of them;
- LiteRT in worker processes that load many files each: ``converters.verify`` (the path
  ``convert`` verifies through) and ``rewrite_model`` with verification, and the wbmm
  delegate's loading; a worker that dies is a crash, pinned to the file it was on;
- the real CLI (``wbmm-mobile rewrite``) in subprocesses, a smaller number.
Each must end in success or a one-line error (``WbmmError`` in the library, exit code 2
on the command line), never a traceback and never a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from converters import tflite_io
from converters.rewrite import RewriteOptions, rewrite_model
from tests._fuzz import mutants
from wbmm_mobile.errors import OutputWriteError, UnsupportedModelError, WbmmError

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent
DELEGATE = REPO / "build" / "delegates" / "libwbmm_delegate.so"
SEED = 20261206
IN_PROCESS_MUTANTS = 5000
IN_PROCESS_BUDGET_S = 150.0
WORKER_MUTANTS = 1500         # through LiteRT, split over the load / rewrite+verify / delegate workers
CLI_MUTANTS = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[bytes]:
    """Small real models: a 7x7 depthwise conv + 1x1 conv in float32 and int8 (TFLite converter),
    and the float32 one rewritten by the split pass and to the WBMM custom op."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from converters.keras_convert import to_tflite

    inp = keras.Input((12, 12, 8), batch_size=1)
    out = keras.layers.Conv2D(8, 1, activation="relu")(keras.layers.DepthwiseConv2D(7, padding="same")(inp))
    model = keras.Model(inp, out)

    def representative():
        rng = np.random.default_rng(0)
        for _ in range(4):
            yield [rng.uniform(-1, 1, (1, 12, 12, 8)).astype(np.float32)]

    float32 = to_tflite(model)
    int8 = to_tflite(model, precision="int8", representative=representative)
    split = rewrite_model(float32, RewriteOptions(strategy="split", verify=False, progress=False)).model
    custom = rewrite_model(float32, RewriteOptions(strategy="custom", verify=False, progress=False)).model
    return [float32, int8, split, custom]


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


@pytest.mark.slow
def test_mutants_through_the_library_never_raise_a_traceback(corpus):
    """Load and rewrite (no verification) 5,000 seeded mutants in this process: each either
    succeeds or raises a WbmmError with a one-line message."""
    deadline = time.monotonic() + IN_PROCESS_BUDGET_S
    done, outcomes, tracebacks = 0, {"ok": 0, "error": 0}, []
    for index, description, data in mutants(SEED, corpus, IN_PROCESS_MUTANTS):
        if time.monotonic() > deadline:
            break
        try:
            model = tflite_io.load_model_bytes(data)
            tflite_io.model_to_bytes(model)
            result = rewrite_model(data, RewriteOptions(verify=False, progress=False))
            tflite_io.load_model_bytes(result.model)   # what we write must read back
            outcomes["ok"] += 1
        except WbmmError as exc:
            outcomes["error"] += 1
            if not _one_line(str(exc)):
                tracebacks.append(f"{description}: multi-line message {str(exc)[:300]!r}")
        except BaseException as exc:  # noqa: BLE001 - this is what the test looks for
            tracebacks.append(f"{description}: {''.join(traceback.format_exception(exc))[-1500:]}")
        done += 1
    assert not tracebacks, f"{len(tracebacks)} tracebacks, first:\n{tracebacks[0]}"
    assert done == IN_PROCESS_MUTANTS, f"only {done} mutants within {IN_PROCESS_BUDGET_S:.0f} s"
    assert outcomes["ok"] > 100 and outcomes["error"] > 1000, outcomes   # the mutants hit both paths


def _run_workers(files: list[Path], mode: str, delegate: str | None) -> tuple[dict, list[str], list[str]]:
    """Feed ``files`` to ``python -m tests._fuzz worker``; a worker that dies is restarted after
    the file it died on. Returns (outcome counts, crashes, tracebacks)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    counts = {"ok": 0, "error": 0}
    crashes, tracebacks = [], []
    pending = list(files)
    while pending:
        command = [sys.executable, "-m", "tests._fuzz", "worker", mode] + ([delegate] if delegate else [])
        feed = "".join(json.dumps({"path": str(p)}) + "\n" for p in pending)
        try:
            finished = subprocess.run(command, input=feed, capture_output=True, text=True, env=env, cwd=REPO,
                                      timeout=300)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the {mode} worker hung: {str(exc.stdout)[-500:]}")
        started, answered = None, set()
        for line in finished.stdout.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if "start" in entry:
                started = entry["start"]
                continue
            answered.add(entry["path"])
            if entry["outcome"] == "traceback":
                tracebacks.append(f"{entry['path']}: {entry['detail']}")
            else:
                counts[entry["outcome"]] += 1
                if entry["outcome"] == "error" and not _one_line(entry["detail"]):
                    tracebacks.append(f"{entry['path']}: multi-line message {entry['detail'][:300]!r}")
        if finished.returncode == 0 and len(answered) == len(pending):
            break
        died_on = started if started not in answered else None
        crashes.append(f"{mode}: worker exited {finished.returncode} on {died_on}: {finished.stderr[-800:]}")
        remaining = [p for p in pending if str(p) not in answered and str(p) != died_on]
        if len(remaining) == len(pending):
            break   # no progress at all: reported as a crash above
        pending = remaining
    return counts, crashes, tracebacks


def _write_mutants(corpus, folder: Path, seed: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, _description, data in mutants(seed, corpus, count):
        path = folder / f"m{index:05d}.tflite"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.parametrize("mode", ["load", "rewrite", "delegate"])
def test_mutants_through_litert_and_the_delegate_never_crash(corpus, tmp_path, mode):
    """LiteRT in worker processes: loading and running (``converters.verify``, what ``convert``
    verifies with), ``rewrite_model`` with verification, and loading with the wbmm delegate.
    A crashed worker is a failure; so is a traceback inside one."""
    delegate = None
    if mode == "delegate":
        if not DELEGATE.is_file():
            pytest.fail(f"{DELEGATE} is missing: `make delegate` builds it (make test does)")
        delegate = str(DELEGATE)
    seed = SEED + {"load": 1, "rewrite": 2, "delegate": 3}[mode]
    files = _write_mutants(corpus, tmp_path / "mutants", seed, WORKER_MUTANTS // 3)
    counts, crashes, tracebacks = _run_workers(files, "rewrite" if mode == "rewrite" else "load", delegate)
    assert not crashes, "\n".join(crashes)
    assert not tracebacks, f"{len(tracebacks)} tracebacks:\n" + "\n".join(t[-400:] for t in tracebacks[:8])
    assert counts["ok"] + counts["error"] == len(files)
    assert counts["error"] > 0


def test_mutants_through_the_cli_end_in_exit_0_or_2_with_one_line(corpus, tmp_path):
    """The real ``wbmm-mobile rewrite`` on a few mutants: exit 0, or exit 2 with exactly one
    ``wbmm-mobile: ...`` line on stderr; never a traceback, never a message naming the
    temporary ``.partial`` file."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    files = _write_mutants(corpus, tmp_path / "cli", SEED + 4, CLI_MUTANTS)
    codes = []
    for index, path in enumerate(files):
        extra = ["--no-verify"] if index % 2 else []
        result = subprocess.run([sys.executable, "-m", "wbmm_mobile.cli", "rewrite", str(path), "-o",
                                 str(tmp_path / "out" / f"{path.stem}.tflite"), *extra],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        codes.append(result.returncode)
        assert result.returncode in (0, 2), (path.name, result.returncode, result.stderr[-1500:])
        assert "Traceback" not in result.stderr and ".partial" not in result.stderr, result.stderr[-1500:]
        if result.returncode == 2:
            ours = [line for line in result.stderr.splitlines() if line.startswith("wbmm-mobile:")]
            assert len(ours) == 1, result.stderr[-1500:]
    assert 2 in codes


def test_non_finite_original_output_is_reported_as_the_original_s():
    """An original that outputs inf for the verification inputs: identical inf in the candidate is
    agreement; anything else is blamed on the original, not on the rewrite."""
    from converters.verify import Tolerance, compare

    reference = [np.array([1.0, np.inf, -np.inf, 2.0], dtype=np.float32)]
    assert compare(reference, [reference[0].copy()], Tolerance(relative=1e-4), enforce=True).passed
    near = [np.array([1.00001, np.inf, -np.inf, 2.0], dtype=np.float32)]
    assert compare(reference, near, Tolerance(relative=1e-4), enforce=True).passed
    with pytest.raises(UnsupportedModelError, match="gives NaN/inf on output 0 .* a problem of the original model"):
        compare(reference, [np.array([1.0, 5.0, -np.inf, 2.0], dtype=np.float32)], Tolerance(relative=1e-4),
                enforce=True, what="the rewritten model")
    # A finite original and a non-finite candidate is still the candidate's fault.
    from wbmm_mobile.errors import VerificationError
    with pytest.raises(VerificationError, match="the rewritten model disagrees"):
        compare([np.ones(3)], [np.array([1.0, np.inf, 1.0])], Tolerance(relative=1e-4), enforce=True,
                what="the rewritten model")


def test_write_failures_name_the_output_not_the_partial_file(corpus, tmp_path):
    model = tflite_io.load_model_bytes(corpus[0])
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    with pytest.raises(OutputWriteError) as caught:
        tflite_io.write_model(model, blocker / "out.tflite")      # a file where a folder should be
    assert str(blocker / "out.tflite") in str(caught.value) and ".partial" not in str(caught.value)
    assert not list(tmp_path.rglob("*.partial"))
    source = tmp_path / "in.tflite"
    source.write_bytes(corpus[0])
    from wbmm_mobile.cli import main
    code = main(["rewrite", str(source), "-o", str(blocker / "sub" / "out.tflite"), "--no-verify"])
    assert code == 2 and not list(tmp_path.rglob("*.partial"))


def _unreadable_file(tmp_path: Path) -> Path | None:
    """A file this process may not read: one of ours with mode 000 (unless we are root, whom
    that does not stop), else /proc/1/mem (denied even to root in a container)."""
    candidate = tmp_path / "secret.tflite"
    candidate.write_bytes(b"\0\0\0\0TFL3")
    candidate.chmod(0o000)
    for path in (candidate, Path("/proc/1/mem")):
        try:
            path.read_bytes()
        except PermissionError:
            return path
        except OSError:
            continue
    return None


def test_unreadable_model_is_a_permission_problem_not_not_found(tmp_path, capsys):
    path = _unreadable_file(tmp_path)
    if path is None:
        pytest.skip("no file here that this user may not read")
    from converters import verify
    from wbmm_mobile.cli import main
    for read in (tflite_io.read_model, verify.read_model_bytes):
        with pytest.raises(PermissionError, match="cannot be read: Permission denied") as caught:
            read(path)
        assert "Errno" not in str(caught.value)
    assert main(["rewrite", str(path), "-o", str(tmp_path / "never.tflite"), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert f"wbmm-mobile: permission denied: {path}: cannot be read" in err and "not found" not in err


@pytest.mark.toolchain     # runs the built delegate in a worker: the fast tier cannot see that from here
def test_a_wide_input_through_the_delegate_does_not_crash(corpus, tmp_path):
    """The WBMM custom-op model with its maps made 4,096 pixels wide (a valid model): run through
    the wbmm delegate in a worker process, it must give an answer, not kill the process (it did:
    a row of more than 64 column pieces, 3,073+ pixels on AVX-512, called blocks past the end of
    the kernels' block tables). Then, in this process, every ISA's answer at 4,096 and 3,073
    pixels wide against TFLite's builtin DEPTHWISE_CONV_2D (the unrewritten model, same shapes)."""
    if not DELEGATE.is_file():
        pytest.fail(f"{DELEGATE} is missing: `make delegate` builds it (make test does)")

    def widened(model_bytes: bytes, width: int) -> bytes:
        model = tflite_io.load_model_bytes(model_bytes)
        graph = model.subgraphs[0]
        for index in (*graph.inputs, *graph.outputs, graph.operators[0].outputs[0]):
            graph.tensors[index].shape = np.array([1, 16, width, 8], dtype=np.int32)
        return tflite_io.model_to_bytes(model)

    path = tmp_path / "wide.tflite"
    path.write_bytes(widened(corpus[3], 4096))
    counts, crashes, tracebacks = _run_workers([path], "load", str(DELEGATE))
    assert not crashes and not tracebacks and counts["ok"] == 1, (crashes, tracebacks)

    import delegates
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def run(model: bytes, x: np.ndarray, **options) -> np.ndarray:
        delegate = delegates.load(**options) if options else None
        interpreter = Interpreter(model_content=model, experimental_delegates=[delegate] if delegate else None,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        if delegate is not None:
            assert delegates.delegation_report(interpreter, delegate).claimed_ops == ("WBMM_DEPTHWISE",)
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    rng = np.random.default_rng(4096)
    for width in (4096, 3073):
        x = rng.uniform(-1, 1, (1, 16, width, 8)).astype(np.float32)
        expected = run(widened(corpus[0], width), x)
        for isa in delegates.available_isas():
            y = run(widened(corpus[3], width), x, isa=isa)
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4, err_msg=f"isa {isa} width {width}")
