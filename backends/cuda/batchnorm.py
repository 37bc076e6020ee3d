"""CUDA lowering of training BatchNorm's reductions, ``batch_norm_stats`` and
``batch_norm_grad_stats`` (graph/ops/norm_stats.py), as on the CPU (cpu/kernels/batchnorm.py):
per channel c of (N, C, L) views of a and b, ``sum(a - ka)`` and
``sum((a - ka) * (b - kb))`` in float64, then a per-channel finish into the op's rows.

The statistics take a = b = x and ka = kb = the channel's first value (when finite: the shift
that keeps a large mean from cancelling the variance); the gradient sums take a = g, b = x,
ka = 0, kb = the mean. Block (c, s) sums chunk s of channel c's N * L values (threads stride
it, then meet in a shared-memory tree, as backends/cuda/reduce.py's blocks do); with one chunk
per channel its thread 0 also finishes the channel, else a second kernel adds the chunks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64, int64

from .codegen import prepared
from .lowering import lowers
from .reduce import _block_sum
from .runtime import blocks_for, flat, jit, launcher, load_cuda, pow2_threads, sm_count

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels

MAX_SPLITS = 1024


@jit(device=True)
def _shifts(a, mean, c, l_, stats):
    """(ka, kb) of channel c."""
    if stats:
        first = float64(a[c * l_]) if a.size else 0.0
        shift = 0.0 if math.isinf(first) or math.isnan(first) else first
        return shift, shift
    return 0.0, float64(mean[c % mean.size])


@jit(device=True)
def _finish(out, c, c_, count, s1, s2, ka, stats):
    """The channel's two output rows from its two sums (``out`` flat, (2, C))."""
    t = out.dtype.type
    if stats:
        d = s1 / count
        var = s2 / count - d * d
        out[c] = t(ka + d)
        out[c_ + c] = t(0.0 if var < 0.0 else var)  # below 0 by rounding only; NaN stays NaN
    else:
        out[c] = t(s1)
        out[c_ + c] = t(s2)


@jit(cache=True)
def channel_sums(a, b, mean, out, partial, c_, l_, chunk, stats):
    """Block (c, s): the two sums of chunk s of channel c's N * L values (a, b flat (N, C, L);
    ``mean`` flat, 1 or C values, read when not ``stats``); ``partial`` (2, splits, C)."""
    buf = cuda.shared.array(256, float64)
    c = int64(cuda.blockIdx.x)
    s = int64(cuda.blockIdx.y)
    tid = int64(cuda.threadIdx.x)
    nt = int64(cuda.blockDim.x)
    count = (a.size // c_) if c_ else 0
    ka, kb = _shifts(a, mean, c, l_, stats)
    end = min(count, (s + 1) * chunk)
    t1 = 0.0
    t2 = 0.0
    r = s * chunk + tid
    while r < end:
        n = r // l_
        k = (n * c_ + c) * l_ + r - n * l_
        u = float64(a[k]) - ka
        t1 += u
        t2 += u * (float64(b[k]) - kb)
        r += nt
    t1 = _block_sum(buf, t1, tid, nt)
    t2 = _block_sum(buf, t2, tid, nt)
    if tid != 0:
        return
    if cuda.gridDim.y == 1:
        _finish(out, c, c_, count, t1, t2, ka, stats)
    else:
        partial[0, s, c] = t1
        partial[1, s, c] = t2


@jit(cache=True)
def finish_sums(a, mean, out, partial, c_, l_, stats):
    """One thread per channel: add the chunks' partial sums and finish the channel."""
    c = int64(cuda.grid(1))
    if c >= c_:
        return
    s1 = 0.0
    s2 = 0.0
    for s in range(partial.shape[1]):
        s1 += partial[0, s, c]
        s2 += partial[1, s, c]
    ka, _ = _shifts(a, mean, c, l_, stats)
    _finish(out, c, c_, (a.size // c_) if c_ else 0, s1, s2, ka, stats)


def _channel_launch(x_shape: tuple[int, ...], stats: bool):
    """A launch of ``channel_sums`` (and ``finish_sums`` when the channels are split) over
    inputs of ``x_shape``; ``inputs`` are (x,) for the statistics, (g, x, mean) else."""
    c_, l_ = x_shape[1], math.prod(x_shape[2:])
    count = x_shape[0] * l_
    threads = pow2_threads(count)
    splits = min(max(1, (2 * sm_count()) // max(c_, 1)), max(1, count // (4 * threads)), MAX_SPLITS)
    chunk = max(1, math.ceil(count / splits))
    splits = max(1, math.ceil(count / chunk))
    partial = cuda.device_array((2, splits, max(c_, 1)), dtype=np.float64)
    sums = launcher(channel_sums, (max(c_, 1), splits), threads)
    finish = launcher(finish_sums, blocks_for(c_, 128), 128)
    no_mean = cuda.device_array(1, dtype=np.float64)

    def prepare(inputs, out):
        ins = [flat(v) for v in inputs]
        a, b, mean = (ins[0], ins[0], no_mean) if stats else ins
        o = flat(out)

        def run():
            if c_ == 0:
                return
            sums(a, b, mean, o, partial, c_, l_, chunk, stats)
            if splits > 1:
                finish(a, mean, o, partial, c_, l_, stats)

        return run

    return prepared(prepare)


@lowers("batch_norm_stats")
def _batch_norm_stats(node, graph):
    return _channel_launch(graph[node.inputs[0]].shape, True)


@lowers("batch_norm_grad_stats")
def _batch_norm_grad_stats(node, graph):
    return _channel_launch(graph[node.inputs[1]].shape, False)
