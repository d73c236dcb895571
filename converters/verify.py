"""Run .tflite models with the ai-edge-litert interpreter and decide whether two models agree.

Used before anything is written: the converter checks each .tflite against its
Keras model, the rewriter checks a rewritten .tflite against the original. It
holds the one tolerance policy of the project:

- float32: relative error <= 1e-4,
- float16 (weights): relative error <= 1e-2,
- int8 against a float reference (a Keras model): absolute error <= two quantisation
  steps of the output (2 * output scale),
- integer (int8/int16) against an integer reference (a .tflite against a .tflite, as the
  rewriter checks): the outputs are compared as integers, in steps: ``max_steps =
  max_i |ref_i - cand_i|`` on the raw integers, with the fraction of outputs that
  differ at all. No float rounding enters, so one step is one step (dequantising
  to float32 first once made a one-step difference read as 1.0000001 steps),

where, for one float output, ``max_abs = max_i |ref_i - cand_i|`` and the *relative error*
is ``max_rel = max_abs / max_i |ref_i|`` (the largest deviation measured against the
largest reference magnitude, not element by element, so outputs near zero do not
blow it up).

A reference output that is not finite (NaN or inf) is the reference's problem: the
comparison says so (``OutputComparison.reference_finite``) and, enforced, raises
:class:`UnsupportedModelError` naming the original model rather than blaming the
candidate.

It also holds the one delegate loader (``resolve_delegate`` for a given object or path,
``wbmm_delegate_factory`` for the project's C++ delegate) that the converter and the
rewriter use, and ``compare_models``, the one .tflite-against-.tflite verifier.

Not for timing (``converters.hostbench``) and not for conversion itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from converters.tflite_io import read_model_bytes
from wbmm_mobile import backends
from wbmm_mobile.errors import CorruptModelError, DelegateError, UnsupportedModelError, \
    VerificationError

ModelLike = Union[bytes, bytearray, str, os.PathLike]

FLOAT32_RELATIVE = 1e-4
FLOAT16_RELATIVE = 1e-2
INT8_STEPS = 2.0

KERNELS = ("xnnpack", "cpu")   # the backends this computer runs (wbmm_mobile.backends)


# ----------------------------------------------------------------------------- model loading and delegates

def resolve_delegate(delegate: Any):
    """The one way a delegate argument becomes a loaded delegate: None stays None, a loaded
    delegate object is used as it is, a path names an external delegate .so to load."""
    if delegate is None or not isinstance(delegate, (str, os.PathLike)):
        return delegate
    from ai_edge_litert.interpreter import load_delegate

    path = Path(delegate)
    if not path.is_file():
        raise DelegateError(f"{path}: delegate library not found")
    try:
        return load_delegate(str(path))
    except (ValueError, RuntimeError, OSError) as exc:
        raise DelegateError(f"{path}: could not load delegate: {exc}") from exc


def wbmm_delegate_factory(given: Any = None) -> tuple[Callable[[], Any] | None, str]:
    """(a function making a fresh wbmm delegate per interpreter, or None; what is used or why not).

    ``given`` (a loaded delegate or a path) wins; else the project's C++ delegate through
    ``delegates.load``. An unbuilt or broken library is not an error here: callers that
    need the delegate say in their report that they could not use it, and why.
    """
    if given is not None:
        loaded = resolve_delegate(given)
        return (lambda: loaded), "the given delegate"
    try:
        import delegates  # the C++ delegate's loader; numpy-free, imports nothing heavy
        load = delegates.load
    except (ImportError, AttributeError):
        return None, "the wbmm delegate's loader (delegates.load) is not available"
    try:
        load()
    except Exception as exc:  # noqa: BLE001 - an unbuilt or broken delegate only limits verification
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"the wbmm delegate could not be loaded ({why})"
    return load, "the wbmm delegate"


def load_interpreter(model: ModelLike, *, threads: int = 1, kernels: str = "xnnpack", delegate: Any = None):
    """An allocated ai-edge-litert Interpreter.

    ``kernels='xnnpack'`` is the runtime's default (XNNPACK applied to what it supports);
    ``'cpu'`` disables the default delegates so TFLite's own kernels run (``'builtin'``
    is the old spelling).
    ``delegate`` (a loaded delegate or the path of an external delegate .so) is applied
    on top, e.g. the project's C++ delegate for the custom ``WBMM`` ops.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kernels = backends.canonical(kernels, KERNELS, what="kernels")
    data = read_model_bytes(model)
    # A flatbuffer LiteRT refuses can leave its heap corrupted (found by tests/test_fuzz_tflite.py:
    # a later, unrelated model then crashes the process), so malformed files stop here first.
    from converters.tflite_io import litert_hazard, load_model
    try:
        load_model(data)
    except CorruptModelError as exc:
        raise CorruptModelError(f"the interpreter cannot load the model: {str(exc).removeprefix('<bytes>: ')}") \
            from None
    problem = litert_hazard(data)
    if problem:
        raise CorruptModelError(f"the interpreter cannot load the model: {problem}")
    resolver = OpResolverType.AUTO if kernels == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    loaded = resolve_delegate(delegate)
    try:
        interpreter = Interpreter(model_content=data, num_threads=threads,
                                  experimental_delegates=[loaded] if loaded is not None else None,
                                  experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        # Read once here, where a failure is a clean error: LiteRT decodes tensor names as
        # UTF-8 and raises UnicodeDecodeError (a ValueError) for names that are not.
        interpreter.get_input_details()
        interpreter.get_output_details()
    except (ValueError, RuntimeError) as exc:
        detail = _litert_reason(exc)
        if "custom" in detail.lower() or "Encountered unresolved custom op" in detail:
            raise UnsupportedModelError(
                f"the model has custom ops the interpreter cannot run without the wbmm delegate: {detail}") from exc
        raise CorruptModelError(f"the interpreter cannot load the model: {detail}") from exc
    return interpreter


# ----------------------------------------------------------------------------- inputs and running

@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and quantisation (scale 0.0 = not quantised) of one model input or output."""
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _specs(details: Sequence[dict]) -> list[TensorSpec]:
    specs = []
    for d in details:
        scale, zero_point = d.get("quantization", (0.0, 0))
        specs.append(TensorSpec(d["name"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]),
                                float(scale), int(zero_point)))
    return specs


def input_specs(model: ModelLike) -> list[TensorSpec]:
    interpreter = load_interpreter(model, kernels="cpu") if not hasattr(model, "get_input_details") else model
    return _specs(interpreter.get_input_details())


def output_specs(model: ModelLike) -> list[TensorSpec]:
    interpreter = load_interpreter(model, kernels="cpu") if not hasattr(model, "get_output_details") else model
    return _specs(interpreter.get_output_details())


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """float -> the integer dtype of ``spec`` with its scale and zero point (round half away, clip)."""
    info = np.iinfo(spec.dtype)
    q = np.round(np.asarray(x, np.float64) / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    return ((np.asarray(q, np.float64) - spec.zero_point) * spec.scale).astype(np.float32)


def _specs_of(model_or_signature: Any) -> list[TensorSpec]:
    """Input specs of a .tflite (bytes/path), a Keras model, or a list of (shape, dtype) / TensorSpec."""
    if isinstance(model_or_signature, (bytes, bytearray, str, os.PathLike)):
        return input_specs(model_or_signature)
    if hasattr(model_or_signature, "get_input_details"):
        return _specs(model_or_signature.get_input_details())
    if hasattr(model_or_signature, "inputs") and hasattr(model_or_signature, "predict"):   # a Keras model
        specs = []
        for tensor in model_or_signature.inputs:
            shape = tuple(1 if v is None else int(v) for v in tensor.shape)
            specs.append(TensorSpec(getattr(tensor, "name", "input"), shape, np.dtype(str(tensor.dtype))))
        return specs
    specs = []
    for item in model_or_signature:
        if isinstance(item, TensorSpec):
            specs.append(item)
        else:
            shape, dtype = item
            specs.append(TensorSpec("input", tuple(int(v) for v in shape), np.dtype(dtype)))
    return specs


def random_inputs(model_or_signature: Any, seed: int = 0, *, low: float = -1.0, high: float = 1.0,
                  batch: int | None = None) -> list[np.ndarray]:
    """Seeded uniform inputs in [low, high) with the dtypes and shapes the model expects.

    Float inputs are drawn directly. Quantised integer inputs (int8/uint8 with a scale) are
    drawn in float and quantised with the input's own scale and zero point, so
    ``dequantize(result, spec)`` is the float a reference model should see. ``batch``
    replaces a batch dimension of 1 or None.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in _specs_of(model_or_signature):
        shape = tuple(spec.shape)
        if batch is not None and shape:
            shape = (batch,) + shape[1:]
        if spec.quantized:
            arrays.append(quantize(rng.uniform(low, high, size=shape), spec))
        elif np.issubdtype(spec.dtype, np.floating):
            arrays.append(rng.uniform(low, high, size=shape).astype(spec.dtype))
        elif np.issubdtype(spec.dtype, np.integer):
            arrays.append(rng.integers(int(low), int(high) + 1, size=shape).astype(spec.dtype))
        elif spec.dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            raise UnsupportedModelError(f"input {spec.name!r} has dtype {spec.dtype}, which random_inputs cannot draw")
    return arrays


def run_tflite(model: ModelLike, inputs: Sequence[np.ndarray], threads: int = 1, kernels: str = "xnnpack",
               delegate: Any = None, *, dequantize_outputs: bool = False) -> list[np.ndarray]:
    """Invoke a .tflite once on ``inputs`` (in the model's input order) and return its outputs.

    A float array given for a quantised input is quantised with that input's parameters;
    with ``dequantize_outputs`` quantised outputs come back as float32.
    """
    interpreter = model if hasattr(model, "invoke") else load_interpreter(
        model, threads=threads, kernels=kernels, delegate=delegate)
    details = interpreter.get_input_details()
    if len(inputs) != len(details):
        raise UnsupportedModelError(f"the model has {len(details)} inputs, {len(inputs)} were given")
    try:
        for detail, spec, value in zip(details, _specs(details), inputs):
            value = np.asarray(value)
            if spec.quantized and np.issubdtype(value.dtype, np.floating):
                value = quantize(value, spec)
            if tuple(value.shape) != spec.shape:
                interpreter.resize_tensor_input(detail["index"], list(value.shape))
                interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], value.astype(spec.dtype, copy=False))
        interpreter.invoke()
        outputs = []
        for detail, spec in zip(interpreter.get_output_details(), _specs(interpreter.get_output_details())):
            value = np.array(interpreter.get_tensor(detail["index"]))
            outputs.append(dequantize(value, spec) if dequantize_outputs and spec.quantized else value)
    except (ValueError, RuntimeError) as exc:
        # A model LiteRT loads but cannot run (a tensor without data, inconsistent shapes).
        raise CorruptModelError(f"the interpreter cannot run the model: {_litert_reason(exc)}") from exc
    return outputs


def _litert_reason(exc: BaseException) -> str:
    """LiteRT's message on one line (it is sometimes several lines, sometimes empty)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:3]) or f"{type(exc).__name__} without a reason from LiteRT"


# ----------------------------------------------------------------------------- tolerances and comparison

@dataclass(frozen=True)
class Tolerance:
    """Pass when ``max_abs <= absolute`` (if set) or ``max_rel <= relative`` (if set); or, for
    integer outputs compared as integers, when ``max_steps <= steps`` (``scale`` then turns
    steps into the real-valued max_abs the report also gives)."""
    relative: float | None = None
    absolute: float | None = None
    description: str = ""
    steps: float | None = None
    scale: float = 0.0

    def accepts(self, max_abs: float, max_rel: float, max_steps: float | None = None) -> bool:
        if self.steps is not None and max_steps is not None:
            return max_steps <= self.steps
        ok = False
        if self.absolute is not None:
            ok = ok or max_abs <= self.absolute
        if self.relative is not None:
            ok = ok or max_rel <= self.relative
        return ok

    def __str__(self) -> str:
        if self.description:
            return self.description
        if self.steps is not None:
            return f"<= {self.steps:g} step(s)"
        return f"rel <= {self.relative:g}" if self.relative is not None else f"abs <= {self.absolute:g}"


def tolerance_for(precision: str, output_scale: float | None = None) -> Tolerance:
    """The project's policy: float32 1e-4 relative, float16 1e-2 relative, int8 two output steps
    (every int8 lowering meets it against the float model, the custom one included since its
    int8 op keeps the identity shortcut out of the table: see ``converters/lowerings/custom.py``)."""
    if precision == "float32":
        return Tolerance(relative=FLOAT32_RELATIVE, description=f"float32: rel <= {FLOAT32_RELATIVE:g}")
    if precision == "float16":
        return Tolerance(relative=FLOAT16_RELATIVE, description=f"float16: rel <= {FLOAT16_RELATIVE:g}")
    if precision == "int8":
        if not output_scale:
            raise ValueError("an int8 tolerance needs the output's quantisation scale")
        steps = INT8_STEPS * output_scale
        return Tolerance(absolute=steps, description=f"int8: abs <= {INT8_STEPS:g} steps = {steps:.3g}")
    raise ValueError(f"precision must be float32, float16 or int8, got {precision!r}")


def integer_tolerance(spec: TensorSpec, steps: float) -> Tolerance:
    """Integer outputs compared as integers: at most ``steps`` quantisation steps apart."""
    kind = np.dtype(spec.dtype).name
    return Tolerance(steps=steps, scale=spec.scale,
                     description=f"{kind}: <= {steps:g} step(s) of {spec.scale:.3g}, compared as integers")


def tolerances_for_model(precision: str, model: Any) -> list[Tolerance]:
    """One tolerance per output of a .tflite or a loaded interpreter (int8 reads each output's scale)."""
    specs = output_specs(model)
    return [tolerance_for(precision, spec.scale if spec.quantized else None)
            if precision == "int8" else tolerance_for(precision) for spec in specs]


@dataclass(frozen=True)
class OutputComparison:
    index: int
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    reference_max: float
    tolerance: Tolerance
    passed: bool
    max_steps: float | None = None           # integer outputs: largest difference in steps
    fraction_differing: float | None = None  # integer outputs: share of outputs not identical
    reference_finite: bool = True            # False: the reference itself gave NaN/inf

    def describe(self) -> str:
        if not self.reference_finite:
            return "the reference gives NaN/inf"
        if self.max_steps is not None:
            return f"max {self.max_steps:g} step(s), {self.fraction_differing:.2%} of outputs differ"
        return f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}"


@dataclass(frozen=True)
class VerificationResult:
    """Worst-case errors over all outputs (max_abs, max_rel; for integer outputs also max_steps
    and the fraction of outputs that differ) and the per-output details."""
    max_abs: float
    max_rel: float
    passed: bool
    tolerance: str
    outputs: list[OutputComparison] = field(default_factory=list)
    max_steps: float | None = None
    fraction_differing: float | None = None
    inputs: str = ""

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        if any(not o.reference_finite for o in self.outputs):
            return f"the reference (original) model gives NaN/inf on these inputs: {verdict}"
        if self.max_steps is not None:
            text = f"max {self.max_steps:g} step(s), {self.fraction_differing:.2%} of outputs differ"
            if any(o.max_steps is None for o in self.outputs):
                text += f", float outputs max rel {self.max_rel:.3g}"
            return f"{text} ({self.tolerance}): {verdict}"
        return f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} ({self.tolerance}): {verdict}"

    def to_dict(self) -> dict:
        data = {"max_abs": self.max_abs, "max_rel": self.max_rel, "passed": self.passed,
                "tolerance": self.tolerance,
                "outputs": [{"index": o.index, "shape": list(o.shape), "max_abs": o.max_abs, "max_rel": o.max_rel,
                             "reference_max": o.reference_max, "tolerance": str(o.tolerance), "passed": o.passed,
                             "max_steps": o.max_steps, "fraction_differing": o.fraction_differing,
                             "reference_finite": o.reference_finite}
                            for o in self.outputs]}
        if self.max_steps is not None:
            data["max_steps"] = self.max_steps
            data["fraction_differing"] = self.fraction_differing
        if self.inputs:
            data["inputs"] = self.inputs
        return data


def _compare_one(index: int, ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> OutputComparison:
    if tol.steps is not None and np.issubdtype(ref.dtype, np.integer) and np.issubdtype(cand.dtype, np.integer):
        # Integers stay integers: the difference in steps is exact, whatever the scale.
        diff = np.abs(ref.astype(np.int64) - cand.astype(np.int64))
        max_steps = int(diff.max()) if diff.size else 0
        differing = float(np.count_nonzero(diff)) / diff.size if diff.size else 0.0
        scale = tol.scale or 1.0
        ref_max = float(np.abs(ref.astype(np.int64)).max()) * scale if ref.size else 0.0
        max_abs = max_steps * scale
        max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
        return OutputComparison(index, tuple(ref.shape), max_abs, max_rel, ref_max, tol,
                                tol.accepts(max_abs, max_rel, max_steps), max_steps, differing)
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    ref_finite = np.isfinite(ref64)
    if not ref_finite.all():
        # The original itself gives inf/NaN here. The same inf/NaN in the candidate is agreement
        # (judge the finite rest); anything else cannot be judged, and that is the original's doing.
        same = (np.array_equal(ref_finite, np.isfinite(cand64)) and np.array_equal(np.isnan(ref64), np.isnan(cand64))
                and np.array_equal(ref64[np.isinf(ref64)], cand64[np.isinf(cand64)]))
        if not same:
            return OutputComparison(index, tuple(ref.shape), float("nan"), float("nan"), float("nan"), tol, False,
                                    reference_finite=False)
        ref64, cand64 = ref64[ref_finite], cand64[ref_finite]
    finite = bool(np.all(np.isfinite(cand64)))
    diff = np.abs(ref64 - cand64)
    max_abs = float(diff.max()) if diff.size else 0.0
    ref_max = float(np.abs(ref64).max()) if ref64.size else 0.0
    if not finite:
        max_abs = float("inf")
    max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    return OutputComparison(index, tuple(ref.shape), max_abs, max_rel, ref_max, tol,
                            finite and tol.accepts(max_abs, max_rel))


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
            tolerance: Tolerance | Sequence[Tolerance], *, enforce: bool = False,
            what: str = "candidate", reference_name: str = "the reference") -> VerificationResult:
    """Compare outputs pairwise. ``tolerance`` is one for all outputs or one per output.

    Integer outputs with a ``steps`` tolerance are compared as integers; everything else in
    float64. With ``enforce`` a failure raises :class:`VerificationError` naming ``what``, the
    output, the errors and the tolerance. Shape mismatches and a NaN/inf candidate always
    fail; a NaN/inf reference fails too but, enforced, raises UnsupportedModelError naming
    ``reference_name``: the candidate cannot be judged against it.
    """
    reference = [np.asarray(r) for r in reference]
    candidate = [np.asarray(c) for c in candidate]
    if len(reference) != len(candidate):
        raise VerificationError(f"{what}: {len(candidate)} outputs, the reference has {len(reference)}")
    tolerances = list(tolerance) if isinstance(tolerance, (list, tuple)) else [tolerance] * len(reference)
    if len(tolerances) != len(reference):
        raise ValueError(f"{len(tolerances)} tolerances for {len(reference)} outputs")
    results = []
    for index, (ref, cand, tol) in enumerate(zip(reference, candidate, tolerances)):
        if ref.shape != cand.shape:
            if enforce:
                raise VerificationError(f"{what}: output {index} has shape {cand.shape}, reference {ref.shape}")
            results.append(OutputComparison(index, tuple(cand.shape), float("inf"), float("inf"), 0.0, tol, False))
            continue
        results.append(_compare_one(index, ref, cand, tol))
    passed = all(r.passed for r in results)
    descriptions = sorted({str(t) for t in tolerances})
    stepped = [r for r in results if r.max_steps is not None]
    finite = [r for r in results if r.reference_finite]
    result = VerificationResult(max_abs=max((r.max_abs for r in finite), default=0.0),
                                max_rel=max((r.max_rel for r in finite), default=0.0),
                                passed=passed, tolerance="; ".join(descriptions), outputs=results,
                                max_steps=max((r.max_steps for r in stepped), default=None),
                                fraction_differing=max((r.fraction_differing for r in stepped), default=None))
    if enforce and not passed:
        bad = next(r for r in results if not r.passed)
        if not bad.reference_finite:
            raise UnsupportedModelError(
                f"{reference_name} gives NaN/inf on output {bad.index} for these inputs, so {what} cannot be "
                "checked against it: a problem of the original model, not of the result (pass other inputs "
                "with --inputs)")
        detail = (f"max {bad.max_steps:g} step(s), {bad.fraction_differing:.2%} of outputs differ"
                  if bad.max_steps is not None else
                  f"max abs {bad.max_abs:.3g}, max rel {bad.max_rel:.3g} (relative to max|ref| = "
                  f"{bad.reference_max:.3g})")
        raise VerificationError(f"{what} disagrees with the reference on output {bad.index}: {detail}, "
                                f"tolerance {bad.tolerance}")
    return result


def compare_models(reference: ModelLike, candidate: ModelLike, input_sets: Sequence[Sequence[np.ndarray]], *,
                   kernels: str = "cpu", make_delegate: Callable[[], Any] | None = None,
                   relative: float = FLOAT32_RELATIVE, steps: float = 1.0, enforce: bool = True,
                   what: str = "the rewritten model", reference_name: str = "the original model"
                   ) -> VerificationResult:
    """The one .tflite-against-.tflite verifier: both models on each input set, with ``kernels``
    (the candidate also with a fresh delegate from ``make_delegate``, for custom ops).

    Float outputs pass within ``relative``; integer outputs are compared as integers and pass
    within ``steps``. Returns the worst result over the sets (integer steps first, then
    relative error); with ``enforce`` the first failing set raises.
    """
    worst = None
    for inputs in input_sets:
        reference_out = run_tflite(reference, inputs, kernels=kernels)
        interpreter = load_interpreter(candidate, kernels=kernels,
                                       delegate=make_delegate() if make_delegate is not None else None)
        candidate_out = run_tflite(interpreter, inputs)
        tolerances = [integer_tolerance(s, steps) if s.quantized else
                      Tolerance(relative=relative, description=f"rel <= {relative:g}")
                      for s in output_specs(interpreter)]
        result = compare(reference_out, candidate_out, tolerances, enforce=enforce, what=what,
                         reference_name=reference_name)
        key = (result.max_steps or 0, result.max_rel)
        if worst is None or not result.passed or key > (worst.max_steps or 0, worst.max_rel):
            worst = result
            if not result.passed:
                break
    return worst


def verify_tflite_against_tflite(reference: ModelLike, candidate: ModelLike, *, precision: str = "float32",
                                 seed: int = 0, inputs: Sequence[np.ndarray] | None = None, kernels: str = "cpu",
                                 delegate: Any = None, enforce: bool = True, steps: float = INT8_STEPS
                                 ) -> VerificationResult:
    """Run two .tflite models on the same seeded inputs and compare: float outputs with the
    ``precision`` policy, integer outputs as integers within ``steps``."""
    if inputs is None:
        inputs = random_inputs(reference, seed)
    relative = FLOAT16_RELATIVE if precision == "float16" else FLOAT32_RELATIVE
    loaded = resolve_delegate(delegate)
    return compare_models(reference, candidate, [inputs], kernels=kernels,
                          make_delegate=(lambda: loaded) if loaded is not None else None,
                          relative=relative, steps=steps, enforce=enforce)
