"""The int8 ``custom`` lowering's two forms of a WBMM layer with its identity shortcut, side by side.

``folded`` (the form before this benchmark's commit): one int8 WBMM op whose table carries the
identity in its centre tap, quantised per channel with it. ``add`` (the converter's form now):
the int8 WBMM op on the table alone (its own per-channel scale, its own calibrated output
scale) followed by a builtin int8 ADD of x, as TFLite quantises ``X@M + X``.

With a following BatchNorm (scale s, shift t) ``add`` folds s into the table and bias and
scales the shortcut by an int8 MUL of x by s; ``add_bn_after`` is the other integer-only
form, the BN left as TFLite's int8 MUL and ADD of per-channel constants after the ADD.

For each layer (the tests' 10x12x8 w=4 layer with bias, and 1x56x56x96 w=7; each alone and
followed by a BatchNorm) the forms are
converted by ``convert_keras`` from the same Keras model and calibration data and run through
the wbmm delegate on the calibration samples: the largest difference to the Keras model, in
output steps of each file's own output scale; then both are timed through the delegate, one
thread, interleaved invoke by invoke (``converters.hostbench.time_round_robin``), medians of
``--runs`` rounds, the builtin ADD on TFLite's builtin kernels and on XNNPACK. Results: ``benchmarks/results/int8_custom_shortcut.json``. Run:

    make delegate && flock /tmp/wbmm-bench.lock .venv/bin/python benchmarks/int8_custom_shortcut.py

Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import delegates  # noqa: E402
from benchmarks.delegate import _interpreter, source_revision  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "int8_custom_shortcut.json"
# name: (shape, window, calibration samples, a BatchNorm follows)
LAYERS = {"test_10x12x8_w4": ((10, 12, 8), 4, 8, False), "56x56x96_w7": ((56, 56, 96), 7, 4, False),
          "test_10x12x8_w4_bn": ((10, 12, 8), 4, 8, True), "56x56x96_w7_bn": ((56, 56, 96), 7, 4, True)}
# form: (identity folded into the table, BatchNorm folded into the table)
FORMS = {"folded": (True, True), "add": (False, True)}
# With a BatchNorm, the other integer-only form: the BN left as TFLite's own int8 MUL + ADD of
# per-channel constants after the shortcut's ADD (the converter folds s into the table instead).
BN_FORMS = {**FORMS, "add_bn_after": (False, False)}


def convert(model, data, folded: bool, fold_batchnorm: bool) -> bytes:
    from converters.keras_convert import convert_keras
    from converters.lowerings.custom import LOWERING

    LOWERING.folds_shortcut_at_int8 = folded       # the old form: identity in the table's centre tap
    try:
        return convert_keras(model, lowering="custom", precision="int8", representative_data=data,
                             verify=False, fold_batchnorm=fold_batchnorm).tflite
    finally:
        LOWERING.folds_shortcut_at_int8 = False


def wbmm_model(shape, window: int, batchnorm: bool):
    import keras

    from wbmm_mobile.layers import WBMM

    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape, batch_size=1)
    y = WBMM(window, use_bias=True, name="w")(inputs)
    if not batchnorm:
        return keras.Model(inputs, y)
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(y))
    rng = np.random.default_rng(2)                     # as tests/test_convert.py's wbmm_bn_model
    for weight in bn.weights:
        low, high = (0.5, 2.0) if "variance" in weight.path or "gamma" in weight.path else (-0.3, 0.3)
        weight.assign(rng.uniform(low, high, weight.shape).astype(np.float32))
    return model


def steps_against_keras(model, data: bytes, samples: np.ndarray) -> float:
    from converters.verify import dequantize, input_specs, output_specs, quantize, run_tflite

    interpreter = _interpreter(data, kernels="builtin", delegate=delegates.load(num_threads=1))
    x_spec, y_spec = input_specs(interpreter)[0], output_specs(interpreter)[0]
    worst = 0.0
    for sample in samples:
        xq = quantize(sample[None], x_spec)
        reference = np.asarray(model(dequantize(xq, x_spec), training=False), np.float64)
        low, high = (np.array([-128, 127]) - y_spec.zero_point) * y_spec.scale
        got = dequantize(run_tflite(interpreter, [xq])[0], y_spec)
        worst = max(worst, float(np.abs(np.clip(reference, low, high) - got).max() / y_spec.scale))
    return worst


def main(argv=None) -> int:
    from converters import tflite_io
    from converters.hostbench import time_round_robin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed invokes per variant first (default: 3)")
    args = parser.parse_args(argv)
    results = {"revision": source_revision(), "threads": 1, "runs": args.runs, "layers": {}}
    for name, (shape, window, count, batchnorm) in LAYERS.items():
        model = wbmm_model(shape, window, batchnorm)
        samples = np.random.default_rng(3).uniform(-1, 1, (count, *shape)).astype(np.float32)
        files = {form: convert(model, samples, *how) for form, how in (BN_FORMS if batchnorm else FORMS).items()}
        entry = {form: {"ops": tflite_io.op_names(tflite_io.load_model(data)),
                        "max_steps_vs_keras": steps_against_keras(model, data, samples)}
                 for form, data in files.items()}
        # The builtin ops (ADD, MUL) on TFLite's builtin kernels, or on XNNPACK (the delegate first).
        interpreters = {f"{form}:{kernels}": _interpreter(data, kernels=kernels, delegate=delegates.load(num_threads=1))
                        for form, data in files.items() for kernels in ("builtin", "xnnpack")}
        for it in interpreters.values():
            it.set_tensor(it.get_input_details()[0]["index"],
                          np.random.default_rng(1).integers(-128, 128, (1, *shape)).astype(np.int8))
            for _ in range(args.warmup):
                it.invoke()
        for variant, ms in time_round_robin(interpreters, args.runs).items():
            form, kernels = variant.split(":")
            entry[form][f"median_ms_{kernels}"] = float(np.median(ms))
        for form in files:
            for kernels in ("builtin", "xnnpack"):
                entry[form][f"ratio_to_folded_{kernels}"] = (entry[form][f"median_ms_{kernels}"]
                                                             / entry["folded"][f"median_ms_{kernels}"])
        results["layers"][name] = entry
        print(name, json.dumps(entry))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
