"""Initializers: statistics and bounds against the formulas and torch.nn.init, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn
from numbagrad.engine.nn import init
from numbagrad.errors import NumbagradError

torch = pytest.importorskip("torch")
TI = torch.nn.init

SHAPES = [(300, 200), (64, 32, 3, 3)]  # Linear- and Conv2d-shaped, ~60k and ~18k values


def _param(shape):
    return nn.Parameter(np.zeros(shape, np.float32))


def _torch_fans(shape):
    return TI._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("shape", [(3, 4), (8, 3, 5, 5), (2, 3, 4), (6, 1, 2, 2, 2)])
def test_fans_match_torch(shape):
    assert init._fans(shape) == _torch_fans(shape)


def test_fans_need_two_dims():
    with pytest.raises(NumbagradError, match="at least 2 dims"):
        init.xavier_uniform_(_param((5,)))


@pytest.mark.parametrize(
    "nonlinearity,param",
    [
        ("linear", None),
        ("conv1d", None),
        ("conv2d", None),
        ("conv3d", None),
        ("conv_transpose2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("leaky_relu", 0),
        ("selu", None),
    ],
)
def test_gains_match_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        TI.calculate_gain(nonlinearity, param), rel=1e-12
    )


def test_unknown_nonlinearity_and_mode():
    with pytest.raises(NumbagradError, match="unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(NumbagradError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(_param((4, 4)), mode="fan_avg")


def _check_normal(x, mean, std):
    assert x.dtype == np.float32
    assert abs(x.mean() - mean) < 0.05 * std
    assert x.std() == pytest.approx(std, rel=0.03)


def _check_uniform(x, lo, hi):
    assert x.dtype == np.float32
    assert lo <= x.min() and x.max() <= hi
    assert x.min() < lo + 0.01 * (hi - lo) and x.max() > hi - 0.01 * (hi - lo)
    assert abs(x.mean() - (lo + hi) / 2) < 0.02 * (hi - lo)
    assert x.std() == pytest.approx((hi - lo) / math.sqrt(12), rel=0.03)


def _torch_std(fn, shape, **kwargs):
    torch.manual_seed(0)
    t = torch.empty(shape)
    fn(t, **kwargs)
    return float(t.std())


@pytest.mark.parametrize("shape", SHAPES)
def test_normal_and_uniform(shape):
    ng.manual_seed(0)
    _check_normal(init.normal_(_param(shape), 0.5, 0.2).data, 0.5, 0.2)
    _check_normal(init.normal_(_param(shape)).data, 0.0, 1.0)
    _check_uniform(init.uniform_(_param(shape), -0.3, 0.7).data, -0.3, 0.7)
    _check_uniform(init.uniform_(_param(shape)).data, 0.0, 1.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_xavier(shape, gain):
    fan_in, fan_out = _torch_fans(shape)
    ng.manual_seed(1)
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    _check_uniform(init.xavier_uniform_(_param(shape), gain).data, -bound, bound)
    std = gain * math.sqrt(2 / (fan_in + fan_out))
    x = init.xavier_normal_(_param(shape), gain).data
    _check_normal(x, 0.0, std)
    assert x.std() == pytest.approx(_torch_std(TI.xavier_normal_, shape, gain=gain), rel=0.05)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity,a", [("relu", 0.0), ("leaky_relu", 0.1), ("tanh", 0)])
def test_kaiming(shape, mode, nonlinearity, a):
    fan = _torch_fans(shape)[0 if mode == "fan_in" else 1]
    std = TI.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    kw = {"a": a, "mode": mode, "nonlinearity": nonlinearity}
    ng.manual_seed(2)
    x = init.kaiming_normal_(_param(shape), **kw).data
    _check_normal(x, 0.0, std)
    assert x.std() == pytest.approx(_torch_std(TI.kaiming_normal_, shape, **kw), rel=0.05)
    bound = math.sqrt(3) * std
    x = init.kaiming_uniform_(_param(shape), **kw).data
    _check_uniform(x, -bound, bound)
    assert x.std() == pytest.approx(_torch_std(TI.kaiming_uniform_, shape, **kw), rel=0.05)


def test_kaiming_default_is_he_for_relu():
    # He et al.: std = sqrt(2 / fan_in) for ReLU (a=0 gives leaky_relu's gain sqrt(2)).
    ng.manual_seed(3)
    x = init.kaiming_normal_(_param((300, 200))).data
    assert x.std() == pytest.approx(math.sqrt(2 / 200), rel=0.03)


def test_constants():
    p = _param((3, 4))
    assert init.ones_(p) is p and np.all(p.data == 1)
    init.constant_(p, 0.25)
    assert np.all(p.data == 0.25) and p.data.dtype == np.float32
    init.zeros_(p)
    assert np.all(p.data == 0)


def test_ndarrays_are_filled_in_place():
    a = np.zeros((50, 40), np.float64)
    assert init.xavier_uniform_(a) is a
    assert a.dtype == np.float64 and np.abs(a).max() <= math.sqrt(6 / 90) and a.std() > 0
    init.constant_(a, 2.0)
    assert np.all(a == 2.0)


def test_manual_seed_makes_draws_reproducible():
    draws = []
    for seed in (5, 5, 6):
        ng.manual_seed(seed)
        draws.append(init.kaiming_uniform_(_param((8, 8))).data.copy())
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    ng.manual_seed(5)
    init.normal_(_param((2, 2)))  # a draw in between moves the global stream on ...
    after = init.kaiming_uniform_(_param((8, 8))).data
    assert not np.array_equal(after, draws[0])
    gen = np.random.default_rng(9)  # ... while an explicit generator is independent of it
    a = init.normal_(_param((4, 4)), generator=gen).data
    b = init.normal_(_param((4, 4)), generator=np.random.default_rng(9)).data
    np.testing.assert_array_equal(a, b)


def test_default_init_is_torchs_linear_default():
    ng.manual_seed(4)
    w, b = _param((300, 200)), _param((300,))
    init.default_init_(w, b)
    bound = 1 / math.sqrt(200)
    _check_uniform(w.data, -bound, bound)
    assert np.abs(b.data).max() <= bound and b.data.std() > 0
