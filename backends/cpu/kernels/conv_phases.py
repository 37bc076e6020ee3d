"""im2col and col2im as whole-plane copies, for convs that keep the input's geometry at their
stride ("same" convs: a 3x3 pad-1 or 7x7 pad-3 conv at stride 1 or 2, a 1x1 at stride 2, on
sizes the stride divides).

conv_gemm.im2col copies each output row of each column row separately: ResNet-18's stride-2
convs have rows of 4-16 pixels, and the per-row work cost more than the GEMM that followed.
Here the input is first split into its s x s phases (plane (p, q) holds x[s*u + p, s*v + q]),
each of the output's size. A kernel tap then reads one phase plane shifted by whole rows and
columns, so its column row (per image) is one flat copy of the plane at an offset, the rows
and columns that fall outside zeroed afterwards (the flat copy wraps them around from the
neighbouring row). col2im adds the same shifted planes into the phases, then interleaves them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .parallel import sized_kernel


def applies(x_hw, out_hw, stride) -> bool:
    """Whether the phases of x have the output's size: equal strides dividing the input."""
    (h, w), (oh, ow), (sh, sw) = x_hw, out_hw, stride
    return sh == sw and h % sh == 0 and w % sw == 0 and (oh, ow) == (h // sh, w // sw)


@njit(cache=True, inline="always")
def _tap_shift(k_index, pad, dil, s):
    """(phase, shift) of a tap along one axis: input index = (out + shift) * s + phase."""
    r = k_index * dil - pad
    phase = r % s
    return phase, (r - phase) // s


@sized_kernel(size_arg=0)
def split_phases(x, xp, n0, s):
    """xp[b, c, p * s + q] (OH * OW, flat) = x[n0 + b, c, s*u + p, s*v + q]."""
    m, c_ = xp.shape[0], xp.shape[1]
    oh_, ow_ = x.shape[2] // s, x.shape[3] // s
    for t in prange(m * c_):
        b, c = t // c_, t % c_
        src = x[n0 + b, c]
        for p in range(s):
            for q in range(s):
                dst = xp[b, c, p * s + q]
                for u in range(oh_):
                    row = src[u * s + p]
                    for v in range(ow_):
                        dst[u * ow_ + v] = row[v * s + q]


@njit(cache=True, inline="always")
def _copy_shifted(d, plane, di, dj, oh_, ow_):
    """d (OH*OW) = plane read at (u + di, v + dj), zero outside the plane."""
    p_ = oh_ * ow_
    shift = di * ow_ + dj
    lo = min(p_, max(0, -shift, -di * ow_))
    hi = max(lo, min(p_, p_ - shift, (oh_ - di) * ow_))
    for k in range(lo):
        d[k] = 0
    src = plane[lo + shift : hi + shift]
    for k in range(hi - lo):
        d[lo + k] = src[k]
    for k in range(hi, p_):
        d[k] = 0
    if dj != 0:  # the flat copy wrapped these columns around from the next or previous row
        c0, c1 = (0, -dj) if dj < 0 else (ow_ - dj, ow_)
        for u in range(oh_):
            for v in range(max(0, c0), min(ow_, c1)):
                d[u * ow_ + v] = 0


@sized_kernel(size_arg=1)
def im2col_phases(xp, cols, m, kh, kw, s, ph, pw, dh, dw, oh_, ow_):
    """conv_gemm.im2col for a conv that ``applies``, from the phases xp (m, C, s*s, OH*OW)."""
    c_ = xp.shape[1]
    p_ = oh_ * ow_
    for r in prange(c_ * kh * kw):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        pi, di = _tap_shift(i, ph, dh, s)
        pj, dj = _tap_shift(j, pw, dw, s)
        for b in range(m):
            plane = xp[b, c, pi * s + pj]
            _copy_shifted(cols[r, b * p_ : (b + 1) * p_], plane, di, dj, oh_, ow_)


@njit(cache=True, inline="always")
def _add_shifted(plane, d, di, dj, oh_, ow_):
    """plane[(u + di, v + dj)] += d[(u, v)] where that lies inside the plane."""
    for u in range(max(0, -di), min(oh_, oh_ - di)):
        v0, v1 = max(0, -dj), min(ow_, ow_ - dj)
        dst = plane[(u + di) * ow_ + dj + v0 : (u + di) * ow_ + dj + v1]
        src = d[u * ow_ + v0 : u * ow_ + v1]
        for v in range(v1 - v0):
            dst[v] += src[v]


@sized_kernel(size_arg=0)
def col2im_phases(cols, gx, gxp, n0, kh, kw, s, ph, pw, dh, dw, oh_, ow_):
    """conv_gemm.col2im for a conv that ``applies``: gx[n0 : n0 + m] (overwritten) from cols,
    through the phase planes gxp (m, C, s*s, OH*OW) (scratch)."""
    m, c_ = gxp.shape[0], gxp.shape[1]
    p_ = oh_ * ow_
    for t in prange(m * c_):
        b, c = t // c_, t % c_
        planes = gxp[b, c]
        for k in range(planes.shape[0]):
            for e in range(p_):
                planes[k, e] = 0
        for i in range(kh):
            pi, di = _tap_shift(i, ph, dh, s)
            for j in range(kw):
                pj, dj = _tap_shift(j, pw, dw, s)
                row = cols[(c * kh + i) * kw + j, b * p_ : (b + 1) * p_]
                _add_shifted(planes[pi * s + pj], row, di, dj, oh_, ow_)
        dst = gx[n0 + b, c]
        for p in range(s):
            for q in range(s):
                src = planes[p * s + q]
                for u in range(oh_):
                    for v in range(ow_):
                        dst[u * s + p, v * s + q] = src[u * ow_ + v]


def phase_scratch(m, c, s, p, dtype) -> np.ndarray:
    return np.empty((m, c, s * s, p), dtype=dtype)
