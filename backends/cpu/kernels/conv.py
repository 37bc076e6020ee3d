"""conv2d forward and backward kernels (NCHW, PyTorch cross-correlation semantics).

Each entry point picks an algorithm per shape (conv_choice.py) and writes into its
preallocated output:

- ``gemm1x1``: a 1x1, stride-1, unpadded conv is a GEMM per image, no im2col (the weight
  gradient accumulates one GEMM per image);
- ``full_window``: the kernel covers the whole unpadded input (output 1x1, e.g. LeNet's C5): one
  GEMM over the batch, the input read as an (N, C*H*W) matrix;
- ``dense``: maps no larger than the kernel's reach (every output pixel reads every input
  pixel: a 3x3 pad-1 conv on a 2x2 map): one GEMM over the batch with the conv's matrix
  (conv_dense.py), x and y read and written in place;
- ``direct``: stride-1 convs with few channels: vectorized direct loops on a flat padded layout
  (conv_direct.py); the GEMMs these would need have tiny dimensions and run far below BLAS speed;
- ``indirect``: stride-1 convs that reduce over many taps: a register-blocked GEMM
  micro-kernel that reads the input in place through offset tables, output channels (or, for
  few channels, pixels) along the vector lanes (conv_indirect.py); the input gradient only
  for stride 1, as for ``direct``;
- ``winograd``: 3x3 stride-1 convs with many channels: Winograd F(4x4, 3x3) or F(2x2, 3x3)
  (winograd.py), 2.25-4x fewer multiplications than the others, in the same BLAS GEMMs;
- ``im2col``: everything else: im2col + BLAS GEMM (conv_gemm.py; run in per-thread chunks that
  stay in cache, conv_chunks.py, where it copies whole phase planes and images outweigh
  weights); also the backward passes where ``direct`` would multiply its padding zeros by a
  NaN or an infinity (NaN weights for the input gradient, also for ``indirect``; a NaN
  result of the weight gradient), since 0 * Inf is NaN, and every ``winograd`` call that
  meets a NaN or an infinity (its transforms subtract neighbours: Inf - Inf is NaN): the
  GEMMs add only the products PyTorch adds.

Before choosing, a kernel whose taps partly read only padding (a 3x3 conv on a 1x1 or 2x2
map) is cropped to the taps that reach the input (conv_taps.py).

Scalars: strides ``sh, sw``, zero padding ``ph, pw``, dilation ``dh, dw``, ``groups``. All arrays
C-contiguous, one float dtype (float32 or float64). Scratch buffers are allocated per call.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import conv_chunks as _c
from . import conv_dense as _dn
from . import conv_direct as _d
from . import conv_gemm as _g
from . import conv_indirect as _i
from . import conv_taps as _t
from . import winograd as _w
from .conv_choice import ALGORITHMS, applicable_algorithms, choose_algorithm  # noqa: F401
from .linalg import group_matmul_per_image, matmul, matmul_accumulate
from .reduce import all_finite, sum_outer_inner

IM2COL_BYTES = 16 << 20  # scratch budget for one chunk of the im2col GEMMs (bigger GEMMs win)


@functools.lru_cache(maxsize=4096)  # per call it cost more than a small conv's kernel
def _algorithm(kind, x_shape, w_shape, sh, sw, ph, pw, dh, dw, groups, forced):
    args = (kind, x_shape, w_shape, (sh, sw), (ph, pw), (dh, dw), groups)
    if forced is None:
        return choose_algorithm(*args)
    if forced not in applicable_algorithms(*args):
        raise ValueError(f"conv2d {kind}: algorithm {forced!r} does not apply to this shape")
    return forced


def _check(*arrays):
    """The kernels index raw C-contiguous memory of one dtype: refuse anything else early
    (a reshape of a non-contiguous output would silently write into a copy)."""
    dtype = arrays[0].dtype
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError(f"conv2d kernels need C-contiguous arrays, got strides {a.strides}")
        if a.dtype != dtype or dtype.char not in "fd":  # float32, float64
            raise ValueError(
                f"conv2d kernels need float32 or float64 arrays of one dtype, got "
                f"{', '.join(str(b.dtype) for b in arrays)}"
            )


def _empty_bias(dtype):
    return np.empty(0, dtype=dtype)


def _direct_forward_launch(x_shape, w_shape, out_shape, ph, pw, dh, dw, groups):
    n, c, h, wd = x_shape
    hp, wp = h + 2 * ph, wd + 2 * pw
    kb, nrb = _d.blocks(n, w_shape[0] // groups, groups, out_shape[2])
    kernel = _d.direct_forward.for_size(math.prod(out_shape))
    if ph == 0 and pw == 0:
        flat = (n, c, h * wd)
        return lambda x, w, b, out: kernel(x.reshape(flat), wp, w, b, out, dh, dw, groups, kb, nrb)

    def launch(x, w, b, out):
        xf = _d.aligned_empty((n, c, hp * wp), x.dtype)
        _d.pad_flat(x, xf, ph, pw, hp, wp)
        kernel(xf, wp, w, b, out, dh, dw, groups, kb, nrb)

    return launch


def _full_window_launch(n, k):
    def launch(x, w, b, out):
        matmul(x.reshape(n, -1), w.reshape(k, -1), out.reshape(n, k), False, True)
        if b.shape[0]:
            _g.add_bias(out.reshape(n, k, 1), b)

    return launch


def _dense_forward_launch(x_shape, w_shape, out_shape, sh, sw, ph, pw, dh, dw):
    n, k = out_shape[:2]
    matrix = _dn.matrix_launch(x_shape, w_shape, (sh, sw), (ph, pw), (dh, dw))
    im2col = _forward_launch(x_shape, w_shape, out_shape, sh, sw, ph, pw, dh, dw, 1, "im2col")

    def dense(x, w, b, out):
        if not all_finite(w.reshape(-1)):  # im2col multiplies it by padding zeros: NaN
            im2col(x, w, b, out)
            return
        matmul(x.reshape(n, -1), matrix(w), out.reshape(n, -1), False, True)
        if b.shape[0]:
            _g.add_bias(out.reshape(n, k, -1), b)

    return dense


def forward_launch(x_shape, w_shape, out_shape, sh, sw, ph, pw, dh, dw, groups, algorithm=None):
    """``conv2d_forward`` for these shapes with every per-call decision (algorithm, work
    split, kernel crop) taken once: a function (x, w, b, out) of C-contiguous arrays of one
    float dtype, not checked again (what a lowering calls on the executable's buffers; at
    batch 1 the decisions cost as much as LeNet's convolutions)."""
    args = (sh, sw, ph, pw, dh, dw, groups)
    crop = None if algorithm else _live_crop(x_shape, w_shape, sh, sw, ph, pw, dh, dw)
    full = _forward_launch(x_shape, w_shape, out_shape, *args, algorithm)
    if crop is None:
        return full
    small = _forward_launch(
        x_shape, _t.cropped_shape(w_shape, crop), out_shape, sh, sw, *crop[1], dh, dw, groups, None
    )

    def cropped(x, w, b, out):
        live, finite = _t.crop_weight(w, crop)
        if finite:  # else 0 * w is NaN somewhere: the full conv says where
            small(x, live, b, out)
        else:
            full(x, w, b, out)

    return cropped


def _live_crop(x_shape, w_shape, sh, sw, ph, pw, dh, dw):
    return _t.live_crop(x_shape[2:], w_shape[2:], (sh, sw), (ph, pw), (dh, dw))


def _forward_launch(x_shape, w_shape, out_shape, sh, sw, ph, pw, dh, dw, groups, algorithm):
    args = (sh, sw, ph, pw, dh, dw, groups)
    algo = _algorithm("forward", x_shape, w_shape, *args, algorithm)
    n, k = out_shape[:2]
    if algo == "full_window":
        return _full_window_launch(n, k)
    if algo == "dense":
        return _dense_forward_launch(x_shape, w_shape, out_shape, sh, sw, ph, pw, dh, dw)
    if algo == "direct":
        return _direct_forward_launch(x_shape, w_shape, out_shape, ph, pw, dh, dw, groups)
    if algo == "indirect":
        return lambda x, w, b, out: _i.forward_plan(
            x_shape, w_shape, out_shape, *args, x.dtype.char
        )(x, w, b, out)
    if algo == "gemm1x1":
        p = out_shape[2] * out_shape[3]

        def gemm1x1(x, w, b, out):
            out3 = out.reshape(n, k, p)
            group_matmul_per_image(w.reshape(k, -1), x.reshape(n, -1, p), out3, groups, False)
            if b.shape[0]:
                _g.add_bias(out3, b)

        return gemm1x1

    chunked = _c.pays(x_shape, w_shape, out_shape[2:], (sh, sw), groups)

    def winograd_or_im2col(x, w, b, out):
        if algo == "winograd" and _w.conv(x, w, b, out, ph, pw):
            return  # (False: it read a NaN or an infinity, recomputed below)
        if chunked:
            _c.forward(x, w, b, out, sh, ph, pw, dh, dw)
        else:
            _g.gemm_forward(x, w, b, out, *args, IM2COL_BYTES)

    return winograd_or_im2col


def conv2d_forward(x, w, b, out, sh, sw, ph, pw, dh, dw, groups, *, algorithm=None):
    """out (N, K, OH, OW) = conv2d(x (N, C, H, W), w (K, C//groups, KH, KW)) + b (K,); a
    zero-length ``b`` means no bias. ``algorithm`` overrides the choice (for tests/benchmarks)."""
    _check(x, w, b, out)
    args = (sh, sw, ph, pw, dh, dw, groups)
    forward_launch(x.shape, w.shape, out.shape, *args, algorithm)(x, w, b, out)


def conv2d_backward_input(gy, w, gx, sh, sw, ph, pw, dh, dw, groups, *, algorithm=None):
    """gx (N, C, H, W) = dL/dx of the conv, from gy = dL/dy (N, K, OH, OW); overwrites gx."""
    _check(gy, w, gx)
    args = (sh, sw, ph, pw, dh, dw, groups)
    backward_input_launch(gy.shape, w.shape, gx.shape, *args, algorithm)(gy, w, gx)


def backward_input_launch(
    gy_shape, w_shape, gx_shape, sh, sw, ph, pw, dh, dw, groups, algorithm=None
):
    """``conv2d_backward_input`` for these shapes with its decisions taken once (as
    ``forward_launch``): a function (gy, w, gx)."""
    args = (sh, sw, ph, pw, dh, dw, groups)
    crop = None if algorithm else _live_crop(gx_shape, w_shape, sh, sw, ph, pw, dh, dw)
    if crop is not None:  # (the dropped taps only ever write padding)
        live = _t.cropped_shape(w_shape, crop)
        small = backward_input_launch(gy_shape, live, gx_shape, sh, sw, *crop[1], dh, dw, groups)
        return lambda gy, w, gx: small(gy, _t.crop_weight(w, crop)[0], gx)
    algo = _algorithm("backward_input", gx_shape, w_shape, *args, algorithm)
    run = _backward_input_launch(gy_shape, w_shape, gx_shape, *args, algo)
    if algo not in ("direct", "indirect"):
        return run
    im2col = _backward_input_launch(gy_shape, w_shape, gx_shape, *args, "im2col")

    def finite_weights(gy, w, gx):
        # else these would multiply gy's re-padding zeros by a NaN/Inf weight
        (run if all_finite(w.reshape(-1)) else im2col)(gy, w, gx)

    return finite_weights


def _backward_input_launch(gy_shape, w_shape, gx_shape, sh, sw, ph, pw, dh, dw, groups, algo):
    n, c, h, wd = gx_shape
    k, cg, kh, kw = w_shape
    if algo == "gemm1x1":
        p = h * wd
        return lambda gy, w, gx: group_matmul_per_image(
            w.reshape(k, cg), gy.reshape(n, k, p), gx.reshape(n, c, p), groups, True
        )
    if algo == "full_window":
        return lambda gy, w, gx: matmul(
            gy.reshape(n, k), w.reshape(k, -1), gx.reshape(n, -1), False, False
        )
    if algo == "dense":
        matrix = _dn.matrix_launch(gx_shape, w_shape, (sh, sw), (ph, pw), (dh, dw))
        return lambda gy, w, gx: matmul(
            gy.reshape(n, -1), matrix(w), gx.reshape(n, -1), False, False
        )
    if algo == "direct":
        kb, nrb = _d.blocks(n, cg, groups, h)

        def direct(gy, w, gx):
            flat, plane, wg = _d.repadded_output_grad(gy, gx_shape, w_shape, ph, pw, dh, dw)
            wt = np.empty((c, k // groups, kh, kw), dtype=w.dtype)
            _d.flip_transpose(w, wt, groups)
            gyp = flat.reshape(n, k, plane)
            _d.direct_forward(gyp, wg, wt, _empty_bias(gy.dtype), gx, dh, dw, groups, kb, nrb)

        return direct
    if algo == "indirect":
        return lambda gy, w, gx: _i.backward_input(gy, w, gx, ph, pw, dh, dw, groups)
    if _c.pays(gx_shape, w_shape, gy_shape[2:], (sh, sw), groups):
        im2col = lambda gy, w, gx: _c.backward_input(gy, w, gx, sh, ph, pw, dh, dw)  # noqa: E731
    else:
        args = (sh, sw, ph, pw, dh, dw, groups, IM2COL_BYTES)
        im2col = lambda gy, w, gx: _g.gemm_backward_input(gy, w, gx, *args)  # noqa: E731
    if algo != "winograd":
        return im2col

    def winograd(gy, w, gx):
        if not _w.conv(gy, w, _empty_bias(gy.dtype), gx, 2 - ph, 2 - pw, flip=True):
            im2col(gy, w, gx)  # it read a NaN or an infinity

    return winograd


def group_weight_grad_per_image(x3, gy3, gw, groups):
    """The 1x1 stride-1 weight gradient as GEMMs: gw[group g] (K/g, C/g) = sum over images of
    gy[n, g] (K/g, P) @ x[n, g]^T (P, C/g); no im2col gather."""
    n, c = x3.shape[:2]
    k = gy3.shape[1]
    kg, cg = k // groups, c // groups
    gw2 = gw.reshape(k, cg)
    for g in range(groups):
        dst = gw2[g * kg : (g + 1) * kg]
        for i in range(n):
            src_y, src_x = gy3[i, g * kg : (g + 1) * kg], x3[i, g * cg : (g + 1) * cg]
            if i == 0:
                matmul(src_y, src_x, dst, False, True)
            else:
                matmul_accumulate(src_y, src_x, dst, False, True)


def conv2d_backward_weight(x, gy, gw, sh, sw, ph, pw, dh, dw, groups, *, algorithm=None):
    """gw (K, C//groups, KH, KW) = dL/dw of the conv, from x and gy = dL/dy; overwrites gw."""
    _check(x, gy, gw)
    args = (sh, sw, ph, pw, dh, dw, groups)
    backward_weight_launch(x.shape, gy.shape, gw.shape, *args, algorithm)(x, gy, gw)


def backward_weight_launch(
    x_shape, gy_shape, w_shape, sh, sw, ph, pw, dh, dw, groups, algorithm=None
):
    """``conv2d_backward_weight`` for these shapes with its decisions taken once (as
    ``forward_launch``): a function (x, gy, gw)."""
    args = (sh, sw, ph, pw, dh, dw, groups)
    algo = _algorithm("backward_weight", x_shape, w_shape, *args, algorithm)
    full = _backward_weight_launch(x_shape, gy_shape, w_shape, *args, algo)
    crop = None if algorithm else _live_crop(x_shape, w_shape, sh, sw, ph, pw, dh, dw)
    if crop is None:
        return full
    live = _t.cropped_shape(w_shape, crop)
    small = backward_weight_launch(x_shape, gy_shape, live, sh, sw, *crop[1], dh, dw, groups)

    def cropped(x, gy, gw):
        if not all_finite(gy.reshape(-1)):  # 0 * gy may be NaN: the full conv says where
            full(x, gy, gw)
            return
        gw_live = np.empty(live, dtype=gw.dtype)
        small(x, gy, gw_live)
        _t.uncrop_grad(gw_live, gw, crop)

    return cropped


def _backward_weight_launch(x_shape, gy_shape, w_shape, sh, sw, ph, pw, dh, dw, groups, algo):
    n, c, h, wd = x_shape
    k, cg, kh, kw = w_shape
    oh, ow = gy_shape[2:]
    args = (sh, sw, ph, pw, dh, dw, groups)
    if algo == "gemm1x1":
        return lambda x, gy, gw: group_weight_grad_per_image(
            x.reshape(n, c, h * wd), gy.reshape(n, k, h * wd), gw, groups
        )
    if algo == "full_window":
        return lambda x, gy, gw: matmul(
            gy.reshape(n, k), x.reshape(n, -1), gw.reshape(k, -1), True, False
        )
    if algo == "direct":
        return _direct_weight_grad_launch(x_shape, gy_shape, w_shape, *args)
    if algo == "indirect":
        return lambda x, gy, gw: _i.backward_weight(x, gy, gw, *args)
    if _c.pays(x_shape, w_shape, gy_shape[2:], (sh, sw), groups):
        im2col = lambda x, gy, gw: _c.backward_weight(x, gy, gw, sh, ph, pw, dh, dw)  # noqa: E731
    else:  # (a 1x1 conv's im2col is just a gather of x)
        im2col = lambda x, gy, gw: _g.gemm_backward_weight(x, gy, gw, *args, IM2COL_BYTES)  # noqa: E731
    if algo == "winograd":

        def winograd(x, gy, gw):
            if not _w.weight_grad(x, gy, gw, ph, pw):
                im2col(x, gy, gw)  # it read a NaN or an infinity

        return winograd
    if algo != "dense":
        return im2col
    fold = _dn.fold_launch(x_shape, w_shape, (sh, sw), (ph, pw), (dh, dw))

    def dense(x, gy, gw):
        if not all_finite(gy.reshape(-1)):
            im2col(x, gy, gw)
            return
        t = np.empty((k * oh * ow, c * h * wd), dtype=x.dtype)
        matmul(gy.reshape(n, -1), x.reshape(n, -1), t, True, False)
        fold(t, gw)

    return dense


def _direct_weight_grad_launch(x_shape, gy_shape, w_shape, sh, sw, ph, pw, dh, dw, groups):
    n, c, h, wd = x_shape
    kh, kw = w_shape[2:]
    oh, ow = gy_shape[2:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    lp = (oh - 1) * wp + ow
    lx = max(hp * wp, dh * (kh - 1) * wp + dw * (kw - 1) + lp)
    lx = -(-lx // 16) * 16  # whole 64-byte lines per plane

    def direct(x, gy, gw):
        xf = _d.aligned_empty((n, c, lx), x.dtype)
        _d.pad_flat(x, xf, ph, pw, hp, wp)
        _d.direct_weight_grad(xf, wp, gy, gw, dh, dw, groups, lp)
        if not all_finite(gw.reshape(-1)):  # (a check of the small result, not of x)
            # A NaN/Inf in x times the zeros between gy's rows may have added NaN: the GEMM
            # adds only the products PyTorch adds.
            _g.gemm_backward_weight(x, gy, gw, sh, sw, ph, pw, dh, dw, groups, IM2COL_BYTES)

    return direct


def conv2d_backward_bias(gy, gb):
    """gb (K,) = sum of gy (N, K, OH, OW) over N, OH, OW; overwrites gb."""
    _check(gy, gb)
    n, k = gy.shape[:2]
    sum_outer_inner(gy.reshape(n, k, -1), gb)
