"""Softmax, log-softmax, their gradients and cross-entropy on the GPU.

Arrays are seen as (outer, R, inner) around the op's axis, as on the CPU backend; a *line* is
one (outer, inner) pair, its R elements ``base + r*inner``. When inner == 1 (the last axis, the
usual case) a block owns a line: its threads stride the contiguous row and meet in
shared-memory trees for the max and the sum. When inner > 1 a thread owns a line and walks it
serially, so a warp reads consecutive elements. Sums accumulate in float64; the per-element
arithmetic (``exp`` included) is in the arrays' own precision.

Cross-entropy is two passes: a block per row writes that row's loss to a workspace, then one
block averages the rows. An out-of-range target makes the loss NaN in the kernel (never an
out-of-bounds read); the executable checks targets fed from the host before they go up.
"""

from __future__ import annotations

import math

from numba import float64, int64

from .runtime import jit, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels

SOFTMAX, LOG_SOFTMAX, SOFTMAX_GRAD, LOG_SOFTMAX_GRAD = range(4)
MODES = {
    "softmax": SOFTMAX,
    "log_softmax": LOG_SOFTMAX,
    "softmax_grad": SOFTMAX_GRAD,
    "log_softmax_grad": LOG_SOFTMAX_GRAD,
}


@jit(device=True)
def _block_sum(buf, v, tid, nt):
    """Sum of ``v`` over the block's ``nt`` (a power of two) threads, returned to all."""
    buf[tid] = v
    cuda.syncthreads()
    h = nt // 2
    while h > 0:
        if tid < h:
            buf[tid] += buf[tid + h]
        cuda.syncthreads()
        h //= 2
    total = buf[0]
    cuda.syncthreads()
    return total


@jit(device=True)
def _block_max(buf, v, tid, nt):
    """Max of ``v`` over the block (a NaN wins), returned to all threads."""
    buf[tid] = v
    cuda.syncthreads()
    h = nt // 2
    while h > 0:
        if tid < h:
            other = buf[tid + h]
            if other > buf[tid] or other != other:
                buf[tid] = other
        cuda.syncthreads()
        h //= 2
    best = buf[0]
    cuda.syncthreads()
    return best


@jit(device=True)
def _line_max(a, base, start, step, r_len, inner):
    m = a.dtype.type(-math.inf)
    for r in range(start, r_len, step):
        v = a[base + r * inner]
        if v > m or v != v:
            m = v
    return m


@jit(device=True)
def _line_sum(a, b, base, start, step, r_len, inner, mode, m):
    """The partial sum a line's write pass needs: sum exp(a - m), sum g*y, or sum g."""
    s = 0.0
    for r in range(start, r_len, step):
        k = base + r * inner
        if mode <= LOG_SOFTMAX:
            s += math.exp(a[k] - m)
        elif mode == SOFTMAX_GRAD:
            s += a[k] * b[k]
        else:
            s += a[k]
    return s


@jit(device=True)
def _line_write(a, b, out, base, start, step, r_len, inner, mode, m, s):
    """The line's outputs from its max ``m`` and float64 sum ``s``, computed in the arrays'
    own precision: the per-line constants are rounded once, so no float64 operation (or
    float64 exp) runs per element."""
    t = a.dtype.type
    if mode == SOFTMAX:
        c = t(1.0 / s)
    elif mode == LOG_SOFTMAX:
        c = t(m + math.log(s))
    else:
        c = t(s)
    for r in range(start, r_len, step):
        k = base + r * inner
        if mode == SOFTMAX:
            out[k] = math.exp(a[k] - m) * c
        elif mode == LOG_SOFTMAX:
            out[k] = a[k] - c
        elif mode == SOFTMAX_GRAD:  # a = dy, b = y
            out[k] = b[k] * (a[k] - c)
        else:  # LOG_SOFTMAX_GRAD: a = dy, b = y = log_softmax
            out[k] = a[k] - math.exp(b[k]) * c


@jit(device=True)
def _lanes(per_block):
    """(lane, lanes, first item, item step): a block per item, or a thread per item."""
    if per_block:
        return (int64(cuda.threadIdx.x), int64(cuda.blockDim.x), int64(cuda.blockIdx.x),
                int64(cuda.gridDim.x))  # fmt: skip
    return int64(0), int64(1), int64(cuda.grid(1)), int64(cuda.gridsize(1))


@jit(cache=True)
def along_axis(a, b, out, lines, r_len, inner, mode, per_block):
    """Softmax-family op over every line; ``b`` is unused by the forward modes. With
    ``per_block`` a block owns a line (long rows), else a thread does (short rows, or
    inner > 1, where neighbouring threads then read neighbouring elements)."""
    buf = cuda.shared.array(256, float64)
    tid, nt, line, step = _lanes(per_block)
    while line < lines:
        o = line // inner
        base = o * r_len * inner + line - o * inner
        m = a.dtype.type(0)
        if mode <= LOG_SOFTMAX:
            m = _line_max(a, base, tid, nt, r_len, inner)
            if per_block:
                m = a.dtype.type(_block_max(buf, m, tid, nt))
        s = _line_sum(a, b, base, tid, nt, r_len, inner, mode, m)
        if per_block:
            s = _block_sum(buf, s, tid, nt)
        _line_write(a, b, out, base, tid, nt, r_len, inner, mode, m, s)
        line += step


@jit(device=True)
def _row_stats(buf, logits, base, tid, nt, c, per_block):
    """(max, sum of exp(x - max)) of one row of logits."""
    m = _line_max(logits, base, tid, nt, c, 1)
    if per_block:
        m = logits.dtype.type(_block_max(buf, m, tid, nt))
    s = _line_sum(logits, logits, base, tid, nt, c, 1, SOFTMAX, m)
    if per_block:
        s = _block_sum(buf, s, tid, nt)
    return m, s


@jit(cache=True)
def cross_entropy_rows(logits, targets, rows, n, c, per_block):
    """rows[i] = logsumexp(logits[i]) - logits[i, targets[i]] (NaN for a bad target)."""
    buf = cuda.shared.array(256, float64)
    tid, nt, i, step = _lanes(per_block)
    while i < n:
        base = i * c
        m, s = _row_stats(buf, logits, base, tid, nt, c, per_block)
        if tid == 0:
            t = targets[i]
            if 0 <= t < c:
                rows[i] = math.log(s) + m - logits[base + t]
            else:
                rows[i] = math.nan
        i += step


@jit(cache=True)
def mean_rows(rows, out, n):
    """out[0] = mean of rows[:n], one block (of any power-of-two size)."""
    buf = cuda.shared.array(256, float64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    s = 0.0
    for i in range(tid, n, nt):
        s += rows[i]
    s = _block_sum(buf, s, tid, nt)
    if tid == 0:
        out[0] = s / n


@jit(cache=True)
def cross_entropy_grad_rows(logits, targets, g, out, n, c, per_block):
    """out[i] = (softmax(logits[i]) - onehot(targets[i])) * g / n; NaN for a bad target."""
    buf = cuda.shared.array(256, float64)
    tid, nt, i, step = _lanes(per_block)
    real = logits.dtype.type
    scale = real(g[0] / n)
    while i < n:
        base = i * c
        m, s = _row_stats(buf, logits, base, tid, nt, c, per_block)
        inv = real(1.0 / s)
        t = targets[i]
        bad = t < 0 or t >= c
        for j in range(tid, c, nt):
            p = math.exp(logits[base + j] - m) * inv
            if j == t:
                p -= real(1)
            out[base + j] = math.nan if bad else p * scale
        i += step
