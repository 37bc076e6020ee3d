"""im2col GEMMs in per-thread chunks of images, for the convs whose im2col copies whole phase
planes (conv_phases.py) and whose images are large next to their weights.

conv_gemm.py runs each chunk of images through parallel kernels: im2col, then one GEMM split
over the threads, then the scatter to NCHW. Its columns (C*KH*KW, m*P) then pass through
memory three times (written, read by the GEMM, the result scattered), which cost ResNet-18's
64->128 stride-2 conv (32 -> 16 px, batch 32) 40% of its GEMM time. Here each thread takes
whole chunks of a few images, sized so that their columns stay in its L2 cache, and runs
im2col, a single-threaded GEMM and the scatter back to back. Each GEMM re-reads the weights,
so this pays only while a chunk's columns outweigh them (``pays``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import conv_gemm as _g
from . import conv_phases as _p
from .blas import gemm
from .linalg import weights_for_input_grads

CHUNK_BYTES = 1 << 20  # one thread's scratch per chunk: half a 2 MiB L2

# The serial builds of the copy kernels, called inside the chunk loops.
_im2col = _g.im2col.serial
_col2im = _g.col2im.serial
_split_phases = _p.split_phases.serial
_im2col_phases = _p.im2col_phases.serial
_col2im_phases = _p.col2im_phases.serial
_gather_channels = _g.gather_channels.serial
_scatter_channels = _g.scatter_channels.serial


def pays(x_shape, w_shape, out_hw, stride, groups) -> bool:
    """Whether the chunked GEMMs apply (ungrouped phase-plane im2col) and beat conv_gemm's:
    when an image's output pixels are at least half the output channels, the weights each
    chunk re-reads weigh less than the columns kept out of memory (ResNet-18's stride-2
    convs: yes at 32 -> 16 px, no from 16 -> 8 px on, where the channels double)."""
    k = w_shape[0]
    p = out_hw[0] * out_hw[1]
    return groups == 1 and _p.applies(x_shape[2:], out_hw, stride) and 2 * p >= k


@njit(cache=True, inline="always")
def _columns(x, xp, cols, n0, m, kh, kw, s, ph, pw, dh, dw, oh_, ow_):
    """cols (C*KH*KW, m*P) = im2col of images n0 .. n0+m-1, through the phase planes xp
    where conv_gemm.phases_pay."""
    if kh == 1 and kw == 1:
        _im2col(x, cols, n0, m, kh, kw, s, s, ph, pw, dh, dw, oh_, ow_)
    elif s == 1:
        _im2col_phases(x[n0 : n0 + m].reshape(m, x.shape[1], 1, oh_ * ow_), cols, m, kh, kw,
                       s, ph, pw, dh, dw, oh_, ow_)  # fmt: skip
    else:
        _split_phases(x, xp, n0, s)
        _im2col_phases(xp, cols, m, kh, kw, s, ph, pw, dh, dw, oh_, ow_)


@njit(parallel=True, cache=True, nogil=True)
def _forward(x, w2, b, out3, m, kh, kw, s, ph, pw, dh, dw, oh_, ow_, xp, cols, y):
    n_, p_, nt = x.shape[0], oh_ * ow_, cols.shape[0]
    for t in prange(nt):
        tid = np.int64(t)  # (the prange index is unsigned inside the parallel region)
        for n0 in range(tid * m, n_, nt * m):
            mm = min(m, n_ - n0)
            cv, yv = cols[tid, :, : mm * p_], y[tid, :, : mm * p_]
            _columns(x, xp[tid, :mm], cv, n0, mm, kh, kw, s, ph, pw, dh, dw, oh_, ow_)
            gemm(w2, cv, yv, False, False, 1.0, 0.0)
            _scatter_channels(yv, out3, n0, mm, 0, b)


@njit(parallel=True, cache=True, nogil=True)
def _backward_input(gy3, w2, trans_w, gx, m, kh, kw, s, ph, pw, dh, dw, oh_, ow_, gxp, cols, g):
    n_, p_, nt = gx.shape[0], oh_ * ow_, cols.shape[0]
    for t in prange(nt):
        tid = np.int64(t)
        for n0 in range(tid * m, n_, nt * m):
            mm = min(m, n_ - n0)
            cv, gv = cols[tid, :, : mm * p_], g[tid, :, : mm * p_]
            _gather_channels(gy3, gv, n0, mm, 0)
            gemm(w2, gv, cv, trans_w, False, 1.0, 0.0)
            if kh == 1 and kw == 1:
                _col2im(cv, gx, n0, mm, kh, kw, s, s, ph, pw, dh, dw, oh_, ow_)
            else:
                _col2im_phases(cv, gx, gxp[tid, :mm], n0, kh, kw, s, ph, pw, dh, dw, oh_, ow_)


@njit(parallel=True, cache=True, nogil=True)
def _backward_weight(x, gy3, gws, transposed, m, kh, kw, s, ph, pw, dh, dw, oh_, ow_, xp, cols,
                     g):  # fmt: skip
    """gws[t] = thread t's share of the weight gradient (zero if it had no images), or its
    transpose when ``transposed``."""
    n_, p_, nt = x.shape[0], oh_ * ow_, cols.shape[0]
    for t in prange(nt):
        tid = np.int64(t)
        gws[tid] = 0
        for n0 in range(tid * m, n_, nt * m):
            mm = min(m, n_ - n0)
            cv, gv = cols[tid, :, : mm * p_], g[tid, :, : mm * p_]
            _columns(x, xp[tid, :mm], cv, n0, mm, kh, kw, s, ph, pw, dh, dw, oh_, ow_)
            _gather_channels(gy3, gv, n0, mm, 0)
            if transposed:
                gemm(cv, gv, gws[tid], False, True, 1.0, 1.0)
            else:
                gemm(gv, cv, gws[tid], False, True, 1.0, 1.0)


def _scratch(n, c, k, kh, kw, s, p, dtype, planes=False):
    """(images per chunk, phase planes, columns, GEMM operand) for each of Numba's threads,
    CHUNK_BYTES of them per thread and chunk. im2col reads a stride-1 input as its own phase
    plane; col2im always needs ``planes``; a 1x1 conv none (see conv_gemm.phases_pay)."""
    rows, nt = c * kh * kw, numba.get_num_threads()
    planes_rows = c * s * s if (kh, kw) != (1, 1) and (s > 1 or planes) else 0
    m = _g.chunk_images(n, rows + k + planes_rows, p, np.dtype(dtype).itemsize, CHUNK_BYTES)
    xp = np.empty((nt, m if planes_rows else 0, c, s * s, p), dtype)
    return m, xp, np.empty((nt, rows, m * p), dtype), np.empty((nt, k, m * p), dtype)


def forward(x, w, b, out, s, ph, pw, dh, dw) -> None:
    """out = conv of x by w (+ b unless empty), for a conv that ``pays``."""
    n, c = x.shape[:2]
    k, _, kh, kw = w.shape
    oh, ow = out.shape[2:]
    m, xp, cols, y = _scratch(n, c, k, kh, kw, s, oh * ow, x.dtype)
    _forward(x, w.reshape(k, -1), b, out.reshape(n, k, oh * ow), m, kh, kw, s, ph, pw, dh, dw,
             oh, ow, xp, cols, y)  # fmt: skip


def backward_input(gy, w, gx, s, ph, pw, dh, dw) -> None:
    """gx (overwritten) = dL/dx from gy, for a conv that ``pays``."""
    n, c = gx.shape[:2]
    k, _, kh, kw = w.shape
    oh, ow = gy.shape[2:]
    m, gxp, cols, g = _scratch(n, c, k, kh, kw, s, oh * ow, gx.dtype, planes=True)
    w2, trans_w = weights_for_input_grads(w.reshape(k, -1), 1)
    _backward_input(gy.reshape(n, k, oh * ow), w2, trans_w, gx, m, kh, kw, s, ph, pw, dh, dw,
                    oh, ow, gxp, cols, g)  # fmt: skip


def backward_weight(x, gy, gw, s, ph, pw, dh, dw) -> None:
    """gw (overwritten) = dL/dw from x and gy, for a conv that ``pays``: per-thread partial
    sums, added at the end."""
    n, c = x.shape[:2]
    k, _, kh, kw = gw.shape
    oh, ow = gy.shape[2:]
    m, xp, cols, g = _scratch(n, c, k, kh, kw, s, oh * ow, x.dtype)
    rows = cols.shape[1]
    transposed = _g.transposed_weight_grad(rows, k, x.dtype)
    gws = np.empty((cols.shape[0], *((rows, k) if transposed else (k, rows))), x.dtype)
    _backward_weight(x, gy.reshape(n, k, oh * ow), gws, transposed, m, kh, kw, s, ph, pw, dh, dw,
                     oh, ow, xp, cols, g)  # fmt: skip
    if transposed:
        gw.reshape(k, -1)[:] = gws.sum(axis=0).T
    else:
        np.sum(gws, axis=0, out=gw.reshape(k, -1))
