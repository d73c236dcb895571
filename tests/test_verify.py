"""converters.verify: loading, seeded inputs, the tolerance policy and a model made wrong on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from converters.verify import (Tolerance, compare, dequantize, input_specs, load_interpreter, output_specs,
                               random_inputs, read_model_bytes, run_tflite, tolerance_for, tolerances_for_model,
                               verify_tflite_against_tflite)
from wbmm_mobile.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError, VerificationError


@pytest.fixture(scope="module")
def tiny_keras():
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(inp)
    x = keras.layers.Conv2D(6, 1)(x)
    return keras.Model(inp, x)


def _convert(model, int8: bool = False) -> bytes:
    from converters.keras_convert import to_tflite

    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)]

    return to_tflite(model, "int8" if int8 else "float32", representative)


@pytest.fixture(scope="module")
def tiny_fp32(tiny_keras):
    return _convert(tiny_keras)


def _scale_largest_constant(model: bytes, factor: float) -> bytes:
    """Multiply the largest float32 constant buffer of a .tflite by ``factor`` (a deliberately wrong model)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    index = max(range(len(tree.buffers)), key=lambda i: 0 if tree.buffers[i].data is None else len(tree.buffers[i].data))
    data = np.frombuffer(bytes(bytearray(tree.buffers[index].data)), np.float32) * factor
    tree.buffers[index].data = np.frombuffer(data.astype(np.float32).tobytes(), np.uint8)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_missing_and_non_model_files_raise_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such model file"):
        read_model_bytes(tmp_path / "absent.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(CorruptModelError, match="junk.tflite: not a .tflite"):
        load_interpreter(junk)


def test_fp32_model_matches_keras_on_both_kernel_sets(tiny_keras, tiny_fp32, tmp_path):
    inputs = random_inputs(tiny_fp32, seed=1)
    reference = [np.asarray(tiny_keras(inputs[0]))]
    path = tmp_path / "m.tflite"
    path.write_bytes(tiny_fp32)
    for kernels in ("xnnpack", "cpu"):
        outputs = run_tflite(path, inputs, kernels=kernels)
        result = compare(reference, outputs, tolerance_for("float32"), enforce=True)
        assert result.passed and result.max_rel <= 1e-4
        assert result.outputs[0].shape == (1, 8, 8, 6)


def test_random_inputs_are_seeded_and_typed(tiny_fp32):
    a = random_inputs(tiny_fp32, seed=7)
    b = random_inputs(tiny_fp32, seed=7)
    c = random_inputs(tiny_fp32, seed=8)
    assert a[0].dtype == np.float32 and a[0].shape == (1, 8, 8, 4)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert -1.0 <= a[0].min() and a[0].max() < 1.0
    assert random_inputs([((2, 3), "int32")], seed=0, low=-5, high=5)[0].dtype == np.int32


def test_relative_error_is_max_abs_over_max_reference():
    ref = np.array([10.0, -20.0, 0.0])
    cand = np.array([10.0, -20.0, 0.004])
    result = compare([ref], [cand], tolerance_for("float32"))
    assert result.max_abs == pytest.approx(0.004)
    assert result.max_rel == pytest.approx(0.004 / 20.0)     # not 0.004 / 0 at the zero element
    assert not result.passed                                   # 2e-4 > float32's 1e-4
    assert compare([ref], [cand], tolerance_for("float16")).passed


def test_float32_policy_boundary_and_enforce_message():
    ref = np.full((4,), 1.0)
    assert compare([ref], [ref + 0.5e-4], tolerance_for("float32")).passed
    assert not compare([ref], [ref + 2e-4], tolerance_for("float32")).passed
    assert compare([ref], [ref + 2e-4], tolerance_for("float16")).passed
    assert not compare([ref], [ref + 2e-2], tolerance_for("float16")).passed
    with pytest.raises(VerificationError, match=r"output 0: max abs 0.0002.*tolerance float32"):
        compare([ref], [ref + 2e-4], tolerance_for("float32"), enforce=True)


def test_int8_tolerance_is_two_steps_with_no_widening():
    ref = np.zeros((4,))
    assert compare([ref], [ref + 0.02], tolerance_for("int8", 0.01)).passed          # 2 steps
    assert not compare([ref], [ref + 0.021], tolerance_for("int8", 0.01)).passed
    with pytest.raises(TypeError):                     # no widening left: every int8 lowering meets 2 steps
        tolerance_for("int8", 0.01, table_rounding=0.015)


def test_nan_and_shape_mismatch_always_fail():
    ref = np.ones((2, 2))
    assert not compare([ref], [np.full((2, 2), np.nan)], Tolerance(relative=1e9)).passed
    assert not compare([ref], [np.ones((2, 3))], tolerance_for("float16")).passed
    with pytest.raises(VerificationError, match="shape"):
        compare([ref], [np.ones((2, 3))], tolerance_for("float16"), enforce=True)


def test_int8_policy_is_two_output_steps(tiny_keras):
    model = _convert(tiny_keras, int8=True)
    in_spec, out_spec = input_specs(model)[0], output_specs(model)[0]
    assert in_spec.dtype == np.int8 and in_spec.quantized and out_spec.quantized
    inputs = random_inputs(model, seed=2)
    assert inputs[0].dtype == np.int8
    outputs = run_tflite(model, inputs, dequantize_outputs=True)
    assert outputs[0].dtype == np.float32
    reference = [np.asarray(tiny_keras(dequantize(inputs[0], in_spec)))]
    tolerances = tolerances_for_model("int8", model)
    assert tolerances[0].absolute == pytest.approx(2 * out_spec.scale)
    result = compare(reference, outputs, tolerances, enforce=True)
    assert result.max_abs <= 2 * out_spec.scale
    # Shifting the reference by three steps must fail the policy.
    assert not compare([reference[0] + 3 * out_spec.scale], outputs, tolerances).passed


def test_corrupted_constant_is_caught(tiny_fp32):
    broken = _scale_largest_constant(tiny_fp32, 1.01)
    same = verify_tflite_against_tflite(tiny_fp32, tiny_fp32, seed=0)
    assert same.passed and same.max_abs == 0.0
    with pytest.raises(VerificationError, match="disagrees with the reference"):
        verify_tflite_against_tflite(tiny_fp32, broken, seed=0)
    result = verify_tflite_against_tflite(tiny_fp32, broken, seed=0, enforce=False)
    assert not result.passed and result.max_rel > 1e-4


# ----------------------------------------------------------------------------- integer verification (steps)

def test_integer_outputs_are_compared_in_steps_one_accepted_two_refused():
    from converters.verify import TensorSpec, integer_tolerance

    spec = TensorSpec("y", (1, 64), np.dtype(np.int8), 0.05, -7)
    reference = np.random.default_rng(0).integers(-120, 120, (1, 64)).astype(np.int8)
    one = reference.copy()
    one[0, :8] += 1
    two = one.copy()
    two[0, 3] += 1
    tolerance = integer_tolerance(spec, 1)
    accepted = compare([reference], [one], tolerance, enforce=True)
    assert accepted.passed and accepted.max_steps == 1 and accepted.fraction_differing == pytest.approx(8 / 64)
    assert accepted.max_abs == pytest.approx(0.05) and "1 step(s)" in accepted.summary()
    with pytest.raises(VerificationError, match=r"max 2 step\(s\), 12.50% of outputs differ"):
        compare([reference], [two], tolerance, enforce=True)


def test_one_step_is_one_step_where_float32_dequantising_made_it_more():
    """The RepLKNet-style failure: scale 0.6373247504234314, zero point 2, codes -60 and -59 are one
    step apart, yet dequantised in float32 they differ by more than the scale, so an absolute
    tolerance of one step refused them. Compared as integers they pass."""
    from converters.verify import TensorSpec, integer_tolerance

    spec = TensorSpec("y", (1, 1), np.dtype(np.int8), 0.6373247504234314, 2)
    reference, candidate = np.array([[-60]], np.int8), np.array([[-59]], np.int8)
    in_float32 = float(np.abs(dequantize(candidate, spec).astype(np.float64) - dequantize(reference, spec)).max())
    assert in_float32 > spec.scale                                    # the old comparison's false refusal
    assert not compare([dequantize(reference, spec)], [dequantize(candidate, spec)],
                       Tolerance(absolute=spec.scale)).passed
    assert compare([reference], [candidate], integer_tolerance(spec, 1), enforce=True).max_steps == 1


def test_int8_models_are_verified_as_integers(tiny_keras):
    model = _convert(tiny_keras, int8=True)
    result = verify_tflite_against_tflite(model, model, steps=1)
    assert result.passed and result.max_steps == 0 and result.fraction_differing == 0.0
    assert "compared as integers" in result.tolerance


def test_a_non_finite_original_is_the_originals_problem():
    reference = np.array([1.0, np.nan, 3.0])
    result = compare([reference], [np.array([1.0, 2.0, 3.0])], tolerance_for("float32"))
    assert not result.passed and not result.outputs[0].reference_finite
    assert "reference (original) model gives NaN/inf" in result.summary()
    with pytest.raises(UnsupportedModelError, match="the original model gives NaN/inf on output 0.*not of the"):
        compare([reference], [np.array([1.0, 2.0, 3.0])], tolerance_for("float32"), enforce=True,
                reference_name="the original model")
    # The same NaN in the candidate is agreement: the finite rest is what is judged.
    assert compare([reference], [reference.copy()], tolerance_for("float32"), enforce=True).passed
    with pytest.raises(Exception, match="disagrees"):
        compare([reference], [np.array([1.0, np.nan, 3.5])], tolerance_for("float32"), enforce=True)
