"""Dropout with a counter-based random number generator.

A compiled graph is static, so a mask cannot come from a generator that advances between
calls. Instead each element's keep/drop bit is a pure function of (seed, step, element index):
``dropout(x, step)`` with ``step`` a float64 scalar that the graph increments after every run
(a ``state`` leaf and a ``graph.updates`` entry; see ``engine.trace.Tracer.step_counter``).

The hash is the splitmix64 stream: ``key = mix(mix(seed + G) ^ step)``, element ``i`` draws
``h = mix(key + i * G)`` (uint64, wrapping) and is kept when its top 53 bits are at least
``round(p * 2**53)``; kept elements are scaled by ``1 / (1 - p)``, dropped ones multiplied by 0
(as torch: a dropped NaN or Inf gives NaN, so dropout never hides one). The NumPy reference here,
the Numba CPU kernel and the CUDA kernel compute the same bits, so every backend draws the
same mask. The VJP is dropout of the gradient with the same seed and step: the mask is
recomputed, never stored.
"""

from __future__ import annotations

import numpy as np

from ...errors import DTypeError, OpError, ShapeError
from ..builder import Value, as_value
from .common import FLOAT_DTYPES, require_float
from .registry import OpDef, TensorType, register

GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2**64 / golden ratio)
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MANTISSA_SHIFT = 11  # keep the top 53 bits: uniform integers in [0, 2**53)
MAX_SEED = 2**63 - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (arrays wrap silently; scalars would warn)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, step: float) -> np.uint64:
    """The per-(seed, step) key of the element stream."""
    base = _mix(np.array([seed], np.uint64) + np.uint64(GOLDEN))
    return _mix(base ^ np.array([step], np.float64).astype(np.uint64))[0]


def keep_threshold(p: float) -> int:
    """An element is kept when ``hash >> 11 >= keep_threshold(p)``."""
    return int(round(p * 2.0**53))


def keep_scale(p: float) -> float:
    return 0.0 if p >= 1.0 else 1.0 / (1.0 - p)


def dropout_mask(shape, p: float, seed: int, step: float) -> np.ndarray:
    """The boolean keep-mask of ``dropout`` (True = kept), by the reference computation."""
    n = int(np.prod(shape))
    index = np.arange(n, dtype=np.uint64)
    h = _mix(stream_key(seed, step) + index * np.uint64(GOLDEN))
    return ((h >> np.uint64(MANTISSA_SHIFT)) >= np.uint64(keep_threshold(p))).reshape(shape)


def _reference(x, step, p, seed):
    keep = dropout_mask(x.shape, p, seed, float(np.asarray(step)))
    # x times 0 or the scale, as torch: a dropped NaN or Inf stays NaN.
    return x * np.where(keep, np.asarray(keep_scale(p), x.dtype), np.zeros((), x.dtype))


def _infer(types, attrs) -> TensorType:
    x, step = types
    require_float(x)
    if step.shape != () or step.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"dropout: step must be a float scalar, got {step.dtype}{step.shape}")
    if step.dtype != "float64":
        raise DTypeError("dropout: step must be float64 (float32 counts exactly to 2**24 only)")
    return TensorType(x.shape, x.dtype)


def _normalize(attrs: dict) -> dict:
    p, seed = float(attrs["p"]), int(attrs["seed"])
    if not 0.0 <= p <= 1.0:
        raise OpError(f"dropout probability must be in [0, 1], got {attrs['p']}")
    if not 0 <= seed <= MAX_SEED:
        raise OpError(f"dropout seed must be in [0, 2**63), got {attrs['seed']}")
    return {"p": p, "seed": seed}


register(
    OpDef(
        name="dropout",
        arity=(2, 2),
        infer=_infer,
        reference=_reference,
        # Linear in x with the same mask: the gradient is dropout of g, same seed and step.
        vjp=lambda ctx, g: [
            g.builder.emit("dropout", [g, ctx.input(1)], **ctx.attrs) if ctx.needs(0) else None,
            None,
        ],
        category="opaque",
        attrs={"p": 0.5, "seed": 0},
        normalize=_normalize,
        flops=lambda ins, out, attrs: 12 * int(np.prod(out.shape)),
        doc="inputs: x, step (float64 scalar); zero each element with probability p, scale "
        "the rest by 1/(1-p); the mask is a hash of (seed, step, element index)",
    )
)


def dropout(x, step, p: float = 0.5, seed: int = 0) -> Value:
    """Training-mode dropout of ``x`` at ``step`` (a float64 scalar Value that changes every
    run, e.g. ``Tracer.step_counter()``). Same (seed, step) -> same mask on every backend."""
    x = as_value(x)
    return x.builder.emit("dropout", [x, as_value(step)], p=p, seed=seed)


__all__ = ["dropout", "dropout_mask", "keep_scale", "keep_threshold", "stream_key"]
