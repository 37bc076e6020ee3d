"""What the indirect GEMM's kernels (conv_indirect.py) read besides the input: offset tables
(where output pixels' windows start, where taps lie from there) and operands packed into
panels of whole vectors (weights, output gradients)."""

from __future__ import annotations

import functools

import numpy as np
from numba import prange

from .parallel import sized_kernel

TRANSPOSE_ROWS = 16  # rows (pixels) transposed at a time: a cache line of each channel's


@sized_kernel(size_arg=0, min_elements=1 << 18)  # (the parallel build costs ~1 s to compile)
def pack_columns(src, dst):
    """dst (G, B, N, P, W) = src (N, G*Kg, P) with each group's Kg channels moved last, in B
    blocks of W columns (zero-padded past Kg): each block a contiguous (N*P, W) panel that the
    micro-kernel streams through. A work item transposes a strip of TRANSPOSE_ROWS rows of P
    (they stay in L1; a row at a time read the source P elements apart: 512 -> 512 3x3
    weights 2.4 ms, strips 1.4 ms serial)."""
    groups, nb, n_, p_, width = dst.shape
    kg = src.shape[1] // groups
    strips = -(-p_ // TRANSPOSE_ROWS)
    for t in prange(groups * nb * n_ * strips):
        p0 = (t % strips) * TRANSPOSE_ROWS
        n = (t // strips) % n_
        cb = (t // (strips * n_)) % nb
        g = t // (strips * n_ * nb)
        k0 = g * kg + cb * width
        ncol = min(width, kg - cb * width)
        panel = dst[g, cb, n]
        p1 = min(p_, p0 + TRANSPOSE_ROWS)
        panel[p0:p1, ncol:] = 0
        for j in range(ncol):
            row = src[n, k0 + j]
            for p in range(p0, p1):
                panel[p, j] = row[p]


def pixel_offsets(oh, ow, sh, sw, pitch):
    """(OH*OW,) where each output pixel's window starts in a plane of row pitch ``pitch``."""
    return ((np.arange(oh) * sh * pitch)[:, None] + np.arange(ow) * sw).reshape(-1)


def padded_table(table, multiple):
    """``table`` (G, T) with its last axis padded to a multiple of ``multiple`` by repeating
    its first entry (rows past the end compute what is never read)."""
    extra = -table.shape[1] % multiple
    return np.concatenate([table, np.repeat(table[:, :1], extra, axis=1)], axis=1)


def read_only(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=1024)
def tables(n, c, plane, pitch, out_hw, kernel_hw, stride, dilation, groups, rows_multiple):
    """(rows, taps, pixels) of a conv over flat planes: rows (N*OH*OW padded to a multiple of
    ``rows_multiple``) where each output pixel's window starts, taps (G, C/G*KH*KW) each tap's
    offset from there (its channel's plane included), pixels (OH*OW,) within one image."""
    (oh, ow), (kh, kw), (sh, sw), (dh, dw) = out_hw, kernel_hw, stride, dilation
    pixels = pixel_offsets(oh, ow, sh, sw, pitch)
    rows = (np.arange(n)[:, None] * c * plane + pixels).reshape(1, -1)
    rows = padded_table(rows, rows_multiple)[0]
    channel = np.arange(c).reshape(groups, c // groups, 1, 1) * plane
    taps = channel + (np.arange(kh) * dh * pitch)[:, None] + np.arange(kw) * dw
    return read_only(rows, taps.reshape(groups, -1), pixels)


def packed(src3, groups, width, blocks):
    """pack_columns of src3 (N, K, P) into ``blocks`` blocks of ``width``: (G, B, N, P, W)."""
    n, k, p = src3.shape
    dst = np.empty((groups, blocks, n, p, width), dtype=src3.dtype)
    pack_columns(src3, dst)
    return dst


@functools.lru_cache(maxsize=1024)
def weight_table(groups, kr, t):
    """(G, T) = g*Kr*T + t: where tap t of group g's weights starts in the packed weights."""
    return read_only(np.arange(groups)[:, None] * kr * t + np.arange(t))[0]
