"""Winograd tile transforms on blocks of tiles, one channel at a time (winograd_rows.py has the
matrices; winograd.py drives).

A block is a run of consecutive tile rows g0 .. g1-1 of the whole batch (tile row g: image
g // TH, tile row g % TH); its tiles t = (g - g0) * TW + tc are the columns of the GEMM
operands V (a*a, C, tiles), M and dM (a*a, K, tiles), entry xi = i*a + j of the a x a tile.

Every loop runs over all the tiles of a block at once: a tile row alone has only TW = 1..16
tiles, too few to vectorize. So the input transform first copies, for every tile row, its a
input rows (zero padded, columns -pw .. WT-pw-1 where WT = TW*m) into xr, whose rows are then
contiguous runs of the block's tile rows: B^T applied vertically is one pass over xr. Tile t's
patch column q < m then sits at t*m + q (one stride-m deinterleave, which LLVM vectorizes as a
shuffle group); columns m and m+1 are the next tile's first two, except at the end of a tile
row, where they come from two overflow columns per tile row (xo), transformed alongside. The
output transform runs the other way: A^T vertically over M's rows, horizontally with the m
outputs of each tile stored side by side, so each output row is a contiguous copy.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .runs import copy_run, zero_run
from .winograd_rows import (
    a2_rows,
    a4_rows,
    accumulate_nonfinite,
    at2_interleaved,
    at2_rows,
    at4_interleaved,
    at4_rows,
    bt2_rows,
    bt4_rows,
    deinterleave2,
    deinterleave4,
)

ROW_PAD = 16  # elements added to every scratch row: see padded()


def padded(n: int) -> int:
    """The row length for rows of n elements: rows whose length is a multiple of 4 KiB (the
    power-of-two tile and channel counts make them so) that one loop reads and writes side by
    side all map to the same L1 sets (4K aliasing: measured 5x slower on 128-tile blocks)."""
    return n + ROW_PAD


def planes(lead: int, a2: int, rows: int, cols: int, dtype) -> np.ndarray:
    """Empty (lead, a2, rows + 1, padded(cols)): a2 planes of ``rows`` rows (callers slice
    [:rows]) and one spare, so that planes do not start 4 KiB apart. With power-of-two rows
    they did, and a transform writing one row of each of 6 planes hit a single L1 set: the
    input transform's last step 1.27 -> 0.84 ms on 64 -> 64 at 32 px, batch 32."""
    return np.empty((lead, a2, rows + 1, padded(cols)), dtype)


def tile_scratch(
    threads: int, rows: int, tw: int, m: int, dtype, weights_per_row: int = 0
) -> tuple[np.ndarray, ...]:
    """Scratch for each of ``threads`` threads, for blocks of up to ``rows`` tile rows of
    TW = tw tiles: (xr, xo, t, to, p) for input_block, (sb, yb) for output_block, (yb, zb, sb)
    for grad_output_block, and last the zeros their non-finite checks accumulate into (see
    all_finite), long enough for filter_block's runs of ``weights_per_row`` weights too. Each
    array's first axis is the thread."""
    a, nb = m + 2, rows * tw
    shapes = [(a, nb * m), (a, rows * 2), (a, nb * m), (a, rows * 2), (a, nb), (m * a, nb),
              (m, nb * m), (m * m, nb)]  # fmt: skip
    arrays = tuple(np.empty((threads, *shape[:-1], padded(shape[-1])), dtype) for shape in shapes)
    return (*arrays, np.zeros((threads, padded(max(nb * m, weights_per_row))), dtype))


def all_finite(acc: np.ndarray) -> bool:
    """Whether every value the blocks read into ``acc`` (tile_scratch's last array) was
    finite."""
    return bool((acc == 0).all())


@njit(cache=True, inline="always")
def _bt_rows(m, d, o, lo, hi):
    """o[i, lo:hi] = (B^T d)[i] with rows d[j, lo:hi]."""
    if m == 2:
        bt2_rows(d[0, lo:hi], d[1, lo:hi], d[2, lo:hi], d[3, lo:hi],
                 o[0, lo:hi], o[1, lo:hi], o[2, lo:hi], o[3, lo:hi])  # fmt: skip
    else:
        bt4_rows(d[0, lo:hi], d[1, lo:hi], d[2, lo:hi], d[3, lo:hi], d[4, lo:hi], d[5, lo:hi],
                 o[0, lo:hi], o[1, lo:hi], o[2, lo:hi], o[3, lo:hi], o[4, lo:hi],
                 o[5, lo:hi])  # fmt: skip


@njit(cache=True)
def _gather_input_rows(x, c, g0, g1, th, tw, ph, pw, m, xr, xo):
    """xr[j, (g-g0)*WT + col] = x[n, c, tr*m - ph + j, col - pw] and the two overflow columns
    col = WT, WT+1 in xo[j, 2*(g-g0) + u]; zero outside the image."""
    h, wd = x.shape[2], x.shape[3]
    wt = tw * m
    lo = min(pw, wt)
    hi = max(lo, min(wt, pw + wd))
    for g in range(g0, g1):
        n, tr, row = g // th, g % th, g - g0
        plane = (n * x.shape[1] + c) * h
        for j in range(m + 2):
            r = tr * m - ph + j
            d = j * xr.shape[1] + row * wt
            if 0 <= r < h:
                zero_run(xr, d, lo)
                copy_run(xr, d + lo, x, (plane + r) * wd + lo - pw, hi - lo)
                zero_run(xr, d + hi, wt - hi)
                for u in range(2):
                    col = wt + u - pw
                    xo[j, 2 * row + u] = x[n, c, r, col] if 0 <= col < wd else 0
            else:
                zero_run(xr, d, wt)
                xo[j, 2 * row] = 0
                xo[j, 2 * row + 1] = 0


@njit(cache=True, inline="always")
def _patch_columns(t, to, i, nrows, tw, m, p):
    """p[q, tile] = column q < a of row i of the tile's B^T d (see the module docstring)."""
    nb = nrows * tw
    ti = t[i, : nb * m]
    if m == 2:
        deinterleave2(ti, p[0, :nb], p[1, :nb])
    else:
        deinterleave4(ti, p[0, :nb], p[1, :nb], p[2, :nb], p[3, :nb])
    ld = p.shape[1]
    copy_run(p, m * ld, p, 1, nb - 1)
    copy_run(p, (m + 1) * ld, p, ld + 1, nb - 1)
    for row in range(nrows):
        p[m, row * tw + tw - 1] = to[i, 2 * row]
        p[m + 1, row * tw + tw - 1] = to[i, 2 * row + 1]


@njit(cache=True)
def input_block(x, c, g0, g1, th, tw, ph, pw, m, v, vc, xr, xo, t, to, p, acc):
    """v[:, vc, :(g1-g0)*TW] = B^T d B for every tile of channel c in the tile rows g0 .. g1-1
    (zero padding ph, pw). Every input value read is checked into acc (all_finite): a NaN or
    an infinity must not reach a Winograd sum (Inf - Inf is NaN where the direct sum is Inf),
    so the caller recomputes the conv with another algorithm."""
    nrows = g1 - g0
    nb, wl = nrows * tw, nrows * tw * m
    _gather_input_rows(x, c, g0, g1, th, tw, ph, pw, m, xr, xo)
    for j in range(m + 2):
        accumulate_nonfinite(xr[j, :wl], acc)
        accumulate_nonfinite(xo[j, : 2 * nrows], acc)
    _bt_rows(m, xr, t, 0, wl)
    _bt_rows(m, xo, to, 0, 2 * nrows)
    if m == 2:
        for i in range(4):
            _patch_columns(t, to, i, nrows, tw, 2, p)
            bt2_rows(p[0, :nb], p[1, :nb], p[2, :nb], p[3, :nb],
                     v[4 * i, vc, :nb], v[4 * i + 1, vc, :nb], v[4 * i + 2, vc, :nb],
                     v[4 * i + 3, vc, :nb])  # fmt: skip
    else:
        for i in range(6):
            _patch_columns(t, to, i, nrows, tw, 4, p)
            bt4_rows(p[0, :nb], p[1, :nb], p[2, :nb], p[3, :nb], p[4, :nb], p[5, :nb],
                     v[6 * i, vc, :nb], v[6 * i + 1, vc, :nb], v[6 * i + 2, vc, :nb],
                     v[6 * i + 3, vc, :nb], v[6 * i + 4, vc, :nb],
                     v[6 * i + 5, vc, :nb])  # fmt: skip


@njit(cache=True)
def output_block(mm, k, g0, g1, th, tw, m, out, ko, bias, sb, yb):
    """out[n, ko, output rows of the tile rows g0 .. g1-1] = A^T M A (+ bias[ko] unless bias
    is empty), M = mm[:, k, tile]; outputs past the edges of ``out`` are dropped."""
    oh, ow = out.shape[2], out.shape[3]
    wt, nb = tw * m, (g1 - g0) * tw
    if m == 2:  # sb[r*a + j] = (A^T M)[r, j]; yb[r, tile*m + q] = (A^T M A)[r, q]
        for j in range(4):
            at2_rows(mm[j, k, :nb], mm[4 + j, k, :nb], mm[8 + j, k, :nb], mm[12 + j, k, :nb],
                     sb[j, :nb], sb[4 + j, :nb])  # fmt: skip
        for r in range(2):
            s = r * 4
            at2_interleaved(sb[s, :nb], sb[s + 1, :nb], sb[s + 2, :nb], sb[s + 3, :nb],
                            yb[r, : 2 * nb])  # fmt: skip
    else:
        for j in range(6):
            at4_rows(mm[j, k, :nb], mm[6 + j, k, :nb], mm[12 + j, k, :nb], mm[18 + j, k, :nb],
                     mm[24 + j, k, :nb], mm[30 + j, k, :nb],
                     sb[j, :nb], sb[6 + j, :nb], sb[12 + j, :nb], sb[18 + j, :nb])  # fmt: skip
        for r in range(4):
            s = r * 6
            at4_interleaved(sb[s, :nb], sb[s + 1, :nb], sb[s + 2, :nb], sb[s + 3, :nb],
                            sb[s + 4, :nb], sb[s + 5, :nb], yb[r, : 4 * nb])  # fmt: skip
    if bias.shape[0]:
        for r in range(m):
            row, b = yb[r, : m * nb], bias[ko]
            for q in range(m * nb):
                row[q] += b
    for g in range(g0, g1):
        n, tr = g // th, g % th
        for r in range(min(m, oh - tr * m)):
            dst = ((n * out.shape[1] + ko) * oh + tr * m + r) * ow
            copy_run(out, dst, yb, r * yb.shape[1] + (g - g0) * wt, ow)


@njit(cache=True)
def _gather_grad(gy, k, g0, g1, th, tw, m, yb):
    """yb[r, (g-g0)*WT + col] = gy[n, k, tr*m + r, col], zero past the edges."""
    oh, ow = gy.shape[2], gy.shape[3]
    wt = tw * m
    for g in range(g0, g1):
        n, tr = g // th, g % th
        plane = (n * gy.shape[1] + k) * oh
        for r in range(m):
            d = r * yb.shape[1] + (g - g0) * wt
            if tr * m + r < oh:
                copy_run(yb, d, gy, (plane + tr * m + r) * ow, ow)
                zero_run(yb, d + ow, wt - ow)
            else:
                zero_run(yb, d, wt)


@njit(cache=True)
def grad_output_block(gy, k, g0, g1, th, tw, m, dm, mk, yb, zb, sb, acc):
    """dm[:, mk, :(g1-g0)*TW] = A dY A^T for every output tile of gy[:, k] in the tile rows
    g0 .. g1-1 (dY zero past the edges); gy's values are checked into acc (all_finite)."""
    nb = (g1 - g0) * tw
    _gather_grad(gy, k, g0, g1, th, tw, m, yb)
    for r in range(m):
        accumulate_nonfinite(yb[r, : nb * m], acc)
    # sb[r*a + j] = (dY A^T)[r, j], through zb[r*m + q] = dY[r, q]; then
    # dm[i*a + j] = (A dY A^T)[i, j]
    if m == 2:
        for r in range(2):
            z, s = r * 2, r * 4
            deinterleave2(yb[r, : 2 * nb], zb[z, :nb], zb[z + 1, :nb])
            a2_rows(zb[z, :nb], zb[z + 1, :nb],
                    sb[s, :nb], sb[s + 1, :nb], sb[s + 2, :nb], sb[s + 3, :nb])  # fmt: skip
        for j in range(4):
            a2_rows(sb[j, :nb], sb[4 + j, :nb],
                    dm[j, mk, :nb], dm[4 + j, mk, :nb], dm[8 + j, mk, :nb],
                    dm[12 + j, mk, :nb])  # fmt: skip
    else:
        for r in range(4):
            z, s = r * 4, r * 6
            deinterleave4(yb[r, : 4 * nb], zb[z, :nb], zb[z + 1, :nb], zb[z + 2, :nb],
                          zb[z + 3, :nb])  # fmt: skip
            a4_rows(zb[z, :nb], zb[z + 1, :nb], zb[z + 2, :nb], zb[z + 3, :nb],
                    sb[s, :nb], sb[s + 1, :nb], sb[s + 2, :nb], sb[s + 3, :nb],
                    sb[s + 4, :nb], sb[s + 5, :nb])  # fmt: skip
        for j in range(6):
            a4_rows(sb[j, :nb], sb[6 + j, :nb], sb[12 + j, :nb], sb[18 + j, :nb],
                    dm[j, mk, :nb], dm[6 + j, mk, :nb], dm[12 + j, mk, :nb],
                    dm[18 + j, mk, :nb], dm[24 + j, mk, :nb], dm[30 + j, mk, :nb])  # fmt: skip
