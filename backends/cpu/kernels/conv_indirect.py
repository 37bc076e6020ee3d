"""Convolutions as indirect GEMMs on the register-blocked micro-kernel (microkernel.py).

The input stays where it is (NCHW, zero-padded into flat planes when the conv pads, as for the
direct kernels); offset tables replace im2col's copy: where each output pixel's window starts
and where each tap (channel, kernel row and column) lies from there. Two kernels:

- the channel kernel: rows = output pixels (batch folded in), output channels along the vector
  lanes, the weights packed once per call as (taps, channels) padded to whole vectors; any
  stride. Forward, and the weight gradient with rows = taps, reduced over the pixels of a few
  whole images at a time (WGRAD_SPAN_PIXELS) against the output gradient packed as (pixels,
  channels), each such sum in the input's dtype and their total in float64;
- the pixel kernel (stride 1): rows = 6 output channels, consecutive positions of a flat plane
  along the lanes (those between rows computed and dropped), for few channels or wide outputs
  (``pixels_pay``).

The stride-1 input gradient is the forward conv of the re-padded output gradient with the
flipped, channel-transposed weights, as for the direct kernels. Forward and weight gradient
sum, for each output, only products that im2col's GEMM forms too (padding zeros included):
their NaN and infinity semantics are im2col's; the input gradient's re-padding zeros meet the
weights (conv.py sends NaN or infinite weights to im2col).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import njit, prange

from . import conv_direct as _d
from .conv_indirect_tables import (
    TRANSPOSE_ROWS,
    packed,
    padded_table,
    read_only,
    tables,
    weight_table,
)
from .microkernel import MAX_VECTORS, ROWS, VECTOR_BYTES, lanes, microkernel
from .parallel import sized_kernel

_MK1, _MK2, _MK3, _MK4 = (microkernel(ROWS[v], v) for v in range(1, MAX_VECTORS + 1))
# The pixel kernel's block: 6 output channels (LeNet's C1 and C3 input gradient have six) by
# a few vectors of positions, as many as the registers hold.
PIXEL_ROWS, PIXEL_VECTORS = 6, (3 if VECTOR_BYTES == 64 else 2)
PIXEL_MIN_WIDTH = 16  # output pixels a row from which the pixel kernel runs whatever the channels
_MKP = microkernel(PIXEL_ROWS, PIXEL_VECTORS)
# Output pixels the weight gradient sums in the input's dtype before float64 (whole images, at
# least one): ResNet's 8 px layers otherwise pay a float64 sum of the block per 64 pixels.
WGRAD_SPAN_PIXELS = 256
# The weight gradient's work items are few (2 a thread: each streams gy through its cache) but
# their float64 sums stay within this many bytes.
WGRAD_ACC_BYTES = 1 << 18
MAX_RUN_BLOCKS = 32  # row blocks of a forward work item at most: its panel stays in L1/L2
_ROWS = tuple(ROWS.get(v, 0) for v in range(MAX_VECTORS + 1))  # (a tuple Numba sees as constant)


@njit(cache=True, inline="always")
def _block(vectors, c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb):
    """The micro-kernel for ``vectors`` vectors of columns (its rows are _ROWS[vectors])."""
    if vectors == 1:
        _MK1(c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb)
    elif vectors == 2:
        _MK2(c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb)
    elif vectors == 3:
        _MK3(c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb)
    else:
        _MK4(c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb)


def column_blocks(channels: int, dtype) -> tuple[int, int]:
    """(vectors per column block, blocks) for ``channels`` output channels: at most MAX_VECTORS
    vectors a block, as few padded vectors as that allows."""
    width = lanes(np.dtype(dtype))
    vectors = -(-channels // width)
    blocks = -(-vectors // MAX_VECTORS)
    return -(-vectors // blocks), blocks


@sized_kernel(size_arg=5, min_elements=1 << 10)
def forward_kernel(a, rows, taps, bmat, b, out, vectors, per):
    """out (N, K, P) = the conv whose input is the flat array ``a``: output pixel m = n*P + p
    starts at a[rows[m]] (rows padded to whole blocks), tap t of group g is at offset
    taps[g, t]; bmat (G, B, T, W) holds the packed weights in B blocks of W = ``vectors``
    vectors, b (K,) the bias unless empty. A work item is a run of ``per`` row blocks of one
    column block: they fill a (pixels, W) panel, written out TRANSPOSE_ROWS pixels at a time
    channel by channel (a block's 6 pixels stored across 64 channel planes 1 KiB apart hit
    the same few L1 sets: a quarter of the time of a 64 -> 128 stride-2 conv)."""
    n_, k_, p_ = out.shape
    groups, ncb, t_, width = bmat.shape
    kg = k_ // groups
    mr = _ROWS[vectors]
    m = n_ * p_
    ntile = rows.shape[0] // mr
    runs = -(-ntile // per)
    has_b = b.shape[0] > 0
    for r in prange(groups * ncb * runs):
        run = r % runs
        cb = (r // runs) % ncb
        g = r // (runs * ncb)
        t0, t1 = run * per, min(ntile, run * per + per)
        panel = np.empty((t1 - t0) * mr * width, dtype=out.dtype)
        # (tap k of group g is taps' flat entry g*T + k: b0 + (g*T + k)*W is bmat[g, cb, k])
        b0 = ((g * ncb + cb) * t_ - g * t_) * width
        for tile in range(t0, t1):
            c0 = (tile - t0) * mr * width
            _block(vectors, panel, c0, width, a, 0, rows, tile * mr, taps, g * t_, t_, bmat, b0,
                   width)  # fmt: skip
        k0 = g * kg + cb * width
        m0, m1 = t0 * mr, min(m, t1 * mr)
        for s0 in range(m0, m1, TRANSPOSE_ROWS):
            mi, s1 = s0, min(m1, s0 + TRANSPOSE_ROWS)
            while mi < s1:  # (a run of pixels within one image)
                n = mi // p_
                p0 = mi - n * p_
                run_len = min(s1 - mi, p_ - p0)
                src = panel[(mi - m0) * width :]
                for j in range(min(width, kg - cb * width)):
                    dst = out[n, k0 + j, p0 : p0 + run_len]
                    bias = b[k0 + j] if has_b else out.dtype.type(0)
                    for i in range(run_len):
                        dst[i] = src[i * width + j] + bias
                mi += run_len


@sized_kernel(size_arg=4, min_elements=1 << 10)
def weight_grad_kernel(a, image, taps, pix, gt, gw, vectors, per, span):
    """gw (K, T) = dL/dw from the flat input ``a`` (image n at a[n*image]; tap t of group g at
    offset taps[g, t], padded to whole blocks; output pixel p of image n0 + i at offset
    pix[i*P + p] from image n0's, for i < ``span``) and the packed output gradient
    gt (G, B, N, P, W), in B blocks of W = ``vectors`` vectors. A work item is a run of
    ``per`` row blocks (taps) of one column block; it goes through the batch ``span`` images
    at a time (one micro-kernel call each, summed in the input's dtype), image-major so that
    their gt rows are read from cache by all its blocks, and sums across calls in float64."""
    groups, ncb, n_, p_, width = gt.shape
    k_, t_ = gw.shape
    kg = k_ // groups
    mr = _ROWS[vectors]
    tp = taps.shape[1]
    ntile = tp // mr
    runs = -(-ntile // per)
    for r in prange(groups * ncb * runs):
        run = r % runs
        cb = (r // runs) % ncb
        g = r // (runs * ncb)
        t0, t1 = run * per, min(ntile, run * per + per)
        blk = np.empty(mr * width, dtype=gw.dtype)
        acc = np.zeros((t1 - t0) * mr * width, dtype=np.float64)
        for n0 in range(0, n_, span):
            b0 = ((g * ncb + cb) * n_ + n0) * p_ * width
            kk = min(span, n_ - n0) * p_
            for tile in range(t0, t1):
                _block(vectors, blk, 0, width, a, n0 * image, taps, g * tp + tile * mr, pix, 0, kk,
                       gt, b0, width)  # fmt: skip
                part = acc[(tile - t0) * mr * width :]
                for e in range(mr * width):
                    part[e] += blk[e]
        k0 = g * kg + cb * width
        for tile in range(t0, t1):
            part = acc[(tile - t0) * mr * width :]
            for i in range(min(mr, t_ - tile * mr)):
                for j in range(min(width, kg - cb * width)):
                    gw[k0 + j, tile * mr + i] = part[i * width + j]


@sized_kernel(size_arg=5, min_elements=1 << 10)
def pixels_kernel(a, image, taps, wpk, wtab, rows, out, b, pitch, chunks):
    """out (N, K, OH, OW) = a stride-1 conv with the output's positions along the vector
    lanes: image n of the input at a[n*image] in flat planes of row pitch ``pitch``, tap t of
    group g at offset taps[g, t] from an output position; wpk (G, Kr, T) the weights with each
    group's channels padded to Kr (whole blocks of PIXEL_ROWS), wtab (G, T) = g*Kr*T + t,
    rows (Kr,) = r*T (an argument: np.arange in the kernel cost 0.5 s of cold start);
    b (K,) the bias unless empty. A work item is one of ``chunks`` runs of output rows of an
    image and a block of channels: its blocks of positions (y*pitch + x, those with x >= OW
    computed and dropped) land side by side in a scratch plane, copied out row by row at the
    end (copying each block's piece of a row cost as much as computing it, with 25 taps).
    ``a`` reaches a vector past the last plane."""
    n_, k_, oh, ow = out.shape
    groups, kr, t_ = wpk.shape
    kg = k_ // groups
    mr = PIXEL_ROWS
    width = PIXEL_VECTORS * (VECTOR_BYTES // a.itemsize)
    nrt = kr // mr
    rows_per = -(-oh // chunks)
    has_b = b.shape[0] > 0
    for q in prange(n_ * groups * nrt * chunks):
        y0 = (q % chunks) * rows_per
        rt = (q // chunks) % nrt
        g = (q // (chunks * nrt)) % groups
        n = q // (chunks * nrt * groups)
        y1 = min(oh, y0 + rows_per)
        nb = max(0, -(-((y1 - 1 - y0) * pitch + ow) // width))  # (none when y0 >= y1)
        ld = nb * width
        plane = np.empty(mr * ld, dtype=out.dtype)
        for j in range(nb):
            p0 = n * image + y0 * pitch + j * width
            _MKP(plane, j * width, ld, wpk, 0, rows, rt * mr, wtab, g * t_, t_, a, p0, taps)
        for i in range(min(mr, kg - rt * mr)):
            ch = g * kg + rt * mr + i
            bias = b[ch] if has_b else out.dtype.type(0)
            for y in range(y0, y1):
                src = plane[i * ld + (y - y0) * pitch :]
                dst = out[n, ch, y]
                for x in range(ow):
                    dst[x] = src[x] + bias


def _flat_input(x, ph, pw, tail):
    """x as a flat 1-D array: itself when unpadded and no ``tail`` is asked for, else x
    zero-padded by (ph, pw) into flat planes followed by ``tail`` zeros."""
    n, c, h, wd = x.shape
    if ph == pw == tail == 0:
        return x.reshape(-1)
    hp, wp = h + 2 * ph, wd + 2 * pw
    flat, planes = _d.flat_planes(n, c, hp * wp, x.dtype, tail)
    _d.pad_flat(x, planes, ph, pw, hp, wp)
    return flat


def pixels_pay(channels: int, out_width: int, dtype) -> bool:
    """Whether a stride-1 conv with ``channels`` output channels a group, ``out_width``
    pixels wide, runs the pixel kernel (positions along the lanes), not the channel one.
    With fewer channels than a vector has lanes the channel kernel leaves lanes idle, and
    from 16 pixels wide the pixel kernel's loads are mostly whole vectors: LeNet's C1 forward
    0.16 -> 0.11 ms (direct: 0.15), the CIFAR stem 0.54 ms (channels: 3.4, direct 1.26),
    64 and 128 channels at 32 and 16 px 1.05-1.4x faster than the channel kernel. Narrower:
    LeNet's C3 forward (16 channels, 10 px) 0.19 against 0.18 ms, 256 channels at 8 px 1.3x
    slower."""
    return channels < lanes(np.dtype(dtype)) or out_width >= PIXEL_MIN_WIDTH


def _tail(dtype) -> int:
    """Elements the pixel kernel may read past the last plane: one block of positions."""
    return PIXEL_VECTORS * lanes(np.dtype(dtype))


def _row_chunks(items: int, rows: int) -> int:
    """Runs of output rows an image is cut into for the pixel kernel: enough for 4 work items
    a thread (LeNet at batch 1), whole images when the batch gives that already."""
    return max(1, min(rows, -(-4 * numba.get_num_threads() // items)))


def _per_item(blocks: int) -> int:
    """Blocks a work item: about 8 work items a thread (a scratch block allocated once for
    each; LeNet's C1 has 19 short blocks an image)."""
    return max(1, blocks // (8 * numba.get_num_threads()))


@functools.lru_cache(maxsize=1024)
def _conv_plan(plane, pitch, out_shape, w_shape, stride, dilation, groups, dtype_char):
    """(run, tail): run(xf, w, b, out) computes out (N, K, OH, OW) = the conv of the flat
    planes in xf (1-D, w's C/G * G planes of ``plane`` elements an image, row pitch
    ``pitch``, then at least ``tail`` elements the kernel may read) by w (K, C/G, KH, KW),
    plus b. Everything that depends only on the shapes is settled here, once."""
    dtype = np.dtype(dtype_char)
    n, k, oh, ow = out_shape
    cg, kh, kw = w_shape[1:]
    kg, c, t = k // groups, cg * groups, cg * kh * kw
    size = math.prod(out_shape)
    if stride == (1, 1) and pixels_pay(kg, ow, dtype):
        _, taps, _ = tables(n, c, plane, pitch, (oh, ow), (kh, kw), stride, dilation, groups, 1)
        kr = -(-kg // PIXEL_ROWS) * PIXEL_ROWS
        wtab = weight_table(groups, kr, t)
        rows = read_only(np.arange(kr, dtype=np.int64) * t)[0]
        chunks = _row_chunks(n * groups * (kr // PIXEL_ROWS), oh)
        kernel = pixels_kernel.for_size(size)

        def pixels(xf, w, b, out):
            wpk = w.reshape(groups, kg, t)
            if kr != kg:
                wpk = np.zeros((groups, kr, t), dtype=w.dtype)
                wpk[:, :kg] = w.reshape(groups, kg, t)
            kernel(xf, c * plane, taps, wpk, wtab, rows, out, b, pitch, chunks)

        return pixels, _tail(dtype)
    vectors, blocks = column_blocks(kg, dtype)
    width = vectors * lanes(dtype)
    rows, taps, _ = tables(
        n, c, plane, pitch, (oh, ow), (kh, kw), stride, dilation, groups, ROWS[vectors]
    )
    ntile = rows.shape[0] // ROWS[vectors]
    per = min(MAX_RUN_BLOCKS, _per_item(groups * blocks * ntile))
    kernel = forward_kernel.for_size(size)

    def channels(xf, w, b, out):
        bmat = packed(w.reshape(1, k, t), groups, width, blocks)[:, :, 0]
        kernel(xf, rows, taps, bmat, b, out.reshape(n, k, oh * ow), vectors, per)

    return channels, 0


@functools.lru_cache(maxsize=1024)
def forward_plan(x_shape, w_shape, out_shape, sh, sw, ph, pw, dh, dw, groups, dtype_char):
    """A function (x, w, b, out): out = conv2d(x, w) + b (b empty: no bias), any stride,
    padding, dilation and groups; its decisions taken once for these shapes."""
    hp, wp = x_shape[2] + 2 * ph, x_shape[3] + 2 * pw
    conv, tail = _conv_plan(hp * wp, wp, out_shape, w_shape, (sh, sw), (dh, dw), groups, dtype_char)
    return lambda x, w, b, out: conv(_flat_input(x, ph, pw, tail), w, b, out)


def backward_input(gy, w, gx, ph, pw, dh, dw, groups):
    """gx = dL/dx of a stride-1 conv: the conv of the re-padded gy by the flipped weights."""
    tail = _tail(gy.dtype)  # (enough for whichever kernel the plan runs)
    gyp, plane, pitch = _d.repadded_output_grad(gy, gx.shape, w.shape, ph, pw, dh, dw, tail)
    wt = np.empty((gx.shape[1], w.shape[0] // groups, *w.shape[2:]), dtype=w.dtype)
    _d.flip_transpose(w, wt, groups)
    empty = np.empty(0, dtype=gy.dtype)
    dil = (dh, dw)
    conv, _ = _conv_plan(plane, pitch, gx.shape, wt.shape, (1, 1), dil, groups, gy.dtype.char)
    conv(gyp, wt, empty, gx)


@functools.lru_cache(maxsize=1024)
def _weight_grad_plan(x_shape, gy_shape, w_shape, sh, sw, ph, pw, dh, dw, groups, dtype_char):
    """backward_weight's function (x, gy, gw), its decisions taken once for these shapes."""
    dtype = np.dtype(dtype_char)
    n, c, h, wd = x_shape
    k, oh, ow = gy_shape[1:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    vectors, blocks = column_blocks(k // groups, dtype)
    width = vectors * lanes(dtype)
    _, taps, pixels = tables(
        n, c, hp * wp, wp, (oh, ow), w_shape[2:], (sh, sw), (dh, dw), groups, 1
    )
    taps = read_only(padded_table(taps, ROWS[vectors]))[0]
    span = min(n, max(1, WGRAD_SPAN_PIXELS // (oh * ow)))
    pixels = read_only((np.arange(span)[:, None] * c * hp * wp + pixels).reshape(-1))[0]
    blocks_total = groups * blocks * (taps.shape[1] // ROWS[vectors])
    most = max(1, WGRAD_ACC_BYTES // (ROWS[vectors] * width * 8))
    per = min(most, max(1, blocks_total // (2 * numba.get_num_threads())))
    kernel = weight_grad_kernel.for_size(groups * n * blocks * oh * ow * width)

    def run(x, gy, gw):
        gt = packed(gy.reshape(n, k, oh * ow), groups, width, blocks)
        xf = _flat_input(x, ph, pw, 0)
        kernel(xf, c * hp * wp, taps, pixels, gt, gw.reshape(k, -1), vectors, per, span)

    return run


def backward_weight(x, gy, gw, sh, sw, ph, pw, dh, dw, groups):
    """gw = dL/dw, any stride, padding, dilation and groups."""
    args = (sh, sw, ph, pw, dh, dw, groups, x.dtype.char)
    _weight_grad_plan(x.shape, gy.shape, gw.shape, *args)(x, gy, gw)
