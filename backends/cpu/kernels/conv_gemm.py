"""Convolution as im2col + BLAS GEMM, for any stride, padding, dilation and groups.

im2col writes cols (C*KH*KW, m*P) for a chunk of m images (P = OH*OW output pixels), so each
group's GEMM is W_g (K/g, C/g*KH*KW) @ cols_g with a wide N dimension even when P is small
(LeNet), and the chunk bounds the scratch memory. The GEMM result (K/g, m*P) is scattered back
to NCHW (cheap next to im2col when C*KH*KW > K/g). The backward-input pass runs the transposed
GEMM and col2im; the weight gradient accumulates gy_g (K/g, m*P) @ cols_g^T over the chunks.
(The 1x1 and "full window" convs need no im2col: conv.py calls linalg directly for them.)
A conv whose output is its input divided by the stride copies whole planes of the stride's
phases instead of row by row (conv_phases.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import conv_phases as _p
from .linalg import matmul, matmul_accumulate
from .packed_gemm import COLUMNS, OWN_GEMM
from .parallel import sized_kernel


@njit(cache=True, inline="always")
def _valid_cols(j, w, sw, pw, dw, ow_):
    """The range [lo, hi) of output columns whose tap j lands inside a row of width w."""
    shift = pw - j * dw
    lo = max(0, -((-shift) // sw))
    hi = min(ow_, (w - 1 + shift) // sw + 1)
    return lo, max(lo, hi)


@sized_kernel(size_arg=1)
def im2col(x, cols, n0, m, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """cols[(c*kh + i)*kw + j, b*P + oh*OW + ow] = x[n0+b, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    (zero outside the input), for b < m. Indices, not slice fills, for the zeros: a slice
    costs more than the rows of small maps (see col2im)."""
    c_, h, w = x.shape[1], x.shape[2], x.shape[3]
    p_ = oh_ * ow_
    for r in prange(c_ * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        lo, hi = _valid_cols(j, w, sw, pw, dw, ow_)
        base = j * dw - pw
        for b in range(m):
            for oh in range(oh_):
                d0 = b * p_ + oh * ow_
                ih = oh * sh - ph + i * dh
                if ih < 0 or ih >= h:
                    for ow in range(ow_):
                        cols[r, d0 + ow] = 0
                    continue
                for ow in range(lo):
                    cols[r, d0 + ow] = 0
                for ow in range(hi, ow_):
                    cols[r, d0 + ow] = 0
                if sw == 1:  # (row slices: vectorized)
                    dst, src = cols[r, d0 + lo : d0 + hi], x[n0 + b, c, ih, lo + base : hi + base]
                    for q in range(hi - lo):
                        dst[q] = src[q]
                else:
                    for ow in range(lo, hi):
                        cols[r, d0 + ow] = x[n0 + b, c, ih, ow * sw + base]


@sized_kernel(size_arg=0)
def col2im(cols, gx, n0, m, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """The adjoint of im2col: gx[n0:n0+m] (overwritten) = sum of cols scattered to the input
    positions they were read from. One work item per (image, channel) plane: no write races.
    Indices, not row slices and a 2-d slice fill per plane: on the 2x2 planes of ResNet-18's
    last downsampling those cost several times the scatter (64 x 256 planes: 0.82 -> 0.18 ms
    serial)."""
    c_, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    p_ = oh_ * ow_
    valid = np.empty((kw, 2), np.int64)  # (its floor divisions cost more than a small plane)
    for j in range(kw):
        valid[j, 0], valid[j, 1] = _valid_cols(j, w, sw, pw, dw, ow_)
    for t in prange(m * c_):
        b = t // c_
        c = t % c_
        plane = gx[n0 + b, c]
        for r in range(h):
            for q in range(w):
                plane[r, q] = 0
        for i in range(kh):
            for j in range(kw):
                lo, hi = valid[j, 0], valid[j, 1]
                base = j * dw - pw
                row = (c * kh + i) * kw + j
                for oh in range(oh_):
                    ih = oh * sh - ph + i * dh
                    if 0 <= ih < h:
                        s0 = b * p_ + oh * ow_
                        if sw == 1:  # (row slices: vectorized)
                            d, src = plane[ih, lo + base : hi + base], cols[row, s0 + lo : s0 + hi]
                            for q in range(hi - lo):
                                d[q] += src[q]
                        else:
                            for ow in range(lo, hi):
                                plane[ih, ow * sw + base] += cols[row, s0 + ow]


@sized_kernel(size_arg=1)
def gather_channels(src, dst, n0, m, k0):
    """dst (kc, m*P) <- src[n0:n0+m, k0:k0+kc, :] from src (N, K, P)."""
    kc = dst.shape[0]
    p_ = src.shape[2]
    for t in prange(kc * m):
        k = t // m
        b = t % m
        s = src[n0 + b, k0 + k]
        d = dst[k, b * p_ : (b + 1) * p_]
        for p in range(p_):
            d[p] = s[p]


@sized_kernel(size_arg=0)
def scatter_channels(src, out, n0, m, k0, bias):
    """out[n0:n0+m, k0:k0+kc, :] <- src (kc, m*P) + bias[k0:k0+kc] (bias may be empty)."""
    kc = src.shape[0]
    p_ = out.shape[2]
    has_b = bias.shape[0] > 0
    for t in prange(kc * m):
        k = t // m
        b = t % m
        s = src[k, b * p_ : (b + 1) * p_]
        d = out[n0 + b, k0 + k]
        if has_b:
            bk = bias[k0 + k]
            for p in range(p_):
                d[p] = s[p] + bk
        else:
            for p in range(p_):
                d[p] = s[p]


@sized_kernel(size_arg=0)
def add_bias(out, bias):
    """out (N, K, P) += bias (K,)."""
    n_, k_, p_ = out.shape
    for t in prange(n_ * k_):
        d = out[t // k_, t % k_]
        bk = bias[t % k_]
        for p in range(p_):
            d[p] += bk


def chunk_images(n, rows, p, itemsize, budget):
    """How many images' scratch (rows x p each) fit in ``budget`` bytes (at least 1)."""
    return max(1, min(n, budget // max(1, rows * p * itemsize)))


def _phase_rows(x_shape, out_hw, sh, sw, kernel):
    """Rows per image of the phase planes ``_columns``/``_add_columns`` use (0: none)."""
    return x_shape[1] * sh * sh if phases_pay(x_shape[2:], out_hw, (sh, sw), kernel) else 0


def _chunks(n_, rows, kg, p_, dtype, budget, phase_rows=0):
    """Chunks of images for the im2col GEMMs: yields (n0, m, cols (rows, m*P), y (kg, m*P)),
    views of two scratch buffers allocated once for the largest chunk. ``budget`` bounds all
    of a chunk's scratch, the phase planes (``phase_rows`` x P per image) included: at batch
    128 a 1x1 stride-2 conv's y and phases alone were 48 MiB."""
    m = chunk_images(n_, rows + kg + phase_rows, p_, np.dtype(dtype).itemsize, budget)
    cols = np.empty(rows * m * p_, dtype=dtype)
    y = np.empty(kg * m * p_, dtype=dtype)
    for n0 in range(0, n_, m):
        mm = min(m, n_ - n0)
        yield (
            n0,
            mm,
            cols[: rows * mm * p_].reshape(rows, mm * p_),
            y[: kg * mm * p_].reshape(kg, mm * p_),
        )


def phases_pay(x_hw, out_hw, stride, kernel) -> bool:
    """Whether im2col and col2im go through phase planes (see ``_columns``)."""
    return kernel != (1, 1) and _p.applies(x_hw, out_hw, stride)


def _columns(x, cols, n0, m, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """im2col, as whole-plane copies (conv_phases.py) when the conv keeps x's geometry and
    reads more than one phase (a 1x1 conv reads one: splitting out all of them would copy
    stride^2 times what it reads)."""
    if not phases_pay(x.shape[2:], (oh_, ow_), (sh, sw), (kh, kw)):
        im2col(x, cols, n0, m, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_)
        return
    c, p_ = x.shape[1], oh_ * ow_
    if sh == 1:  # the phase is x itself
        xp = x[n0 : n0 + m].reshape(m, c, 1, p_)
    else:
        xp = _p.phase_scratch(m, c, sh, p_, x.dtype)
        _p.split_phases(x, xp, n0, sh)
    _p.im2col_phases(xp, cols, m, kh, kw, sh, ph, pw, dh, dw, oh_, ow_)


def _add_columns(cols, gx, n0, m, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_):
    """col2im, through phase planes (conv_phases.py) where ``_columns`` uses them."""
    if not phases_pay(gx.shape[2:], (oh_, ow_), (sh, sw), (kh, kw)):
        col2im(cols, gx, n0, m, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_)
        return
    gxp = _p.phase_scratch(m, gx.shape[1], sh, oh_ * ow_, gx.dtype)
    _p.col2im_phases(cols, gx, gxp, n0, kh, kw, sh, ph, pw, dh, dw, oh_, ow_)


def _dims(x_shape, w_shape, out_hw, groups):
    """(N, K, P, K/groups, C/groups*KH*KW, C*KH*KW) of a conv's GEMMs."""
    k_, cg, kh, kw = w_shape
    p_ = out_hw[0] * out_hw[1]
    return x_shape[0], k_, p_, k_ // groups, cg * kh * kw, x_shape[1] * kh * kw


def gemm_forward(x, w, b, out, sh, sw, ph, pw, dh, dw, groups, budget):
    kh, kw = w.shape[2:]
    oh_, ow_ = out.shape[2:]
    n_, k_, p_, kg, r_, rows = _dims(x.shape, w.shape, (oh_, ow_), groups)
    w2 = w.reshape(k_, r_)
    out3 = out.reshape(n_, k_, p_)
    phase_rows = _phase_rows(x.shape, (oh_, ow_), sh, sw, (kh, kw))
    for n0, mm, cv, yv in _chunks(n_, rows, kg, p_, x.dtype, budget, phase_rows):
        _columns(x, cv, n0, mm, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_)
        for g in range(groups):
            matmul(w2[g * kg : (g + 1) * kg], cv[g * r_ : (g + 1) * r_], yv, False, False)
            scatter_channels(yv, out3, n0, mm, g * kg, b)


def gemm_backward_input(gy, w, gx, sh, sw, ph, pw, dh, dw, groups, budget):
    kh, kw = w.shape[2:]
    oh_, ow_ = gy.shape[2:]
    n_, k_, p_, kg, r_, rows = _dims(gx.shape, w.shape, (oh_, ow_), groups)
    w2 = w.reshape(k_, r_)
    gy3 = gy.reshape(n_, k_, p_)
    phase_rows = _phase_rows(gx.shape, (oh_, ow_), sh, sw, (kh, kw))
    for n0, mm, cv, gv in _chunks(n_, rows, kg, p_, gy.dtype, budget, phase_rows):
        for g in range(groups):
            gather_channels(gy3, gv, n0, mm, g * kg)
            matmul(w2[g * kg : (g + 1) * kg], gv, cv[g * r_ : (g + 1) * r_], True, False)
        _add_columns(cv, gx, n0, mm, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_)


def transposed_weight_grad(rows: int, channels: int, dtype) -> bool:
    """Whether a weight gradient's GEMM computes gw_g^T = cols_g @ gy_g^T: where gw_g's rows
    (``rows`` = C/g*KH*KW) are too short for the packed GEMM's column blocks and its
    ``channels`` (K/g) are not, which BLAS's AVX2 kernels would compute (the CIFAR stem's
    64 x 27: 1.3-1.7 ms)."""
    return OWN_GEMM and np.dtype(dtype).itemsize == 4 and rows < COLUMNS <= channels


def gemm_backward_weight(x, gy, gw, sh, sw, ph, pw, dh, dw, groups, budget):
    kh, kw = gw.shape[2:]
    oh_, ow_ = gy.shape[2:]
    n_, k_, p_, kg, r_, rows = _dims(x.shape, gw.shape, (oh_, ow_), groups)
    gw2 = gw.reshape(k_, r_)
    gy3 = gy.reshape(n_, k_, p_)
    phase_rows = _phase_rows(x.shape, (oh_, ow_), sh, sw, (kh, kw))
    transposed = transposed_weight_grad(r_, kg, x.dtype)
    gwt = np.empty((groups, r_, kg), x.dtype) if transposed else gw2.reshape(groups, kg, r_)
    for n0, mm, cv, gv in _chunks(n_, rows, kg, p_, x.dtype, budget, phase_rows):
        _columns(x, cv, n0, mm, kh, kw, sh, sw, ph, pw, dh, dw, oh_, ow_)
        for g in range(groups):
            gather_channels(gy3, gv, n0, mm, g * kg)
            product = matmul if n0 == 0 else matmul_accumulate
            if transposed:
                product(cv[g * r_ : (g + 1) * r_], gv, gwt[g], False, True)
            else:
                product(gv, cv[g * r_ : (g + 1) * r_], gwt[g], False, True)
    if transposed:
        gw2.reshape(groups, kg, r_)[:] = gwt.transpose(0, 2, 1)
