"""Convolutions as implicit GEMMs on the tiled kernel of ``gemm.py`` (NCHW, groups on
``blockIdx.z``): the im2col matrix is never built, each tile load computes its address.

- forward: ``y[n,k,p] = sum_r W[k,r] * X[r,(n,p)]``: M = K/groups, N = batch*OH*OW,
  K = C/groups*KH*KW; X(r, (n,oh,ow)) = x[n, c, oh*s-p+i*d, ow*s-p+j*d] for r = (c,i,j).
- input gradient: ``dx[n,c,h,w] = sum_{k,i,j} W[k,c,i,j] * dy[n,k,oh,ow]`` where
  oh = (h+p-i*d)/s when that divides exactly: M = C/groups, N = batch*H*W, K = K/groups*KH*KW.
- weight gradient: ``dW[k,(c,i,j)] = sum_{(n,oh,ow)} dy[n,k,oh,ow] * x[...]``: M = K/groups,
  N = C/groups*KH*KW, K = batch*OH*OW, usually split over blocks (see ``gemm.plan_splits``).
- a 1x1, stride-1, unpadded convolution without groups is a plain batched GEMM per image
  (forward and input gradient) on the ``matmul`` mode.

Per-tap offsets (c*H*W, i*dh, j*dw, ...) come from a small int64 table built on the host once,
so the inner loads do no division. geo = (M, N, K, C, H, W, KOUT, OH, OW, SH, SW, PH, PW, CG,
KG, HAS_BIAS, KH, KW, DH, DW).
"""

from __future__ import annotations

import numpy as np

from .gemm import Gemm, matmul_mode, register_mode
from .pool import plane_position
from .runtime import jit


@jit(device=True)
def _nchw_index(col, plane, channels, channel):
    """Flat index in an (N, channels, plane) array of pixel ``col`` = (n, p) of ``channel``."""
    n = col // plane
    return (n * channels + channel) * plane + col - n * plane


@jit(device=True)
def _no_bias(geo, g, m, col):
    return -1


def _forward_mode():
    @jit(device=True)
    def a_prep(geo, g, m):  # weight row of output channel g*KG + m
        return ((g * geo[14] + m) * geo[2], 0, 0, 0)

    @jit(device=True)
    def a_index(geo, tab, info, r):
        return info[0] + r

    @jit(device=True)
    def b_prep(geo, g, col):  # col = (n, oh, ow)
        n, oh, ow = plane_position(col, geo[7], geo[8])
        return ((n * geo[3] + g * geo[13]) * geo[4] * geo[5], oh * geo[9] - geo[11],
                ow * geo[10] - geo[12], 0)  # fmt: skip

    @jit(device=True)
    def b_index(geo, tab, info, r):  # tab[r] = (c*H*W, i*dh, j*dw, -)
        ih = info[1] + tab[r, 1]
        iw = info[2] + tab[r, 2]
        if ih < 0 or ih >= geo[4] or iw < 0 or iw >= geo[5]:
            return -1
        return info[0] + tab[r, 0] + ih * geo[5] + iw

    @jit(device=True)
    def c_index(geo, g, m, col):
        return _nchw_index(col, geo[7] * geo[8], geo[6], g * geo[14] + m)

    @jit(device=True)
    def bias_index(geo, g, m, col):
        return g * geo[14] + m if geo[15] else -1

    return a_prep, a_index, b_prep, b_index, c_index, bias_index


def _grad_input_mode():
    @jit(device=True)
    def a_prep(geo, g, c):
        khkw = geo[16] * geo[17]
        return ((g * geo[14] * geo[13] + c) * khkw, 0, 0, 0)

    @jit(device=True)
    def a_index(geo, tab, info, r):  # tab[r, 3] = k*CG*KH*KW + i*KW + j
        return info[0] + tab[r, 3]

    @jit(device=True)
    def b_prep(geo, g, col):  # col = (n, h, w)
        n, h, w = plane_position(col, geo[4], geo[5])
        return ((n * geo[6] + g * geo[14]) * geo[7] * geo[8], h + geo[11], w + geo[12], 0)

    @jit(device=True)
    def b_index(geo, tab, info, r):  # tab[r] = (k*OH*OW, i*dh, j*dw, -)
        th = info[1] - tab[r, 1]
        tw = info[2] - tab[r, 2]
        if th < 0 or tw < 0:
            return -1
        oh = th // geo[9]
        ow = tw // geo[10]
        if oh * geo[9] != th or ow * geo[10] != tw or oh >= geo[7] or ow >= geo[8]:
            return -1
        return info[0] + tab[r, 0] + oh * geo[8] + ow

    @jit(device=True)
    def c_index(geo, g, c, col):
        return _nchw_index(col, geo[4] * geo[5], geo[3], g * geo[13] + c)

    return a_prep, a_index, b_prep, b_index, c_index, _no_bias


def _grad_weight_mode():
    @jit(device=True)
    def a_prep(geo, g, k):
        return ((g * geo[14] + k) * geo[7] * geo[8], 0, 0, 0)

    @jit(device=True)
    def a_index(geo, tab, info, r):  # r = (n, oh, ow) -> dy[n, g*KG + k, oh, ow]
        ohw = geo[7] * geo[8]
        n = r // ohw
        return info[0] + n * geo[6] * ohw + r - n * ohw

    @jit(device=True)
    def b_prep(geo, g, col):  # col = (c, i, j)
        c, i, j = plane_position(col, geo[16], geo[17])
        return ((g * geo[13] + c) * geo[4] * geo[5], i * geo[18] - geo[11],
                j * geo[19] - geo[12], 0)  # fmt: skip

    @jit(device=True)
    def b_index(geo, tab, info, r):  # r = (n, oh, ow)
        n, oh, ow = plane_position(r, geo[7], geo[8])
        ih = oh * geo[9] + info[1]
        iw = ow * geo[10] + info[2]
        if ih < 0 or ih >= geo[4] or iw < 0 or iw >= geo[5]:
            return -1
        return n * geo[3] * geo[4] * geo[5] + info[0] + ih * geo[5] + iw

    @jit(device=True)
    def c_index(geo, g, k, col):
        return (g * geo[14] + k) * geo[1] + col

    return a_prep, a_index, b_prep, b_index, c_index, _no_bias


forward_mode = register_mode("conv_forward", _forward_mode)
grad_input_mode = register_mode("conv_grad_input", _grad_input_mode)
grad_weight_mode = register_mode("conv_grad_weight", _grad_weight_mode)


def _geo(x_shape, w_shape, out_hw, attrs, m, n, k, has_bias=False) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    groups = attrs["groups"]
    kout, cg, kh, kw = w_shape
    _, c, h, w = x_shape
    return (m, n, k, c, h, w, kout, *out_hw, sh, sw, ph, pw, cg, kout // groups, int(has_bias),
            kh, kw, dh, dw)  # fmt: skip


def is_pointwise(w_shape, attrs) -> bool:
    """A 1x1 convolution that is a plain GEMM per image."""
    return (
        tuple(w_shape[2:]) == (1, 1)
        and attrs["stride"] == (1, 1)
        and attrs["padding"] == (0, 0)
        and attrs["groups"] == 1
    )


def forward_gemm(x_shape, w_shape, out_shape, attrs, dtype, has_bias, **plan) -> Gemm:
    """Plan ``y = conv2d(x, w) (+ b)``; call it with flat (x, w, y, b)."""
    nb, kout, oh, ow = out_shape
    if is_pointwise(w_shape, attrs):
        c, hw = x_shape[1], oh * ow
        geo = (kout, hw, c, 0, c, 1, c * hw, hw, 1, kout * hw, int(has_bias))
        return _swap(Gemm(matmul_mode(), geo, nb, dtype, True, False, **plan))
    groups = attrs["groups"]
    cg, kh, kw = w_shape[1:]
    (dh, dw), (_, _, h, w) = attrs["dilation"], x_shape
    tab = np.array(
        [(c * h * w, i * dh, j * dw, 0) for c in range(cg) for i in range(kh) for j in range(kw)],
        dtype=np.int64,
    )
    geo = _geo(x_shape, w_shape, (oh, ow), attrs, kout // groups, nb * oh * ow, cg * kh * kw,
               has_bias)  # fmt: skip
    return _swap(Gemm(forward_mode(), geo, groups, dtype, True, False, tab=tab, **plan))


def grad_input_gemm(g_shape, w_shape, x_shape, attrs, dtype, **plan) -> Gemm:
    """Plan ``dx = conv2d_grad_input(dy, w)``; call it with flat (dy, w, dx)."""
    nb, kout, oh, ow = g_shape
    c, h, w = x_shape[1:]
    if is_pointwise(w_shape, attrs):
        geo = (c, h * w, kout, 0, 1, c, kout * h * w, h * w, 1, c * h * w, 0)
        return _swap(Gemm(matmul_mode(), geo, nb, dtype, False, False, **plan))
    groups = attrs["groups"]
    cg, kh, kw = w_shape[1:]
    kg = kout // groups
    dh, dw = attrs["dilation"]
    tab = np.array(
        [
            (k * oh * ow, i * dh, j * dw, k * cg * kh * kw + i * kw + j)
            for k in range(kg)
            for i in range(kh)
            for j in range(kw)
        ],
        dtype=np.int64,
    )
    geo = _geo(x_shape, w_shape, (oh, ow), attrs, cg, nb * h * w, kg * kh * kw)
    return _swap(Gemm(grad_input_mode(), geo, groups, dtype, True, False, tab=tab, **plan))


def grad_weight_gemm(x_shape, g_shape, w_shape, attrs, dtype, **plan) -> Gemm:
    """Plan ``dW = conv2d_grad_weight(x, dy)``; call it with flat (x, dy, dW)."""
    nb, kout, oh, ow = g_shape
    groups = attrs["groups"]
    cg, kh, kw = w_shape[1:]
    geo = _geo(x_shape, w_shape, (oh, ow), attrs, kout // groups, cg * kh * kw, nb * oh * ow)
    return _swap(Gemm(grad_weight_mode(), geo, groups, dtype, True, True, **plan))


class _swap:
    """Adapts a Gemm whose A is the weight (or dy) to the op's operand order."""

    def __init__(self, gemm: Gemm) -> None:
        self.gemm = gemm

    def __getattr__(self, name):
        return getattr(self.gemm, name)

    def __call__(self, first, second, out, bias=None) -> None:
        self.gemm(second, first, out, bias)
