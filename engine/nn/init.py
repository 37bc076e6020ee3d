"""Parameter initializers, drawing from one seedable generator (``ng.manual_seed``)."""

from __future__ import annotations

import math

import numpy as np

from ...errors import NumbagradError

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator every initializer draws from (when none is passed)."""
    global _generator
    _generator = np.random.default_rng(seed)


def default_generator() -> np.random.Generator:
    return _generator


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        raise NumbagradError(f"fan in/out need a parameter of at least 2 dims, got {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gains of PyTorch's ``nn.init.calculate_gain``."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid")
    if nonlinearity in linear or nonlinearity.startswith("conv_transpose"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise NumbagradError(f"unknown nonlinearity {nonlinearity!r}")


def _fill(param, values: np.ndarray):
    """Write into a Parameter's ``data`` or into an ndarray, in place, keeping its dtype."""
    target = param if isinstance(param, np.ndarray) else param.data
    target[...] = values.astype(target.dtype)
    return param


def uniform_(param, a: float = 0.0, b: float = 1.0, generator=None):
    return _fill(param, (generator or _generator).uniform(a, b, param.shape))


def normal_(param, mean: float = 0.0, std: float = 1.0, generator=None):
    return _fill(param, (generator or _generator).normal(mean, std, param.shape))


def constant_(param, value: float):
    return _fill(param, np.full(param.shape, value))


def zeros_(param):
    return constant_(param, 0.0)


def ones_(param):
    return constant_(param, 1.0)


def xavier_uniform_(param, gain: float = 1.0, generator=None):
    fan_in, fan_out = _fans(param.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(param, -bound, bound, generator)


def xavier_normal_(param, gain: float = 1.0, generator=None):
    fan_in, fan_out = _fans(param.shape)
    return normal_(param, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(param, a, mode, nonlinearity) -> float:
    fan_in, fan_out = _fans(param.shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(mode)
    if fan is None:
        raise NumbagradError(f"mode must be 'fan_in' or 'fan_out', not {mode!r}")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(param, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    bound = math.sqrt(3.0) * _kaiming_std(param, a, mode, nonlinearity)
    return uniform_(param, -bound, bound, generator)


def kaiming_normal_(param, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    return normal_(param, 0.0, _kaiming_std(param, a, mode, nonlinearity), generator)


def default_init_(weight, bias=None, generator=None) -> None:
    """PyTorch's default for Linear and Conv2d: Kaiming-uniform with a=sqrt(5), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight, and the same bound for the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        bound = 1.0 / math.sqrt(_fans(weight.shape)[0])
        uniform_(bias, -bound, bound, generator)
