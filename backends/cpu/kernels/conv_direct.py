"""Direct stride-1 convolution kernels on a "flat padded" layout.

Each (n, c) input plane is zero-padded to (Hp, Wp) and flattened. For stride 1 the output pixel
(oh, ow) then reads input element ``oh*Wp + ow + i*dh*Wp + j*dw`` for tap (i, j), so one output
*block of rows* is a single contiguous run of L = (rows-1)*Wp + OW positions (the Wp-OW positions
between rows are computed and thrown away). Every tap becomes one long contiguous AXPY that LLVM
vectorizes, instead of many short row loops. The loops are elementwise, never reductions, so
no reassociation is needed; the kernels allow only FMA contraction (``CONTRACT``: a multiply
and its add round once; LeNet's C3 ran 10-40% faster). Up to five taps of a kernel row are fused
into one pass over the accumulator, which cuts its loads/stores five-fold (measured 72 -> 104
GFLOP/s on LeNet's C1).

The backward-input pass reuses the forward kernel: for stride 1 it is a convolution of the
(re-padded) output gradient with the flipped, channel-transposed weights.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import njit, prange

from .parallel import CONTRACT, REASSOC, sized_kernel
from .runs import copy_run, zero_run


@njit(cache=True, inline="always")
def _tap1(a, x, o, w0):
    n = a.shape[0]
    x0 = x[o : o + n]
    for p in range(n):
        a[p] += w0 * x0[p]


@njit(cache=True, inline="always")
def _tap2(a, x, o, d, w0, w1):
    n = a.shape[0]
    x0 = x[o : o + n]
    x1 = x[o + d : o + d + n]
    for p in range(n):
        a[p] += w0 * x0[p] + w1 * x1[p]


@njit(cache=True, inline="always")
def _tap3(a, x, o, d, w0, w1, w2):
    n = a.shape[0]
    x0 = x[o : o + n]
    x1 = x[o + d : o + d + n]
    x2 = x[o + 2 * d : o + 2 * d + n]
    for p in range(n):
        a[p] += w0 * x0[p] + w1 * x1[p] + w2 * x2[p]


@njit(cache=True, inline="always")
def _tap4(a, x, o, d, w0, w1, w2, w3):
    n = a.shape[0]
    x0 = x[o : o + n]
    x1 = x[o + d : o + d + n]
    x2 = x[o + 2 * d : o + 2 * d + n]
    x3 = x[o + 3 * d : o + 3 * d + n]
    for p in range(n):
        a[p] += w0 * x0[p] + w1 * x1[p] + w2 * x2[p] + w3 * x3[p]


@njit(cache=True, inline="always")
def _tap5(a, x, o, d, w0, w1, w2, w3, w4):
    n = a.shape[0]
    x0 = x[o : o + n]
    x1 = x[o + d : o + d + n]
    x2 = x[o + 2 * d : o + 2 * d + n]
    x3 = x[o + 3 * d : o + 3 * d + n]
    x4 = x[o + 4 * d : o + 4 * d + n]
    for p in range(n):
        a[p] += w0 * x0[p] + w1 * x1[p] + w2 * x2[p] + w3 * x3[p] + w4 * x4[p]


@njit(cache=True, inline="always")
def _taps_block(acc, x, o, d, w, c, i, j, k0, k1):
    """acc[k - k0] += the next taps of kernel row i from tap j (at most five, fused in one pass
    over the accumulator) for k0 <= k < k1, reading x at offset o; returns the taps done.
    Choosing the tap count once per channel block, not once per output channel, measured
    3-4x faster on short spans (LeNet's C3: 172 positions), where that choice dominated."""
    r = w.shape[3] - j
    if r >= 5:
        for k in range(k0, k1):
            wr = w[k, c, i]
            _tap5(acc[k - k0], x, o, d, wr[j], wr[j + 1], wr[j + 2], wr[j + 3], wr[j + 4])
        return 5
    if r == 4:
        for k in range(k0, k1):
            wr = w[k, c, i]
            _tap4(acc[k - k0], x, o, d, wr[j], wr[j + 1], wr[j + 2], wr[j + 3])
        return 4
    if r == 3:
        for k in range(k0, k1):
            wr = w[k, c, i]
            _tap3(acc[k - k0], x, o, d, wr[j], wr[j + 1], wr[j + 2])
        return 3
    if r == 2:
        for k in range(k0, k1):
            wr = w[k, c, i]
            _tap2(acc[k - k0], x, o, d, wr[j], wr[j + 1])
        return 2
    for k in range(k0, k1):
        _tap1(acc[k - k0], x, o, w[k, c, i, j])
    return 1


def aligned_empty(shape, dtype, align=64):
    """np.empty whose data starts on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buf = np.empty(size * dtype.itemsize + align, dtype=np.uint8)
    off = -buf.ctypes.data % align
    return buf[off : off + size * dtype.itemsize].view(dtype).reshape(shape)


def flat_planes(n, c, plane, dtype, tail=0):
    """(flat, planes): an aligned buffer of n*c*plane + ``tail`` elements, its tail zeroed
    (for kernels that read whole vectors past the last plane), and its (n, c, plane) view."""
    flat = aligned_empty((n * c * plane + tail,), dtype)
    flat[n * c * plane :] = 0
    return flat, flat[: n * c * plane].reshape(n, c, plane)


def repadded_output_grad(gy, x_shape, w_shape, ph, pw, dh, dw, tail=0):
    """(flat, plane, pitch): gy of a stride-1 conv zero-padded into the flat planes of
    ``flat`` (see flat_planes) such that their conv by the flipped weights (flip_transpose)
    is dL/dx, of x_shape's H x W.

    Row pitch W + pw, not W + dw*(KW-1): a tap past a row's end reads the next row's left
    padding, which is as wide as the right one (the zeros between gy's rows serve both).
    LeNet's C3 (pw 0): 21% fewer positions for the direct kernel. One more row for the last.
    """
    n, k = gy.shape[:2]
    h, wd = x_shape[2:]
    kh, kw = w_shape[2:]
    top, left = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    hg, wg = h + dh * (kh - 1) + 1, wd + (pw if left >= 0 else dw * (kw - 1))
    flat, gyp = flat_planes(n, k, hg * wg, gy.dtype, tail)
    pad_flat(gy, gyp, top, left, hg, wg)
    return flat, hg * wg, wg


@sized_kernel(size_arg=1)
def pad_flat(x, xf, top, left, hp, wp):
    """Copy x (N, C, H, W) into the flat (hp, wp) planes of xf (N, C, >= hp*wp) at row offset
    ``top`` and column offset ``left``; what falls outside the plane is cropped, everything
    else in xf (borders and the tail past hp*wp) is zeroed. Both C-contiguous (the entry
    points check): rows are memcpy/memset runs, 2x faster than loops on 32-pixel rows."""
    n_, c_, h, w = x.shape
    plane = xf.shape[2]
    c0 = max(0, -left)
    c1 = min(w, wp - left)
    r0 = max(0, -top)
    r1 = max(r0, min(h, hp - top))
    # each row: lead zeros, width copied, trail zeros; clamped to the row and the plane
    lead = min(wp, c0 + left)
    width = max(0, min(c1 - c0, wp - lead))
    trail = wp - lead - width
    head, end = min(plane, (r0 + top) * wp), min(plane, (r1 + top) * wp)
    for t in prange(n_ * c_):
        base, src = t * plane, t * h * w
        zero_run(xf, base, head)
        for r in range(r0, r1):
            d = base + (r + top) * wp
            zero_run(xf, d, lead)
            copy_run(xf, d + lead, x, src + r * w + c0, width)
            zero_run(xf, d + lead + width, trail)
        zero_run(xf, base + end, plane - end)


CHANNEL_BLOCK = 8  # output channels per work item of direct_forward


def blocks(n, kg, groups, rows):
    """Output-channel block and row-block count for direct_forward."""
    return _blocks_for(n, kg, groups, rows, numba.get_num_threads())


@functools.lru_cache(maxsize=4096)
def _blocks_for(n, kg, groups, rows, threads):
    """``blocks`` on ``threads`` threads. Measured: long rows win (an accumulator of a few
    channels x the whole image, L2-resident, beats L1-sized row blocks by 1.5-2x), so split
    rows only when images x channel blocks cannot feed every thread."""
    want = 2 * threads
    kb = min(kg, CHANNEL_BLOCK)
    while kb > 1 and n * groups * (-(-kg // kb)) < want:
        kb = -(-kb // 2)
    nrb = 1
    while n * groups * (-(-kg // kb)) * nrb < want and nrb < rows // 8:
        nrb *= 2
    return kb, nrb


# Parallel from 1024 outputs: each output costs a whole kernel's multiply-adds (LeNet's C3 at
# batch 1: 1600 outputs of 150), so the split pays sooner than for elementwise kernels (LeNet
# train step at batch 1: 0.37-0.41 -> 0.35-0.36 ms, also with the other core busy).
@sized_kernel(size_arg=4, min_elements=1 << 10, fastmath=CONTRACT)
def direct_forward(xf, wp, w, b, out, dh, dw, groups, kb, nrb):
    """out (N, K, OH, OW) = stride-1 conv of the flat padded input xf (N, C, >= Hp*wp) with
    w (K, C//groups, KH, KW), plus b (K,) unless b is empty.

    Work items are (image, group, block of ``kb`` output channels, one of ``nrb`` row blocks),
    so a batch of one still spreads over the threads.
    """
    n_ = xf.shape[0]
    k_, cg, kh, kw = w.shape
    oh_, ow_ = out.shape[2], out.shape[3]
    kg = k_ // groups
    nkb = (kg + kb - 1) // kb
    rows = (oh_ + nrb - 1) // nrb
    has_b = b.shape[0] > 0
    for t in prange(n_ * groups * nkb * nrb):
        rb = t % nrb
        q = t // nrb
        kbi = q % nkb
        q = q // nkb
        g = q % groups
        n = q // groups
        r0 = rb * rows
        r1 = min(oh_, r0 + rows)
        k0 = g * kg + kbi * kb
        k1 = min(g * kg + kg, k0 + kb)
        if r0 < r1:
            span = (r1 - r0 - 1) * wp + ow_
            acc = np.zeros((k1 - k0, span), dtype=xf.dtype)
            for c in range(cg):
                xr = xf[n, g * cg + c]
                for i in range(kh):
                    o = (r0 + i * dh) * wp
                    j = 0
                    while j < kw:
                        j += _taps_block(acc, xr, o + j * dw, dw, w, c, i, j, k0, k1)
            for k in range(k0, k1):
                for r in range(r0, r1):
                    src = acc[k - k0, (r - r0) * wp : (r - r0) * wp + ow_]
                    dst = out[n, k, r]
                    if has_b:
                        bk = b[k]
                        for s in range(ow_):
                            dst[s] = src[s] + bk
                    else:
                        for s in range(ow_):
                            dst[s] = src[s]


@njit(cache=True)
def flip_transpose(w, wt, groups):
    """wt (C, K//groups, KH, KW) = w (K, C//groups, KH, KW) with channels swapped per group and
    the kernel rotated by 180 degrees: the weights of the stride-1 backward-input conv."""
    k_, cg, kh, kw = w.shape
    kg = k_ // groups
    for g in range(groups):
        for k in range(kg):
            for c in range(cg):
                for i in range(kh):
                    for j in range(kw):
                        wt[g * cg + c, k, i, j] = w[g * kg + k, c, kh - 1 - i, kw - 1 - j]


# Input channels per work item of the weight gradient: the gy plane spread once serves them all
# (LeNet C3, 6 channels: 8% faster than one work item per channel).
WGRAD_CHANNEL_BLOCK = 8


@njit(cache=True, inline="always")
def _tap_dots(g, x, o, d, n, r):
    """sum(g[p] * x[o + j*d + p] for p < n) for the r <= 5 taps j < r, as a 5-tuple (taps past
    r repeat the last one: computed, not used). One pass over g for all of them, each sum in
    vector registers (the kernel may reassociate it)."""
    last = r - 1
    x0 = x[o : o + n]
    x1 = x[o + min(1, last) * d :][:n]
    x2 = x[o + min(2, last) * d :][:n]
    x3 = x[o + min(3, last) * d :][:n]
    x4 = x[o + min(4, last) * d :][:n]
    s0 = s1 = s2 = s3 = s4 = g.dtype.type(0)
    for p in range(n):
        gp = g[p]
        s0 += gp * x0[p]
        s1 += gp * x1[p]
        s2 += gp * x2[p]
        s3 += gp * x3[p]
        s4 += gp * x4[p]
    return s0, s1, s2, s3, s4


@njit(cache=True, inline="always")
def _add_taps(acc, r, s0, s1, s2, s3, s4):
    """acc[j] += s_j for j < r."""
    acc[0] += s0
    if r > 1:
        acc[1] += s1
    if r > 2:
        acc[2] += s2
    if r > 3:
        acc[3] += s3
    if r > 4:
        acc[4] += s4


@sized_kernel(size_arg=2, min_elements=1 << 10, fastmath=REASSOC)  # (see direct_forward)
def direct_weight_grad(xf, wp, gy, gw, dh, dw, groups, lp):
    """gw (K, C//groups, KH, KW) = dL/dw of a stride-1 conv, from the flat padded input
    xf (N, C, >= max_tap_offset + lp) and gy (N, K, OH, OW); lp >= (OH-1)*wp + OW.

    One work item per output channel and block of WGRAD_CHANNEL_BLOCK input channels. Each
    image's gy plane is first spread to row pitch ``wp`` in a private buffer (zeros between
    rows, so the wasted positions add nothing), once for the block; then each tap is a dot
    product of it with a shifted run of the input plane, up to five taps of a kernel row per
    pass. Per image the dots are summed in the input's dtype (vectorized, reassociated), across
    images in float64. Measured against the previous per-lane partial sums in memory: LeNet's
    C1 1.5-2x, C3 2.7x (batch 64), 4-5x at batch 1.
    """
    n_ = xf.shape[0]
    k_, cg, kh, kw = gw.shape
    oh_, ow_ = gy.shape[2], gy.shape[3]
    kg = k_ // groups
    ncb = -(-cg // WGRAD_CHANNEL_BLOCK)
    for t in prange(k_ * ncb):
        k = t // ncb
        c0 = (t % ncb) * WGRAD_CHANNEL_BLOCK
        c1 = min(cg, c0 + WGRAD_CHANNEL_BLOCK)
        ci = (k // kg) * cg  # the group's first input channel
        acc = np.zeros((c1 - c0, kh, kw), dtype=np.float64)
        g = np.zeros(lp, dtype=xf.dtype)
        for n in range(n_):
            for r in range(oh_):
                src = gy[n, k, r]
                row = g[r * wp : r * wp + ow_]
                for s in range(ow_):
                    row[s] = src[s]
            for c in range(c0, c1):
                xr = xf[n, ci + c]
                for i in range(kh):
                    for j0 in range(0, kw, 5):
                        r = min(5, kw - j0)
                        s0, s1, s2, s3, s4 = _tap_dots(g, xr, i * dh * wp + j0 * dw, dw, lp, r)
                        _add_taps(acc[c - c0, i, j0:], r, s0, s1, s2, s3, s4)
        for c in range(c0, c1):
            for i in range(kh):
                for j in range(kw):
                    gw[k, c, i, j] = acc[c - c0, i, j]
