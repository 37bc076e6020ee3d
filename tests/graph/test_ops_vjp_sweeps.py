"""Hypothesis sweeps over conv2d, max_pool2d and avg_pool2d: the VJP rule against central
finite differences of the op's NumPy reference, for drawn stride, padding, dilation and groups.
The fixed cases are in test_ops_vjp_cases.py."""

from __future__ import annotations

import _vjp_harness as _h  # a sibling helper (tests/conftest.py)
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from numbagrad.graph import ops as O
from numbagrad.graph.ops import get_op

SWEEP, _window_size, conv_configs = _h.SWEEP, _h._window_size, _h.conv_configs
_conv, check_vjp, make_array = _h._conv, _h.check_vjp, _h.make_array


@SWEEP
@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_vjp_sweep(config, seed):
    operands, attrs = config
    check_vjp(operands, _conv(**attrs), "conv2d", seed)


@st.composite
def pool_configs(draw, kind):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    attrs = {"kernel_size": (kh, kw), "stride": stride, "padding": padding}
    dilation = (1, 1)
    if kind == "max":
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        attrs["dilation"] = dilation
    else:
        attrs["count_include_pad"] = draw(st.booleans())
    h = _window_size(draw, dilation[0] * (kh - 1) + 1, padding[0])
    w = _window_size(draw, dilation[1] * (kw - 1) + 1, padding[1])
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w)
    return shape, attrs


@SWEEP
@given(pool_configs("max"), st.integers(0, 2**16))
def test_max_pool2d_vjp_sweep(config, seed):
    shape, attrs = config
    x = make_array(shape, "distinct", np.random.default_rng(seed))
    # With dilation a window can hold padding only (its max is -inf); PyTorch allows that too,
    # but it has no finite gradient to check.
    assume(np.isfinite(get_op("max_pool2d").reference(x, **_pool_attrs("max_pool2d", attrs))).all())
    check_vjp([(shape, "distinct")], lambda v: O.max_pool2d(v, **attrs), "max_pool2d", seed)


@SWEEP
@given(pool_configs("avg"), st.integers(0, 2**16))
def test_avg_pool2d_vjp_sweep(config, seed):
    shape, attrs = config
    check_vjp([(shape, "f")], lambda v: O.avg_pool2d(v, **attrs), "avg_pool2d", seed)


def _pool_attrs(op: str, attrs: dict) -> dict:
    """The op API's keyword names -> the registry's normalized attributes."""
    given_ = {("kernel" if k == "kernel_size" else k): v for k, v in attrs.items()}
    return get_op(op).make_attrs(given_)
