"""Run .tflite models with the ai-edge-litert interpreter and decide whether two models agree.

Used before anything is written: the converter checks each .tflite against its
Keras model, the rewriter checks a rewritten .tflite against the original. It
holds the one tolerance policy of the project:

- float32: relative error <= 1e-4,
- float16 (weights): relative error <= 1e-2,
- int8: absolute error <= two quantisation steps of the output (2 * output scale),

where, for one output, ``max_abs = max_i |ref_i - cand_i|`` and the *relative error*
is ``max_rel = max_abs / max_i |ref_i|`` (the largest deviation measured against the
largest reference magnitude, not element by element, so outputs near zero do not
blow it up). Quantised outputs are dequantised before comparison.

Not for timing (``converters.hostbench``) and not for conversion itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from wbmm_mobile import backends
from wbmm_mobile.errors import CorruptModelError, DelegateError, ModelNotFoundError, UnsupportedModelError, \
    VerificationError

ModelLike = Union[bytes, bytearray, str, os.PathLike]

FLOAT32_RELATIVE = 1e-4
FLOAT16_RELATIVE = 1e-2
INT8_STEPS = 2.0

KERNELS = ("xnnpack", "cpu")   # the backends this computer runs (wbmm_mobile.backends)
_TFLITE_IDENTIFIER = b"TFL3"


# ----------------------------------------------------------------------------- model loading

def read_model_bytes(model: ModelLike) -> bytes:
    """Bytes of a .tflite given as bytes or a path; clear errors for missing or non-.tflite files."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, name = bytes(model), "<bytes>"
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: no such model file")
        data, name = path.read_bytes(), str(path)
    # A flatbuffer .tflite carries its file identifier at bytes 4..8.
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        raise CorruptModelError(f"{name}: not a .tflite model (no 'TFL3' flatbuffer identifier)")
    return data


def _resolve_delegate(delegate: Any):
    """``delegate`` may be a loaded delegate object, or a path to an external delegate .so."""
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
    resolver = OpResolverType.AUTO if kernels == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    loaded = _resolve_delegate(delegate)
    try:
        interpreter = Interpreter(model_content=data, num_threads=threads,
                                  experimental_delegates=[loaded] if loaded is not None else None,
                                  experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in message[:3])
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
    return outputs


# ----------------------------------------------------------------------------- tolerances and comparison

@dataclass(frozen=True)
class Tolerance:
    """Pass when ``max_abs <= absolute`` (if set) or ``max_rel <= relative`` (if set)."""
    relative: float | None = None
    absolute: float | None = None
    description: str = ""

    def accepts(self, max_abs: float, max_rel: float) -> bool:
        ok = False
        if self.absolute is not None:
            ok = ok or max_abs <= self.absolute
        if self.relative is not None:
            ok = ok or max_rel <= self.relative
        return ok

    def __str__(self) -> str:
        return self.description or (f"rel <= {self.relative:g}" if self.relative is not None
                                    else f"abs <= {self.absolute:g}")


def tolerance_for(precision: str, output_scale: float | None = None) -> Tolerance:
    """The project's policy: float32 1e-4 relative, float16 1e-2 relative, int8 two output steps."""
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


def tolerances_for_model(precision: str, model: Any) -> list[Tolerance]:
    """One tolerance per output of a .tflite or a loaded interpreter (int8 reads each output's scale)."""
    specs = output_specs(model)
    return [tolerance_for(precision, spec.scale if spec.quantized else None) if precision == "int8"
            else tolerance_for(precision) for spec in specs]


@dataclass(frozen=True)
class OutputComparison:
    index: int
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    reference_max: float
    tolerance: Tolerance
    passed: bool


@dataclass(frozen=True)
class VerificationResult:
    """Worst-case errors over all outputs (max_abs, max_rel) and the per-output details."""
    max_abs: float
    max_rel: float
    passed: bool
    tolerance: str
    outputs: list[OutputComparison] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} ({self.tolerance}): {verdict}"

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "passed": self.passed,
                "tolerance": self.tolerance,
                "outputs": [{"index": o.index, "shape": list(o.shape), "max_abs": o.max_abs, "max_rel": o.max_rel,
                             "reference_max": o.reference_max, "tolerance": str(o.tolerance), "passed": o.passed}
                            for o in self.outputs]}


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray],
            tolerance: Tolerance | Sequence[Tolerance], *, enforce: bool = False,
            what: str = "candidate") -> VerificationResult:
    """Compare outputs pairwise (float64). ``tolerance`` is one for all outputs or one per output.

    With ``enforce`` a failure raises :class:`VerificationError` naming ``what``, the
    output, the errors and the tolerance. Shape mismatches and NaN/inf always fail.
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
        ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
        finite = bool(np.all(np.isfinite(cand64)))
        diff = np.abs(ref64 - cand64)
        max_abs = float(diff.max()) if diff.size else 0.0
        ref_max = float(np.abs(ref64).max()) if ref64.size else 0.0
        if not finite:
            max_abs = float("inf")
        max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
        results.append(OutputComparison(index, tuple(ref.shape), max_abs, max_rel, ref_max, tol,
                                        finite and tol.accepts(max_abs, max_rel)))
    passed = all(r.passed for r in results)
    descriptions = sorted({str(t) for t in tolerances})
    result = VerificationResult(max_abs=max((r.max_abs for r in results), default=0.0),
                                max_rel=max((r.max_rel for r in results), default=0.0),
                                passed=passed, tolerance="; ".join(descriptions), outputs=results)
    if enforce and not passed:
        bad = next(r for r in results if not r.passed)
        raise VerificationError(
            f"{what} disagrees with the reference on output {bad.index}: max abs {bad.max_abs:.3g}, "
            f"max rel {bad.max_rel:.3g} (relative to max|ref| = {bad.reference_max:.3g}), "
            f"tolerance {bad.tolerance}")
    return result


def verify_tflite_against_tflite(reference: ModelLike, candidate: ModelLike, *, precision: str = "float32",
                                 seed: int = 0, inputs: Sequence[np.ndarray] | None = None, kernels: str = "cpu",
                                 delegate: Any = None, enforce: bool = True) -> VerificationResult:
    """Run two .tflite models on the same seeded inputs and compare (int8: dequantised outputs,
    tolerance from the candidate's output scales)."""
    if inputs is None:
        inputs = random_inputs(reference, seed)
    ref_out = run_tflite(reference, inputs, kernels=kernels, dequantize_outputs=True)
    cand_interpreter = load_interpreter(candidate, kernels=kernels, delegate=delegate)
    cand_out = run_tflite(cand_interpreter, inputs, dequantize_outputs=True)
    tolerances = tolerances_for_model(precision, cand_interpreter)
    return compare(ref_out, cand_out, tolerances, enforce=enforce, what="the rewritten model")
