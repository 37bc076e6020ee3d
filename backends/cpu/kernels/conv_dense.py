"""Convolutions on maps no larger than the kernel's reach, as one dense GEMM over the batch.

A conv is a linear map from an image x (C*H*W values) to y (K*OH*OW values): its matrix T
(K*OH*OW, C*H*W) holds, at row (k, output pixel p) and column (c, input pixel q), the weight
w[k, c] at the tap through which p reads q (zero where no tap does). On a small map every
output pixel reads every input pixel (a 3x3 pad-1 conv on a 2x2 map: the last-but-one stage
of an ImageNet-stem ResNet-18 on 32x32 images); T then has no zeros, and its GEMMs do exactly
the multiplications of the direct conv, over the whole batch at once, on x and y in place
(NCHW rows are T's rows and columns):

    forward         Y (N, K*P)  = X (N, C*Q) @ T^T
    input gradient  X' (N, C*Q) = Y' (N, K*P) @ T
    weight gradient T' = Y'^T @ X, then each tap's gradient is the sum of its entries of T'.

The other algorithms pay more there: Winograd F(2x2, 3x3) transforms every weight and each
image's only tile for the same multiplications, im2col copies each input 9 times. Building T
(each weight copied P*Q/taps times) is what ``dense`` adds; the GEMMs amortize it over the
batch (DENSE_MIN_BATCH).

NaN and infinities: the GEMMs form a subset of im2col's products. They leave out those of the
padding zeros, with the weights (forward) and with the output gradient (weight gradient), which
are zero unless that operand holds a NaN or an infinity: conv.py checks it and falls back to
im2col. The input gradient leaves out nothing that im2col keeps.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import prange

from .parallel import sized_kernel

# Entries of T at most (16 MiB in float32): a 3x3 conv of 512 channels on 2x2 maps.
DENSE_MAX_ENTRIES = 1 << 22


def _axis_taps(size, out, k, stride, pad, dil):
    """taps[o, i] = the kernel index through which output o reads input i along one axis, or
    None when some pair (o, i) has none."""
    taps = np.empty((out, size), dtype=np.int64)
    for o in range(out):
        for i in range(size):
            offset = i - o * stride + pad
            if offset % dil or not 0 <= offset // dil < k:
                return None
            taps[o, i] = offset // dil
    return taps


@functools.lru_cache(maxsize=1024)
def tap_table(x_hw, w_hw, stride, padding, dilation) -> np.ndarray | None:
    """(OH*OW, H*W) int64, read-only: the tap (row-major index into the kernel) through which
    each output pixel reads each input pixel; None when some pair has none (not dense)."""
    outs = [
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, k, st, p, d in zip(x_hw, w_hw, stride, padding, dilation)
    ]
    if min(outs) < 1:  # (a window larger than the padded input: no output pixel)
        return None
    rows, cols = (
        _axis_taps(s, o, k, st, p, d)
        for s, o, k, st, p, d in zip(x_hw, outs, w_hw, stride, padding, dilation)
    )
    if rows is None or cols is None:
        return None
    table = rows[:, None, :, None] * w_hw[1] + cols[None, :, None, :]
    table = table.reshape(outs[0] * outs[1], x_hw[0] * x_hw[1])
    table.flags.writeable = False
    return table


def applies(x_shape, w_shape, stride, padding, dilation, groups) -> bool:
    """Whether ``dense`` computes this conv: ungrouped, every (output, input) pixel pair read
    through a tap, and T no larger than DENSE_MAX_ENTRIES."""
    if groups != 1:
        return False
    table = tap_table(x_shape[2:], w_shape[2:], stride, padding, dilation)
    return table is not None and w_shape[0] * w_shape[1] * table.size <= DENSE_MAX_ENTRIES


@sized_kernel(size_arg=1)
def dense_matrix(w, t, table):
    """t (K*P, C*Q) = the conv's matrix: t[k*P + p, c*Q + q] = w[k, c] at tap table[p, q]."""
    k_, c_ = w.shape[0], w.shape[1]
    p_, q_ = table.shape
    wf = w.reshape(k_, c_, w.shape[2] * w.shape[3])
    for r in prange(k_ * p_):
        k, p = r // p_, r % p_
        row, taps = t[r], table[p]
        for q in range(q_):  # (c innermost: 1.6-2x faster than q, 256-512 channels)
            j = taps[q]
            for c in range(c_):
                row[c * q_ + q] = wf[k, c, j]


@sized_kernel(size_arg=0)
def fold_taps(t, table, gw):
    """gw[k, c] at each tap = the sum of t[k*P + p, c*Q + q] over the pairs (p, q) read
    through it (zero for a tap no pair reads)."""
    k_, c_ = gw.shape[0], gw.shape[1]
    p_, q_ = table.shape
    taps = gw.shape[2] * gw.shape[3]
    g = gw.reshape(k_, c_, taps)
    for k in prange(k_):
        gk = g[k]
        for c in range(c_):
            for j in range(taps):
                gk[c, j] = 0
        for p in range(p_):
            row, tp = t[k * p_ + p], table[p]
            for q in range(q_):
                j = tp[q]
                for c in range(c_):
                    gk[c, j] += row[c * q_ + q]


@functools.lru_cache(maxsize=1024)
def matrix_launch(x_shape, w_shape, stride, padding, dilation):
    """A function w -> T for these shapes (T allocated per call)."""
    table = tap_table(x_shape[2:], w_shape[2:], stride, padding, dilation)
    rows, cols = w_shape[0] * table.shape[0], w_shape[1] * table.shape[1]
    build = dense_matrix.for_size(rows * cols)

    def matrix(w):
        t = np.empty((rows, cols), dtype=w.dtype)
        build(w, t, table)
        return t

    return matrix


@functools.lru_cache(maxsize=1024)
def fold_launch(x_shape, w_shape, stride, padding, dilation):
    """A function (T', gw): gw = the taps' sums of T' (see fold_taps) for these shapes."""
    table = tap_table(x_shape[2:], w_shape[2:], stride, padding, dilation)
    fold = fold_taps.for_size(math.prod(w_shape[:2]) * table.size)
    return lambda t, gw: fold(t, table, gw)
