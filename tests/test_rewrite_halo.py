"""The exact ``halo`` rewrite: tiled BATCH_MATMUL against Toeplitz-block matrices, rank <= 4."""

import numpy as np
import pytest

from converters import tflite_io
from converters.rewrites._tiled import toeplitz_matrices
from tests._rewrite_case import Case
from wbmm_mobile import core


def test_toeplitz_matrix_is_the_conv_on_one_patch():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((5, 3, 2))
    tile = (4, 6)
    patch = rng.standard_normal((1, tile[0] + 4, tile[1] + 2, 2))
    matrices = toeplitz_matrices(kernel, tile)
    for c in range(2):
        y = patch[0, :, :, c].reshape(-1) @ matrices[c]
        expected = core.depthwise_conv2d(patch, kernel, "valid")[0, :, :, c].reshape(-1)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, padding, size", [(7, "same", (12, 12)), (7, "valid", (12, 10)),
                                                   (13, "same", (10, 11)), (9, "same", (16, 16))])
def test_halo_float32_matches(kernel, padding, size):
    case = Case.depthwise(kernel, padding=padding, size=size).convert().rewrite(strategy="halo")
    case.expect_rewritten("halo").expect_ops({"BATCH_MATMUL": 1}, absent=("DEPTHWISE_CONV_2D",))
    model = tflite_io.load_model(case.result.model)
    assert max(len(t.shape) for t in model.subgraphs[0].tensors) <= 4
    case.compare(rtol=1e-5, atol=1e-6).compare(rtol=1e-5, atol=1e-6, kernels="xnnpack").reloads()


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_halo_activation(activation):
    Case.depthwise(7, activation=activation).convert().rewrite(strategy="halo").expect_rewritten("halo") \
        .compare(rtol=1e-5, atol=1e-6)


def test_halo_without_bias_or_activation_writes_the_output_directly():
    case = Case.depthwise(7, bias=False).convert().rewrite(strategy="halo")
    case.expect_ops({"BATCH_MATMUL": 1}, absent=("ADD",)).compare(rtol=1e-5, atol=1e-6)


def test_halo_float16_and_int8():
    case = Case.depthwise(7, quantize="float16").convert().rewrite(strategy="halo")
    case.expect_rewritten("halo").expect_ops({"BATCH_MATMUL": 1, "DEQUANTIZE": 1}).compare(rtol=1e-5, atol=1e-6)
    case = Case.depthwise(7, quantize="int8").convert().rewrite(strategy="halo", allow_float_islands=True)
    case.expect_rewritten("halo").expect_ops({"BATCH_MATMUL": 1, "QUANTIZE": 1}).compare_int8(steps=1).reloads()
    Case.depthwise(7, quantize="int8").convert().rewrite(strategy="halo").expect_left_alone("per-tensor scale")
