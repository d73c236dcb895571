"""The model zoo: stage layout, op counts of the WBMM model and its 13x13 twin, weights
shared between the twins, forward passes at small inputs, the single-layer models.

Float32 tolerance for whole models: outputs are O(1) after ~100 layers of float32
arithmetic, rounding differences stay near 1e-5; rtol=atol=1e-4 leaves margin and
is still 1000x below the differences a wrong op produces (asserted below).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from wbmm_mobile import core, zoo
from wbmm_mobile.layers import WBMM

MODEL_TOL = dict(rtol=1e-4, atol=1e-4)
# Keras's own .keras saving calls np.array(variable) the numpy-2 deprecated way; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning")


@pytest.fixture(scope="module")
def twins():
    """The demo configuration at 64x64 (maps 16, 8, 4, 2 per stage), both kinds, same seed."""
    return {kind: zoo.wbmm_p_like((64, 64, 3), 10, zoo.SMALL_DEPTHS, zoo.SMALL_DIMS, kind=kind, seed=3)
            for kind in zoo.KINDS}


def test_stage_layout_of_p_and_small():
    assert zoo.stage_layout(zoo.P_DEPTHS) == (("D", "D"), ("W", "D"), ("W", "D", "W", "D", "W", "D"), ("W+", "W+"))
    assert zoo.stage_layout(zoo.SMALL_DEPTHS) == (("D",), ("W", "D"), ("W", "D"), ("W+", "W+"))
    with pytest.raises(ValueError):
        zoo.stage_layout((2, 2, 6))


def test_op_layout_of_both_kinds(twins):
    layout = zoo.stage_layout(zoo.SMALL_DEPTHS)
    n_w = sum(op.startswith("W") for stage in layout for op in stage)          # 4
    n_d = sum(op == "D" for stage in layout for op in stage)                   # 3
    n_branch = sum(op == "W+" for stage in layout for op in stage)             # 2
    wbmm, dw13 = zoo.count_ops(twins["wbmm"]), zoo.count_ops(twins["dw13"])
    assert (n_w, n_d, n_branch) == (4, 3, 2)
    assert wbmm.wbmm == n_w and wbmm.depthwise_of(13) == 0
    assert dw13.wbmm == 0 and dw13.depthwise_of(13) == n_w
    for counts in (wbmm, dw13):
        assert counts.depthwise_of(3) == n_d + n_branch and counts.depthwise_of(5) == n_branch
    # The 'W' ops sit at the same places, under the same block names.
    w_names = sorted(layer.name[:-len("_wbmm")] for layer in twins["wbmm"].layers if isinstance(layer, WBMM))
    dw_names = sorted(layer.name[:-len("_dw13")] for layer in twins["dw13"].layers
                      if isinstance(layer, keras.layers.DepthwiseConv2D) and tuple(layer.kernel_size) == (13, 13))
    assert w_names == dw_names == ["s2_b0", "s3_b0", "s4_b0", "s4_b1"]
    for layer in twins["wbmm"].layers:
        if isinstance(layer, WBMM):
            assert layer.window == (7, 7) and layer.use_shortcut and not layer.use_bias


def test_parameters_differ_only_by_the_w_op_weights(twins):
    """Same seed: every non-'W' weight is identical, and each twin kernel is its WBMM table in
    kernel layout, so the parameter counts (C*169 either way) are equal too."""
    by_name = {kind: {layer.name: layer for layer in model.layers} for kind, model in twins.items()}
    w_params = 0
    for name, layer in by_name["wbmm"].items():
        if isinstance(layer, WBMM):
            twin = by_name["dw13"][name[:-len("_wbmm")] + "_dw13"]
            table = layer.table.numpy()
            np.testing.assert_array_equal(twin.kernel.numpy()[..., 0], core.table_to_kernel(table, layer.window))
            w_params += table.size
            continue
        other = by_name["dw13"][name]
        assert type(other) is type(layer)
        for a, b in zip(layer.weights, other.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert w_params == 169 * (64 + 128 + 256 + 256)
    assert twins["wbmm"].count_params() == twins["dw13"].count_params()


def test_forward_at_64x64_and_the_twins_differ(twins):
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    outputs = {kind: np.asarray(model(x)) for kind, model in twins.items()}
    for out in outputs.values():
        assert out.shape == (2, 10) and np.all(np.isfinite(out))
        assert 0.1 < out.std() < 100
    # Stage 2 is 8x8 with 7x7 windows: WBMM is not the 13x13 conv there (nor is the identity in the twin).
    assert np.abs(outputs["wbmm"] - outputs["dw13"]).max() > 1e-2


def test_twin_equals_wbmm_when_every_map_is_one_window():
    """At 28x28 input the stage maps are 7, 4, 2 and 1 pixels (stem /4, then /2): no map exceeds
    the 7x7 window, so WBMM(x) == DW13(x) + x (single-window theorem). Adding the identity to the
    centre tap of every twin kernel must then reproduce the WBMM model end to end."""
    kwargs = dict(input_shape=(28, 28, 3), num_classes=5, depths=zoo.SMALL_DEPTHS, dims=(16, 32, 32, 48), seed=11)
    wbmm = zoo.wbmm_p_like(kind="wbmm", **kwargs)
    twin = zoo.wbmm_p_like(kind="dw13", **kwargs)
    x = np.random.default_rng(1).normal(size=(3, 28, 28, 3)).astype("float32")
    before = np.asarray(twin(x))
    for layer in twin.layers:
        if layer.name.endswith("_dw13"):
            kernel = layer.kernel.numpy()
            kernel[6, 6] += 1.0
            layer.kernel.assign(kernel)
    expected = np.asarray(wbmm(x))
    np.testing.assert_allclose(np.asarray(twin(x)), expected, **MODEL_TOL)
    assert np.abs(before - expected).max() > 1e-2        # without the identity they differ


def test_randomized_state_is_seeded_and_non_trivial():
    model = zoo.wbmm_p_like((32, 32, 3), 4, (1, 1, 1, 1), (16, 16, 16, 16), seed=5)
    same = zoo.wbmm_p_like((32, 32, 3), 4, (1, 1, 1, 1), (16, 16, 16, 16), seed=5)
    other = zoo.wbmm_p_like((32, 32, 3), 4, (1, 1, 1, 1), (16, 16, 16, 16), seed=6)
    for a, b in zip(model.weights, same.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, other.weights))
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns
    for bn in bns:
        assert np.abs(bn.moving_mean.numpy()).max() > 0.01
        assert np.abs(bn.moving_variance.numpy() - 1).max() > 0.01
    scales = [layer.gamma.numpy() for layer in model.layers if layer.name.endswith("_layer_scale")]
    assert scales and min(s.min() for s in scales) >= 0.1        # not 1e-6: blocks are not identities


def test_full_p_parameter_count_is_close_to_the_paper():
    """docs/WBMM.md: P has 10.6M parameters; our reading of the description gives 10.67M (within 1%)."""
    model = zoo.wbmm_p_like(kind="wbmm", randomize=False)
    assert abs(model.count_params() - 10.6e6) / 10.6e6 < 0.01
    counts = zoo.count_ops(model)
    assert counts.wbmm == 6 and counts.depthwise_of(3) == 8 and counts.depthwise_of(5) == 2


def test_width_multiplier_and_refusals():
    model = zoo.wbmm_p_like((32, 32, 3), 4, (1, 1, 1, 1), (64, 128, 256, 512), width_multiplier=0.25, randomize=False)
    table_channels = sorted(layer.table.shape[0] for layer in model.layers if isinstance(layer, WBMM))
    assert table_channels == [32, 64, 128]           # depth-1 stages: S1 'D', then 'W' in S2, S3 and S4
    with pytest.raises(ValueError):
        zoo.wbmm_p_like(kind="dw7")
    with pytest.raises(ValueError):
        zoo.single_layer_model("conv", (8, 8, 2), 3)


def test_small_model_keras_round_trip(tmp_path, twins):
    path = tmp_path / "small.keras"
    twins["wbmm"].save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(twins["wbmm"](x)))


@pytest.mark.parametrize("kind, shape, size", [
    ("depthwise", (12, 10, 4), 5), ("depthwise", (9, 9, 3), 13), ("wbmm", (12, 10, 4), 7), ("wbmm", (9, 11, 2), (3, 5)),
])
def test_single_layer_models_match_numpy(kind, shape, size):
    model = zoo.single_layer_model(kind, shape, size, seed=1)
    assert model.input_shape == (1, *shape) and model.output_shape == (1, *shape)
    layer = model.layers[-1]
    x = np.random.default_rng(3).normal(size=(1, *shape)).astype("float32")
    if kind == "depthwise":
        assert tuple(layer.kernel_size) == core.as_window(size) and not layer.use_bias
        expected = core.depthwise_conv2d(np.float64(x), np.float64(layer.kernel.numpy()[..., 0]), "same")
    else:
        assert isinstance(layer, WBMM) and layer.window == core.as_window(size) and layer.use_shortcut
        expected = core.wbmm_forward(np.float64(x), np.float64(layer.table.numpy()), layer.window)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-5)
    again = zoo.single_layer_model(kind, shape, size, seed=1)
    np.testing.assert_array_equal(again.weights[0].numpy(), layer.weights[0].numpy())


def _bn_params(layer) -> core.BatchNormParams:
    return core.BatchNormParams(gamma=np.float64(layer.gamma.numpy()), beta=np.float64(layer.beta.numpy()),
                                mean=np.float64(layer.moving_mean.numpy()),
                                var=np.float64(layer.moving_variance.numpy()), eps=layer.epsilon)


def test_stage4_op_folds_into_one_table_at_224():
    """The docstring's claim: at 224x224 the stage-4 map is 7x7 = one window, so
    BN(WBMM(x) + BN3(dw3(x)) + BN5(dw5(x))) is one deployed table + bias (core.fold_*)."""
    model = zoo.wbmm_p_small("wbmm", seed=4)
    assert model.get_layer("down4_ln").output.shape[1:3] == (7, 7)
    sub = keras.Model(model.get_layer("down4_ln").output, model.get_layer("s4_b0_op_bn").output)
    wbmm = model.get_layer("s4_b0_wbmm")
    table = np.float64(wbmm.table.numpy())
    shifts = np.zeros(table.shape[0])
    for size in (3, 5):
        scale, shift = _bn_params(model.get_layer(f"s4_b0_branch_dw{size}_bn")).scale_shift()
        kernel = np.float64(model.get_layer(f"s4_b0_branch_dw{size}").kernel.numpy()[..., 0])
        table = core.fold_branch(table, wbmm.window, kernel * scale)
        shifts = shifts + shift
    folded_table, folded_bias = core.fold_batchnorm(table, wbmm.window, _bn_params(model.get_layer("s4_b0_op_bn")),
                                                    shortcut=True, bias=shifts)
    x = np.random.default_rng(5).normal(size=(2, 7, 7, 256)).astype("float32")
    deployed = core.wbmm_forward(np.float64(x), folded_table, wbmm.window, shortcut=False, bias=folded_bias)
    np.testing.assert_allclose(np.asarray(sub(x)), deployed, **MODEL_TOL)
