"""CPU kernels for the spatial ops of ``graph/ops/spatial.py`` and ``graph/ops/lrn.py``:
max-pooling indices, max unpooling (scatter) and its gradient (gather), nearest/bilinear
upsampling and its gradient, local response normalization and its gradient.

Every kernel runs one work item per row of independent output (an (image, channel) plane,
or an (image, channel) row of LRN), so scatters never race, and overwrites its output.
"""

from __future__ import annotations

from numba import njit, prange

from .parallel import sized_kernel
from .pool import _first_max, _tap_ranges


@sized_kernel(size_arg=0)
def max_pool2d_indices(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    """out (N, C, OH, OW) int64 = flat (H*W) index of each window's first maximum of x (a NaN
    wins, the last one, as the max_pool2d kernels pick it)."""
    n_, c_, h, w = x.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    ilo, ihi = _tap_ranges(kh, h, sh, ph, dh, oh_)
    jlo, jhi = _tap_ranges(kw, w, sw, pw, dw, ow_)
    for t in prange(n_ * c_):
        src = x[t // c_, t % c_].reshape(h * w)
        dst = out[t // c_, t % c_]
        for oh in range(oh_):
            for ow in range(ow_):
                dst[oh, ow] = _first_max(src, w, oh, ow, ilo, ihi, jlo, jhi, sh, sw, ph, pw, dh, dw)


@sized_kernel(size_arg=2)
def max_unpool2d(y, idx, out):
    """out (N, C, H, W) = zeros, then out[n, c].flat[idx[n, c]] = y[n, c]; returns how many
    indices fell outside the plane (skipped)."""
    n_, c_, h, w = out.shape
    planes, plane, m = n_ * c_, h * w, y.shape[2] * y.shape[3]
    ys, ids, os = y.reshape(planes, m), idx.reshape(planes, m), out.reshape(planes, plane)
    bad = 0
    for t in prange(planes):
        os[t, :] = 0
        for q in range(m):
            k = ids[t, q]
            if 0 <= k < plane:
                os[t, k] = ys[t, q]
            else:
                bad += 1
    return bad


@sized_kernel(size_arg=0)
def max_unpool2d_grad(g, idx, gy):
    """gy (N, C, h, w) = g[n, c].flat[idx[n, c]]; returns how many indices were out of range
    (their gradient is left 0)."""
    n_, c_, h, w = g.shape
    planes, plane, m = n_ * c_, h * w, idx.shape[2] * idx.shape[3]
    gs, ids, out = g.reshape(planes, plane), idx.reshape(planes, m), gy.reshape(planes, m)
    bad = 0
    for t in prange(planes):
        for q in range(m):
            k = ids[t, q]
            if 0 <= k < plane:
                out[t, q] = gs[t, k]
            else:
                out[t, q] = 0
                bad += 1
    return bad


@sized_kernel(size_arg=1)
def upsample2d(x, out, hi0, hi1, hw0, hw1, wi0, wi1, ww0, ww1, nearest):
    """out (N, C, OH, OW) = sum of the two row taps (hi*, weights hw*) times the two column
    taps (wi*, ww*) of x; nearest upsampling reads one tap."""
    n_, c_ = x.shape[:2]
    oh_, ow_ = out.shape[2], out.shape[3]
    for t in prange(n_ * c_):
        src = x[t // c_, t % c_]
        dst = out[t // c_, t % c_]
        for oh in range(oh_):
            r0, r1 = src[hi0[oh]], src[hi1[oh]]
            if nearest:
                for ow in range(ow_):
                    dst[oh, ow] = r0[wi0[ow]]
            else:
                a0, a1 = hw0[oh], hw1[oh]
                for ow in range(ow_):
                    j0, j1 = wi0[ow], wi1[ow]
                    top = r0[j0] * ww0[ow] + r0[j1] * ww1[ow]
                    bottom = r1[j0] * ww0[ow] + r1[j1] * ww1[ow]
                    dst[oh, ow] = a0 * top + a1 * bottom


@sized_kernel(size_arg=0)
def upsample2d_grad(g, gx, hi0, hi1, hw0, hw1, wi0, wi1, ww0, ww1, nearest):
    """gx (N, C, H, W) = the adjoint of ``upsample2d``: each output's gradient goes back to
    its taps by their weights (overlaps accumulate, within one plane: no races)."""
    n_, c_ = gx.shape[:2]
    oh_, ow_ = g.shape[2], g.shape[3]
    for t in prange(n_ * c_):
        src = g[t // c_, t % c_]
        dst = gx[t // c_, t % c_]
        dst[:, :] = 0
        for oh in range(oh_):
            r0, r1 = dst[hi0[oh]], dst[hi1[oh]]
            if nearest:
                for ow in range(ow_):
                    r0[wi0[ow]] += src[oh, ow]
            else:
                a0, a1 = hw0[oh], hw1[oh]
                for ow in range(ow_):
                    v = src[oh, ow]
                    j0, j1 = wi0[ow], wi1[ow]
                    r0[j0] += a0 * ww0[ow] * v
                    r0[j1] += a0 * ww1[ow] * v
                    r1[j0] += a1 * ww0[ow] * v
                    r1[j1] += a1 * ww1[ow] * v


@njit(cache=True, inline="always")
def _window_squares(x, n, c, size, row):
    """row = the sum of x[n, q] ** 2 over LRN's channel window of c, q in [c - size // 2,
    c + (size - 1) // 2]."""
    row[:] = 0
    for q in range(max(0, c - size // 2), min(x.shape[1], c + (size - 1) // 2 + 1)):
        xq = x[n, q]
        for p in range(x.shape[2]):
            row[p] += xq[p] * xq[p]


@sized_kernel(size_arg=0)
def local_response_norm(x, out, size, alpha, beta, k):
    """out = x / base ** beta over (N, C, P) views; one work item per (image, channel) row."""
    n_, c_, p_ = x.shape
    for t in prange(n_ * c_):
        n, c = t // c_, t % c_
        row = out[n, c]
        _window_squares(x, n, c, size, row)
        xr = x[n, c]
        scale = alpha / size
        for p in range(p_):
            row[p] = xr[p] * (k + scale * row[p]) ** -beta


@sized_kernel(size_arg=0)
def local_response_norm_grad_terms(g, x, gx, t, size, alpha, beta, k):
    """First pass of the LRN gradient over (N, C, P) views, one pow per element: gx =
    g * d^-beta (the direct term) and t = g * x * d^(-beta-1) (what neighbours gather)."""
    n_, c_, p_ = x.shape
    scale = alpha / size
    for r in prange(n_ * c_):
        n, c = r // c_, r % c_
        acc = t[n, c]
        _window_squares(x, n, c, size, acc)
        gr, xr, out = g[n, c], x[n, c], gx[n, c]
        for p in range(p_):
            d = k + scale * acc[p]
            e = d ** (-beta - 1.0)
            out[p] = gr[p] * e * d
            acc[p] = gr[p] * xr[p] * e


@sized_kernel(size_arg=0)
def local_response_norm_grad_gather(x, t, gx, size, alpha, beta):
    """Second pass: gx[j] -= 2 beta alpha / size * x[j] * sum of t over the channels whose
    window holds j (``[j - (size - 1) // 2, j + size // 2]``)."""
    n_, c_, p_ = x.shape
    coef = 2.0 * beta * alpha / size
    for r in prange(n_ * c_):
        n, j = r // c_, r % c_
        out, xr = gx[n, j], x[n, j]
        for c in range(max(0, j - (size - 1) // 2), min(c_, j + size // 2 + 1)):
            tc = t[n, c]
            for p in range(p_):
                out[p] -= coef * xr[p] * tc[p]
