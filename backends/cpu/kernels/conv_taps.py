"""Kernel taps that only ever read padding.

A conv whose input is not much larger than its window (the last stage of an ImageNet-stem
ResNet-18 on 32x32 images runs 3x3 convs on 1x1 and 2x2 maps) multiplies most of its weights
by the zeros of the padding: on a 1x1 map, 8 of a 3x3 kernel's 9 taps never reach the input.
Cropping the kernel to the taps that do gives the same output from a smaller conv: there a
1x1 conv, one GEMM with 9x fewer FLOPs; the weight gradient of the dropped taps is zero.

The dropped products are 0 * w (forward) and 0 * dL/dy (weight gradient), which differ from
zero only for a NaN or an infinity; the entry points in conv.py crop only when those operands
are finite. The input gradient never stores what the dropped taps compute.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from .parallel import sized_kernel
from .reduce import all_finite

Crop = tuple[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]
"""((rows i0..i1-1), (columns j0..j1-1)) of the kernel kept, and the (PH, PW) that the cropped
conv needs to give the same output."""


def _live_taps(size, k, stride, pad, dil):
    """(first, end, padding) of the taps along one axis that read an input element for some
    output position, with the padding that keeps the output; None when none is dropped or the
    cropped conv would need more padding on one side than the other."""
    out = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    live = [i for i in range(k) if any(0 <= o * stride - pad + i * dil < size for o in range(out))]
    if not live or len(live) == k:
        return None if not live else (0, k, pad)
    first, end = live[0], live[-1] + 1
    pad2 = pad - first * dil
    if pad2 < 0 or (size + 2 * pad2 - dil * (end - first - 1) - 1) // stride + 1 != out:
        return None
    return first, end, pad2


@functools.lru_cache(maxsize=4096)
def live_crop(x_hw, w_hw, stride, padding, dilation) -> Crop | None:
    """The crop of a conv's kernel to its live taps (see ``Crop``), or None when every tap
    reads the input somewhere (or the crop would need uneven padding)."""
    axes = [_live_taps(*a) for a in zip(x_hw, w_hw, stride, padding, dilation)]
    if None in axes or all(end - first == k for (first, end, _), k in zip(axes, w_hw)):
        return None
    (i0, i1, ph), (j0, j1, pw) = axes
    return ((i0, i1), (j0, j1)), (ph, pw)


def cropped_shape(w_shape, crop: Crop) -> tuple[int, int, int, int]:
    (i0, i1), (j0, j1) = crop[0]
    return (*w_shape[:2], i1 - i0, j1 - j0)


def crop_weight(w: np.ndarray, crop: Crop) -> tuple[np.ndarray, bool]:
    """The live taps of w (K, C/g, KH, KW), as a new C-contiguous array, and whether all of w
    (dropped taps included) is finite."""
    live = np.empty(cropped_shape(w.shape, crop), w.dtype)
    nonfinite = np.empty(w.shape[0], np.bool_)
    _move_taps(w, live, crop[0][0][0], crop[0][1][0], True, nonfinite)
    return live, not nonfinite.any()


def uncrop_grad(gw_live: np.ndarray, gw: np.ndarray, crop: Crop) -> None:
    """gw = the weight gradient whose live taps are gw_live and whose dropped taps are 0."""
    _move_taps(gw, gw_live, crop[0][0][0], crop[0][1][0], False, np.empty(0, np.bool_))


# A parallel kernel, not NumPy's strided copies: 512 -> 256 channels cropped from 3x3 to 2x2
# took 1.1 ms to crop and 1.2 ms to uncrop, about two thirds of each pass of the conv.
@sized_kernel(size_arg=0, min_elements=1 << 18)
def _move_taps(full, live, i0, j0, to_live, nonfinite):
    """Crop (``to_live``): live[k, c, i, j] = full[k, c, i0 + i, j0 + j], and nonfinite[k]
    whether some value of full[k] is a NaN or an infinity. Uncrop: full[k, c, i0 + i, j0 + j]
    = live[k, c, i, j], and 0 at the other taps."""
    taps, kw = full.shape[2] * full.shape[3], full.shape[3]
    lh, lw = live.shape[2], live.shape[3]
    ff = full.reshape(full.shape[0], -1)
    lf = live.reshape(live.shape[0], -1)
    for k in prange(full.shape[0]):
        fk, lk = ff[k], lf[k]
        if to_live:
            nonfinite[k] = not all_finite(fk)
        else:
            for e in range(fk.shape[0]):
                fk[e] = 0
        for i in range(lh):
            for j in range(lw):
                f, li = (i0 + i) * kw + j0 + j, i * lw + j
                if to_live:
                    _copy_channels(lk, li, lh * lw, fk, f, taps, full.shape[1])
                else:
                    _copy_channels(fk, f, taps, lk, li, lh * lw, full.shape[1])


@njit(cache=True, inline="always")
def _copy_channels(dst, d0, dstep, src, s0, sstep, n):
    """dst[d0 + c * dstep] = src[s0 + c * sstep] for c < n: one tap of every input channel
    (channels innermost: a loop of constant strides)."""
    for c in range(n):
        dst[d0 + c * dstep] = src[s0 + c * sstep]
