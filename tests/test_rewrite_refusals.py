"""Layers the rewrite must leave alone, each with its reason in the report."""

import pytest

from tests._rewrite_case import Case


@pytest.mark.parametrize("spec, reason", [
    (dict(kernel=7, strides=2), "stride 2x2"),
    (dict(kernel=7, dilation=2), "dilation 2x2"),
    (dict(kernel=7, depth_multiplier=2), "depth multiplier 2"),
    (dict(kernel=3), "below --min-kernel 7"),
    (dict(kernel=7, dynamic=True), "dynamic shape"),
])
def test_left_alone_with_reason(spec, reason):
    case = Case(**spec).convert().rewrite(strategy="split")
    case.expect_left_alone(reason)
    assert case.report.rewritten_count == 0


def test_min_kernel_lowers_the_threshold():
    Case.depthwise(5).convert().rewrite(strategy="halo", min_kernel=5).expect_rewritten("halo") \
        .compare(rtol=1e-5, atol=1e-6)


def test_split_refuses_a_kernel_that_is_already_small():
    Case.depthwise(5).convert().rewrite(strategy="split", min_kernel=3).expect_left_alone("at most 25 taps")


def test_halo_refuses_a_matrix_past_the_limit(monkeypatch):
    from converters.rewrites import depthwise_halo
    monkeypatch.setattr(depthwise_halo, "MAX_MATRIX_BYTES", 1000)
    Case.depthwise(7).convert().rewrite(strategy="halo").expect_left_alone("halo matrix would need")
