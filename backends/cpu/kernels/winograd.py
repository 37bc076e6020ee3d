"""Winograd convolution for 3x3, stride-1, undilated, ungrouped convs (padding 0..2): forward,
input gradient and weight gradient, F(2x2, 3x3) or F(4x4, 3x3) (matrices in winograd_rows.py,
tile transforms in winograd_transforms.py, filter transforms in winograd_filters.py).

Each entry xi of the transformed a x a tile (a = m + 2) is one GEMM over channels:
M[xi] (K, tiles) = U[xi] (K, C) @ V[xi] (C, tiles) for the output, and
dU[xi] (K, C) = dM[xi] (K, tiles) @ V[xi]^T for the weight gradient. The input gradient is the
forward conv of gy (padding 2 - p) with the weights rotated by 180 degrees and their channel
axes swapped: U computed from the rotated weights, multiplied transposed.

Memory traffic decides the speed on few cores, so transformed tensors are not materialized for
a whole batch when they are large. Two schedules, by which operand is small:

- ``tiles`` (many tiles: large images): U is transformed once; each thread takes a run of tile
  rows and works through it in blocks of about BLOCK_TILES tiles that stay in its L2 cache:
  transform the block's inputs, a*a single-threaded GEMMs, transform its outputs. The weight
  gradient accumulates dU per thread (beta = 1 GEMMs) and sums the threads' at the end.
- ``channels`` (few tiles: small images, many channels): V (and dM) is transformed for the
  whole batch; each thread takes blocks of output channels (_channel_block), transforms their
  filters, runs their GEMMs over every tile and transforms their outputs (weight gradient:
  their dU).

NaN and infinities: the transforms add neighbouring inputs (Inf - Inf is NaN where the direct
sum is Inf), so each entry point returns False, its output undefined, when any value it read
is not finite; the caller then recomputes with another algorithm.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .blas import block_gemm, gemm
from .packed_gemm import OWN_GEMM
from .winograd_filters import FILTER_BLOCK, filter_block, filter_grad_block
from .winograd_transforms import (
    all_finite,
    grad_output_block,
    input_block,
    output_block,
    padded,
    planes,
    tile_scratch,
)

# Tiles per block of the ``tiles`` schedule: its GEMM operands (a*a*(C+K)*BLOCK_TILES values)
# stay in L2. 64->64 32x32 on one core: 128 beat 64 and 256 by 10-40%.
BLOCK_TILES = 128
# Output channels per work item of the ``channels`` schedule: its U (or dU) block then holds
# (m+2)^2 * CHANNEL_BLOCK_WEIGHTS values. Measured on one core (256->256 8x8 and 512->512 4x4,
# batch 32): blocks of 8-16 channels ran 20-50% slower (thin GEMMs), and 64 channels beat 32 at
# 256 input channels but lost at 512 (the block outgrew L2).
CHANNEL_BLOCK_WEIGHTS = 16384
# The weight gradient's blocks have at least this many channels: its GEMMs (block, tiles) @
# (tiles, C), on the micro-kernel with V^T transformed once, reduce over the few tiles only,
# so a taller block reads V^T fewer times. 512->512 4x4 batch 32, 2 threads: 64 channels
# 4.9-5.5 ms, 32 channels 5.3-7.7, 128 5.1-5.3 (with 19 MiB of dU scratch).
WGRAD_MIN_CHANNEL_BLOCK = 64
# ``tiles`` when the tiles number at least this many times the output channels, else
# ``channels``. Measured on one core, batch 32: 128->128 16x16 (512 tiles) ran 1.4-1.9x faster
# by tiles, 256->256 8x8 (128 tiles) 1.05-1.3x; 512->512 4x4 (32 tiles) 1.1-1.6x faster by
# channels, whose U blocks stay in L2 where the tiles schedule streams all of U per block.
TILES_SCHEDULE_MIN = 0.5
# The forward's and the input gradient's GEMMs run on the micro-kernel from this many channels
# of reduction. One thread, GEMMs of one ResNet-18 layer's blocks, GFLOP/s micro-kernel / BLAS
# (forward; input gradient):
# 128 ch at 16 px 166-170 / 144-147 (152-159 / 135); 256 at 8 px 153-156 / 128-132 (140-145 /
# 121-123); 512 at 4 px 117-135 / 108-132 (105-122 / 110-129); 64 at 32 px 164-177 / 176-180.
# Where gemm is the packed GEMM (OWN_GEMM), from 64: its pack of B costs about what these
# small products' multiplies do (64x128x64, one Zen 5 core: 215-233 against 165-187 GFLOP/s).
BLOCK_GEMM_MIN_DEPTH = 64 if OWN_GEMM else 128


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tile_size(out_hw: tuple[int, int]) -> int:
    """m of F(m x m, 3 x 3) for an output of out_hw pixels: the one with fewer transformed
    values (tiles * (m+2)^2), 4 on ties (its GEMMs are 4x cheaper than the direct conv's)."""
    cost = {m: _cdiv(out_hw[0], m) * _cdiv(out_hw[1], m) * (m + 2) ** 2 for m in (4, 2)}
    return min(cost, key=cost.get)


def tiles(n: int, out_hw: tuple[int, int]) -> int:
    """How many tiles a batch of n images of out_hw output pixels has (tile_size's m)."""
    m = tile_size(out_hw)
    return n * _cdiv(out_hw[0], m) * _cdiv(out_hw[1], m)


@njit(cache=True, inline="always")
def _part(tid, nt, n):
    """Thread tid's share [lo, hi) of range(n)."""
    return tid * n // nt, (tid + 1) * n // nt


# Compile time: Numba re-optimizes and re-generates a callee's whole code in every caller that
# links it, so the kernels keep few levels: one parallel function per entry point, whose two
# prange bodies are the phase functions inlined (cold compile 30% faster than calling them;
# 2+ min per dtype with a parallel function per phase and schedule). _0 is a zero typed
# int64, not a literal: a literal argument compiles its callee once more.


_0 = np.int64(0)


@njit(cache=True, inline="always")
def _plane_gemm(u, v, out, flip):
    """out = U @ V for one transformed entry, U = u, or u.T when ``flip``: on the micro-kernel
    (blas.block_gemm) from BLOCK_GEMM_MIN_DEPTH channels, on BLAS below."""
    if v.shape[0] >= BLOCK_GEMM_MIN_DEPTH:
        block_gemm(u, v, out, flip)
    else:
        gemm(u, v, out, flip, False, 1.0, 0.0)


@njit(cache=True, inline="always")
def _conv_phase1(tid, nt, x, w, flip, m, by_tiles, ph, pw, u, v, taps, s):
    """tiles schedule: u = the filters of a run of w's first axis; channels: v = the input transform
    of every nt-th channel for the whole batch."""
    if by_tiles:
        k0, k1 = _part(tid, nt, w.shape[0])
        filter_block(w, k0, k1, _0, w.shape[1], flip, m, u[0], k0, taps[tid], s[8][tid])
    else:
        th, tw = -(-(x.shape[2] + 2 * ph - 2) // m), -(-(x.shape[3] + 2 * pw - 2) // m)
        for c in range(tid, x.shape[1], nt):
            input_block(x, c, _0, x.shape[0] * th, th, tw, ph, pw, m, v[0], c, s[0][tid],
                        s[1][tid], s[2][tid], s[3][tid], s[4][tid], s[8][tid])  # fmt: skip


@njit(cache=True, inline="always")
def _conv_phase2(tid, nt, x, w, flip, bias, out, ph, pw, m, by_tiles, step, u, v, mm, taps, s):
    """tiles schedule: runs of ``step`` tile rows: input transform, GEMMs, output transform;
    channels: every nt-th block of ``step`` output channels: filter transform, GEMMs over
    all tiles, output transform."""
    th, tw = -(-out.shape[2] // m), -(-out.shape[3] // m)
    a2, cin, kout, rows = v.shape[1], x.shape[1], out.shape[1], x.shape[0] * th
    if by_tiles:
        vt, mt = v[tid], mm[tid]
        r0, r1 = _part(tid, nt, rows)
        for g0 in range(r0, r1, step):
            g1 = min(r1, g0 + step)
            nb = (g1 - g0) * tw
            for c in range(cin):
                input_block(x, c, g0, g1, th, tw, ph, pw, m, vt, c, s[0][tid], s[1][tid],
                            s[2][tid], s[3][tid], s[4][tid], s[8][tid])  # fmt: skip
            for xi in range(a2):
                ux = u[0, xi, : cin * kout].reshape((cin, kout) if flip else (kout, cin))
                _plane_gemm(ux, vt[xi, :cin, :nb], mt[xi, :kout, :nb], flip)
            for k in range(kout):
                output_block(mt, k, g0, g1, th, tw, m, out, k, bias, s[5][tid], s[6][tid])
        return
    nb, ut, mt = rows * tw, u[tid], mm[tid]
    for j in range(tid, -(-kout // step), nt):
        k0, k1 = j * step, min(kout, (j + 1) * step)
        if flip:  # the input gradient's conv: its output channels are w's second axis
            filter_block(w, _0, cin, k0, k1, flip, m, ut, _0, taps[tid], s[8][tid])
        else:
            filter_block(w, k0, k1, _0, cin, flip, m, ut, _0, taps[tid], s[8][tid])
        for xi in range(a2):
            ux = ut[xi, : cin * (k1 - k0)].reshape((cin, k1 - k0) if flip else (k1 - k0, cin))
            _plane_gemm(ux, v[0, xi, :cin, :nb], mt[xi, : k1 - k0, :nb], flip)
        for k in range(k0, k1):
            output_block(mt, k - k0, _0, rows, th, tw, m, out, k, bias, s[5][tid], s[6][tid])


@njit(parallel=True, cache=True)
def _conv_parallel(x, w, flip, bias, out, ph, pw, m, by_tiles, step, u, v, mm, taps, scratch):
    nt = taps.shape[0]
    for t in prange(nt):
        tid = np.int64(t)  # (the prange index is unsigned inside the parallel region)
        _conv_phase1(tid, nt, x, w, flip, m, by_tiles, ph, pw, u, v, taps, scratch)
    for t in prange(nt):
        tid = np.int64(t)
        _conv_phase2(tid, nt, x, w, flip, bias, out, ph, pw, m, by_tiles, step, u, v, mm, taps,
                     scratch)  # fmt: skip


@njit(cache=True, inline="always")
def _weight_grad_phase1(tid, nt, x, gy, ph, pw, m, by_tiles, step, v, vc, dm, du, s):
    """tiles schedule: du[tid] = sum of dM @ V^T over runs of ``step`` tile rows; channels: V^T
    (v: each thread a run of input channels, their rows through vc[tid]) and dM (every nt-th
    output channel) transformed for the whole batch."""
    th, tw = -(-gy.shape[2] // m), -(-gy.shape[3] // m)
    a2, cin, kout, rows = v.shape[1], x.shape[1], gy.shape[1], x.shape[0] * th
    if by_tiles:
        r0, r1 = _part(tid, nt, rows)
        beta = 0.0
        for g0 in range(r0, r1, step):
            g1 = min(r1, g0 + step)
            nb = (g1 - g0) * tw
            for c in range(cin):
                input_block(x, c, g0, g1, th, tw, ph, pw, m, v[tid], c, s[0][tid], s[1][tid],
                            s[2][tid], s[3][tid], s[4][tid], s[8][tid])  # fmt: skip
            for k in range(kout):
                grad_output_block(gy, k, g0, g1, th, tw, m, dm[tid], k, s[6][tid], s[7][tid],
                                  s[5][tid], s[8][tid])  # fmt: skip
            for xi in range(a2):
                gemm(dm[tid, xi, :kout, :nb], v[tid, xi, :cin, :nb], du[tid, xi, :kout, :cin],
                     False, True, 1.0, beta)  # fmt: skip
            beta = 1.0
        if beta == 0.0:
            du[tid] = 0
        return
    c0, c1 = _part(tid, nt, cin)  # runs of channels: threads writing V^T share few lines
    for c in range(c0, c1):
        input_block(x, c, _0, rows, th, tw, ph, pw, m, vc[tid], _0, s[0][tid], s[1][tid],
                    s[2][tid], s[3][tid], s[4][tid], s[8][tid])  # fmt: skip
        _transpose_channel(vc[tid], v[0], c, rows * tw)
    for k in range(tid, kout, nt):
        grad_output_block(gy, k, _0, rows, th, tw, m, dm[0], k, s[6][tid], s[7][tid], s[5][tid],
                          s[8][tid])  # fmt: skip


@njit(cache=True, inline="always")
def _transpose_channel(src, dst, c, n):
    """dst[xi, t, c] = src[xi, 0, t] (t < n): one channel's transformed tiles into V^T."""
    for xi in range(src.shape[0]):
        for t in range(n):
            dst[xi, t, c] = src[xi, 0, t]


@njit(cache=True, inline="always")
def _sum_threads(du, k0, k1):
    """du[0, :, k0:k1] += du[t, :, k0:k1] for every other thread t. Loops, not the slice
    expression: that compiled its shape-mismatch error message, 2.6 s of cold start."""
    for t in range(1, du.shape[0]):
        for xi in range(du.shape[1]):
            for k in range(k0, k1):
                for c in range(du.shape[3]):
                    du[0, xi, k, c] += du[t, xi, k, c]


@njit(cache=True, inline="always")
def _weight_grad_phase2(tid, nt, gw, m, by_tiles, step, nb, v, dm, du, taps):
    """tiles schedule: gw = G^T (du summed over threads) G for a run of output channels; channels:
    every nt-th block of ``step`` output channels: GEMMs over all tiles, filter transform."""
    kout, cin, a2 = gw.shape[0], gw.shape[1], du.shape[1]
    if by_tiles:
        k0, k1 = _part(tid, nt, kout)
        _sum_threads(du, k0, k1)
        filter_grad_block(du[0], k0, k0, k1, m, gw, taps[tid])
        return
    for j in range(tid, -(-kout // step), nt):
        k0, k1 = j * step, min(kout, (j + 1) * step)
        for xi in range(a2):
            block_gemm(dm[0, xi, k0:k1, :nb], v[0, xi, :nb, :cin], du[tid, xi, : k1 - k0, :cin],
                       False)  # fmt: skip
        filter_grad_block(du[tid], _0, k0, k1, m, gw, taps[tid])


@njit(parallel=True, cache=True)
def _weight_grad_parallel(x, gy, gw, ph, pw, m, by_tiles, step, v, vc, dm, du, taps, scratch):
    nt = taps.shape[0]
    for t in prange(nt):
        tid = np.int64(t)  # (the prange index is unsigned inside the parallel region)
        _weight_grad_phase1(tid, nt, x, gy, ph, pw, m, by_tiles, step, v, vc, dm, du, scratch)
    nb = x.shape[0] * (-(-gy.shape[2] // m)) * (-(-gy.shape[3] // m))
    for t in prange(nt):
        tid = np.int64(t)
        _weight_grad_phase2(tid, nt, gw, m, by_tiles, step, nb, v, dm, du, taps)


def _channel_block(cin: int, kout: int, least: int = 16) -> int:
    return min(kout, max(least, min(128, CHANNEL_BLOCK_WEIGHTS // cin)))


def _use_tiles(tiles: int, kout: int) -> bool:
    return tiles >= TILES_SCHEDULE_MIN * kout


def _block_rows(rows: int, tw: int, nt: int) -> int:
    return max(1, min(_cdiv(rows, nt), _cdiv(BLOCK_TILES, tw)))


def _taps(nt: int, c: int, dtype) -> np.ndarray:
    """filter_block's / filter_grad_block's scratch over c channels, per thread."""
    return np.empty((nt, 9, padded(FILTER_BLOCK * c)), dtype)


def conv(x, w, bias, out, ph, pw, *, flip=False, m=None) -> bool:
    """out (N, K, OH, OW) = 3x3 stride-1 conv of x (N, C, H, W) by w (K, C, 3, 3) (+ bias, unless
    empty), zero padding ph, pw <= 2. With ``flip`` the conv is the input gradient of a conv by
    w: w is (C, K, 3, 3) and used rotated by 180 degrees with its channel axes swapped (pass
    x = gy and padding 2 - p). Returns False, out undefined, when a value read is not
    finite."""
    n, cin = x.shape[:2]
    kout, oh, ow = out.shape[1:]
    m = m or tile_size((oh, ow))
    a2 = (m + 2) ** 2
    th, tw = _cdiv(oh, m), _cdiv(ow, m)
    rows, nt, dt = n * th, numba.get_num_threads(), x.dtype
    by_tiles = _use_tiles(rows * tw, kout)
    if by_tiles:
        step = _block_rows(rows, tw, nt)
        u = np.empty((1, a2, padded(cin * kout)), dt)
        v = planes(nt, a2, cin, step * tw, dt)
        mm = planes(nt, a2, kout, step * tw, dt)
        scratch = tile_scratch(nt, step, tw, m, dt, 9 * w.shape[1])
        taps = _taps(nt, w.shape[1], dt)
    else:
        step = _channel_block(cin, kout)
        u = np.empty((nt, a2, padded(cin * step)), dt)
        v = planes(1, a2, cin, rows * tw, dt)
        mm = planes(nt, a2, step, rows * tw, dt)
        scratch = tile_scratch(nt, rows, tw, m, dt, 9 * max(cin, step))
        taps = _taps(nt, max(cin, step), dt)
    _conv_parallel(x, w, flip, bias, out, ph, pw, m, by_tiles, step, u, v, mm, taps, scratch)
    return all_finite(scratch[-1])


def weight_grad(x, gy, gw, ph, pw, *, m=None) -> bool:
    """gw (K, C, 3, 3) = dL/dw of the 3x3 stride-1 conv of x (N, C, H, W) with padding ph, pw
    <= 2, from gy = dL/dy (N, K, OH, OW). Returns False, gw undefined, when a value read is
    not finite."""
    n, cin = x.shape[:2]
    kout, oh, ow = gy.shape[1:]
    m = m or tile_size((oh, ow))
    a2 = (m + 2) ** 2
    th, tw = _cdiv(oh, m), _cdiv(ow, m)
    rows, nt, dt = n * th, numba.get_num_threads(), x.dtype
    taps = _taps(nt, cin, dt)
    by_tiles = _use_tiles(rows * tw, kout)
    if by_tiles:
        step = _block_rows(rows, tw, nt)
        v = planes(nt, a2, cin, step * tw, dt)
        dm = planes(nt, a2, kout, step * tw, dt)
        du = planes(nt, a2, kout, cin, dt)
        scratch = tile_scratch(nt, step, tw, m, dt)
        vc = planes(nt, a2, 0, 0, dt)
    else:
        step = _channel_block(cin, kout, WGRAD_MIN_CHANNEL_BLOCK)
        v = planes(1, a2, rows * tw, cin, dt)  # V^T: its GEMMs run on the micro-kernel
        vc = planes(nt, a2, 1, rows * tw, dt)
        dm = planes(1, a2, kout, rows * tw, dt)
        du = planes(nt, a2, step, cin, dt)
        scratch = tile_scratch(nt, rows, tw, m, dt)
    _weight_grad_parallel(x, gy, gw, ph, pw, m, by_tiles, step, v, vc, dm, du, taps, scratch)
    return all_finite(scratch[-1])
