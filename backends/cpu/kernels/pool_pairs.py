"""Max pooling over 2x2 windows at stride 2, unpadded and undilated (LeNet's, VGG's, most
CNNs'): forward values, the taps of each window's first maximum, and the gradient from the
taps, the same results as pool.py's general kernels (a NaN wins, the last one; ties go to the
first maximum). The lowering picks them where they apply (``applies``).

Each window is four loads and three branchless compare-selects, so the row loops vectorize:
Numba compiles ``a or b`` to branches, which LLVM did not vectorize (4x slower), and a uint8
load or store beside the float ones stopped it too (taps are made as floats, then narrowed).
Kernels of their own, not branches in the general ones: a model with only such windows never
compiles the general scan (cold start), and beside the scatter's code the gradient's loop ran
2x slower.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .parallel import sized_kernel


def applies(op: str, kernel, stride, padding, dilation, in_hw: tuple[int, int]) -> bool:
    """Whether the pair kernels compute ``op`` for this window on an input of in_hw pixels (the
    gradient needs even sizes: then every input element lies in exactly one window)."""
    window = (tuple(kernel), tuple(stride), tuple(padding), tuple(dilation))
    even = in_hw[0] % 2 == 0 and in_hw[1] % 2 == 0
    return window == ((2, 2), (2, 2), (0, 0), (1, 1)) and (op != "max_pool2d_grad_taps" or even)


@njit(cache=True, inline="always")
def _pair_max(r0, r1, q, dt):
    """The first maximum of the 2x2 window at columns 2q, 2q+1 of rows r0, r1 and its tap, as
    pool._first_max_tap finds it (a NaN wins: the last one). Bitwise ``|`` and plain selects, no
    short-circuit branches: the loops that call this vectorize (4x over the branchy form)."""
    a, b, c, d = r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1]
    take = (b > a) | (b != b)
    best = b if take else a
    tap = dt(1) if take else dt(0)  # (in the values' type: any other measured 4x slower)
    take = (c > best) | (c != c)
    best = c if take else best
    tap = dt(2) if take else tap
    take = (d > best) | (d != d)
    return (d if take else best), (dt(3) if take else tap)


@njit(cache=True, inline="always")
def _pair_taps(r0, r1, taps, scratch):
    """taps[q] = the tap of the 2x2 window at columns 2q, 2q+1 of rows r0, r1. The taps are
    made in ``scratch`` (as long as taps, r0's dtype), then narrowed: with the uint8 store in
    the same loop LLVM did not vectorize it (4x slower)."""
    dt = scratch.dtype.type
    for q in range(taps.shape[0]):
        scratch[q] = _pair_max(r0, r1, q, dt)[1]
    for q in range(taps.shape[0]):
        taps[q] = np.uint8(scratch[q])


@njit(cache=True, inline="always")
def _pair_values(r0, r1, out):
    """out[q] = the maximum of the 2x2 window at columns 2q, 2q+1 of rows r0, r1."""
    dt = out.dtype.type
    for q in range(out.shape[0]):
        out[q] = _pair_max(r0, r1, q, dt)[0]


@njit(cache=True, inline="always")
def _pair_scatter(g, taps, r0, r1, scratch):
    """Rows r0, r1 of dL/dx under a row of 2x2 stride-2 windows: g[q] at column 2q + j of r0
    where taps[q] == j, of r1 where taps[q] == 2 + j, zeros elsewhere. The taps are widened
    into ``scratch`` first (as in _pair_taps: mixed with uint8 loads the loop did not
    vectorize)."""
    dt = r0.dtype.type
    for q in range(g.shape[0]):
        scratch[q] = dt(taps[q])
    zero = dt(0)
    for q in range(g.shape[0]):
        tap, v = scratch[q], g[q]
        r0[2 * q] = v if tap == 0 else zero
        r0[2 * q + 1] = v if tap == 1 else zero
        r1[2 * q] = v if tap == 2 else zero
        r1[2 * q + 1] = v if tap == 3 else zero


@sized_kernel(size_arg=0)
def max_pool2d_pairs(x, out):
    """out (N, C, H//2, W//2) = the maximum of each 2x2 window of x (N, C, H, W) at stride 2."""
    n_, c_ = x.shape[:2]
    for t in prange(n_ * c_):
        src, dst = x[t // c_, t % c_], out[t // c_, t % c_]
        for oh in range(out.shape[2]):
            _pair_values(src[2 * oh], src[2 * oh + 1], dst[oh])


@sized_kernel(size_arg=0)
def max_pool2d_taps_pairs(x, out):
    """out (N, C, H//2, W//2) uint8 = the tap (2i + j) of each 2x2 window's first maximum."""
    n_, c_ = x.shape[:2]
    scratch = np.empty((n_ * c_, out.shape[3]), dtype=x.dtype)  # (one allocation per call)
    for t in prange(n_ * c_):
        src, dst = x[t // c_, t % c_], out[t // c_, t % c_]
        for oh in range(out.shape[2]):
            _pair_taps(src[2 * oh], src[2 * oh + 1], dst[oh], scratch[t])


@sized_kernel(size_arg=2)
def max_pool2d_grad_taps_pairs(gy, taps, gx):
    """gx (N, C, H, W), H and W even, overwritten = gy placed at each window's tap, zeros
    elsewhere: selects, no scatter (2x faster)."""
    n_, c_ = gx.shape[:2]
    scratch = np.empty((n_ * c_, gy.shape[3]), dtype=gx.dtype)
    for t in prange(n_ * c_):
        g, tp, plane = gy[t // c_, t % c_], taps[t // c_, t % c_], gx[t // c_, t % c_]
        for oh in range(gy.shape[2]):
            _pair_scatter(g[oh], tp[oh], plane[2 * oh], plane[2 * oh + 1], scratch[t])
