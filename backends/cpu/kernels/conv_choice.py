"""Which conv2d algorithm runs a conv of given shapes (conv.py runs it): the algorithms that
apply, and the one measured fastest where several do. Shapes only: the dtype does not enter
(the thresholds were measured in float32)."""

from __future__ import annotations

import numpy as np

from . import conv_dense as _dn
from . import conv_indirect as _i
from . import winograd as _w
from .packed_gemm import OWN_GEMM

ALGORITHMS = ("gemm1x1", "full_window", "dense", "direct", "winograd", "indirect", "im2col")
# Crossovers measured with bench/conv_kernels.py --all --extra (2 cores, float32): the direct
# kernels win while the GEMM im2col would feed BLAS is thin (reduction C/g*KH*KW up to ~200 for
# forward: 3x3 16->16 and LeNet C3's 150 win direct, 3x3 32->32's 288 and 64->64's 576 win
# im2col by 20-50%; for backward-input the roles of C and K swap), or has very few output
# rows. For the weight gradient the direct kernel wins when the whole (K/g, C/g*KH*KW) result
# is small (LeNet C1: 6 x 25), where BLAS is slowest; with 5-tap kernel rows up to 4x that
# (LeNet C3, 16 x 150: 1.05x faster than im2col at batch 64, 2x at batch 1; 3x3 3->64 at
# 1728 and 16->16 at 2304 lose by 20-50%).
DIRECT_MAX_REDUCTION = 200
DIRECT_MAX_ROWS = 8
DIRECT_MAX_WGRAD_SIZE = 1024
# Winograd (measured on one pinned core, float32, all three kinds; 2-core timings were too noisy
# on the shared machine) beats direct and im2col on every 3x3 stride-1 layer with at least 4
# channels each way and 32 tiles over the batch: 2-6x at 4->4..64->64 on 16-32 px images, 1.5x
# at 512->512 4x4 b32 (32 tiles). With fewer tiles its filter transforms (K*C*(m+2)^2 values per
# call) outweigh the GEMMs they save: 256->256 2x2 b8 (8 tiles) and 512->512 1x1 b2 run 1.2-4x
# slower than im2col; with 3 channels (3->64, 32 px) im2col wins both gradients by ~25%.
WINOGRAD_MIN_CHANNELS = 4
WINOGRAD_MIN_TILES = 32
# The indirect GEMM (register-blocked, output channels or pixels along the vector lanes:
# conv_indirect.pixels_pay) beats direct and im2col on stride-1 convs that reduce over at
# least 64 taps, and with the pixel kernel on shorter ones too: LeNet's C3 at batch 64,
# forward 0.40 -> 0.18 ms, input gradient (6 channels, pixel kernel) 0.6 -> 0.26, weight
# gradient 0.53 -> 0.16, all against direct; LeNet's C1 forward (25 taps) 0.16 -> 0.11; the
# CIFAR stem (27 taps) 1.26 -> 0.54; 3x3 32->32 at 16 px 0.60 ms against im2col's 1.30. With
# under 3 channels the pixel kernel's 6-row blocks are mostly idle (LeNet's C1 input
# gradient, 1 channel: 0.45 ms against direct's 0.27). The weight gradient has no pixel
# kernel (it needs a vector of channels) and loses with under ~100 pixels per image
# (ResNet's 4-8 px layers: 1.1-1.4x). Strided convs (no input gradient: im2col's col2im) take
# it under the same rule when the kernel is wider than 1x1: ResNet's 3x3 stride-2 forwards
# 5.0 -> 4.3 ms (64->128) and 4.2-4.4 -> 3.9-4.2 (128->256; 256->512 ties), a 7x7 3->64
# stride-2 stem 0.92 -> 0.56 (the CLI model's 1->64: 0.77 -> 0.63), the 64->128 weight
# gradient (16x16 pixels) 5.0 -> 4.3; 1x1 stride-2 convs tie im2col (a plain GEMM of the
# strided pixels), which stays. A short reduction on a small output (LeNet's C1 at batch 1,
# 4704 outputs: 0.014 ms against direct's 0.010, and a copy of the input for the kernel's
# tail) stays direct.
# The dense GEMM (conv_dense.py) where it applies, from this batch on. 3x3 on 2x2 maps with
# 256 channels (the ImageNet-stem ResNet-18's layer3), forward / input / weight gradient, ms:
# batch 64 0.80/0.82/0.71 against Winograd's 1.24/1.44/1.48; batch 32 0.64/0.64/0.53 against
# 0.81/0.89/0.88 (im2col 0.86/1.30/0.76); batch 16 0.55/0.55/0.49 against im2col's
# 0.48/0.68/0.42. Below, building its matrix (K*C*P*Q values) costs more than the GEMMs save.
DENSE_MIN_BATCH = 32
INDIRECT_MIN_CHANNELS = 16
INDIRECT_MIN_REDUCTION = 64
INDIRECT_MIN_PIXEL_ROWS = 3
# The weight gradient's pixels per image (above): 100 where BLAS computes the im2col GEMM;
# 64 where the packed GEMM does (OWN_GEMM; measured on a 2-core Zen 5, whose 1 MiB L2 holds
# less of im2col's columns): ResNet-18's 128->256 stride-2 weight gradient (8x8 pixels)
# 3.7-4.1 ms against im2col's 4.7-6.1; at 4x4 (256->512) im2col stays ahead, 3.6-4.3 against
# 4.5-6.0.
INDIRECT_MIN_WGRAD_PIXELS = 64 if OWN_GEMM else 100
INDIRECT_MIN_SHORT_OUTPUTS = 1 << 15


def applicable_algorithms(kind, x_shape, w_shape, stride, padding, dilation, groups):
    """The algorithms that compute ``kind`` ('forward', 'backward_input', 'backward_weight')
    for a conv of an x_shape input by a w_shape weight, in ALGORITHMS order."""
    h, w = x_shape[2:]
    kh, kw = w_shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    algos = []
    if kh == kw == 1 and sh == sw == 1 and ph == pw == 0:
        algos.append("gemm1x1")
    if groups == 1 and ph == pw == 0 and dh == dw == 1 and (kh, kw) == (h, w):
        algos.append("full_window")
    if _dn.applies(x_shape, w_shape, stride, padding, dilation, groups):
        algos.append("dense")
    if sh == sw == 1:
        algos.append("direct")
    # padding <= 2: the input gradient's conv (padding 2 - p) then has none below zero
    if (kh, kw) == (3, 3) and sh == sw == dh == dw == groups == 1 and max(ph, pw) <= 2:
        algos.append("winograd")
    if kind != "backward_input" or sh == sw == 1:
        algos.append("indirect")
    algos.append("im2col")
    return algos


def _winograd_pays(kind, x_shape, w_shape, padding):
    """Whether Winograd beats direct and im2col here (see WINOGRAD_MIN_TILES)."""
    n, _, h, w = x_shape
    if kind != "backward_input":  # the input gradient's conv outputs x's pixels, the others y's
        h, w = h + 2 * padding[0] - 2, w + 2 * padding[1] - 2
    enough_tiles = _w.tiles(n, (h, w)) >= WINOGRAD_MIN_TILES
    return enough_tiles and min(w_shape[:2]) >= WINOGRAD_MIN_CHANNELS


def _indirect_pays(kind, x_shape, w_shape, stride, padding, dilation, groups):
    """Whether the indirect GEMM beats direct and im2col (see INDIRECT_MIN_REDUCTION)."""
    k, cg, kh, kw = w_shape
    kg = k // groups
    lanes, reduction = (cg, kg * kh * kw) if kind == "backward_input" else (kg, cg * kh * kw)
    if lanes < INDIRECT_MIN_PIXEL_ROWS:
        return False
    h, w = x_shape[2:]
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if kind == "backward_weight":
        enough = lanes >= INDIRECT_MIN_CHANNELS and oh * ow >= INDIRECT_MIN_WGRAD_PIXELS
        return enough and reduction >= INDIRECT_MIN_REDUCTION
    if reduction >= INDIRECT_MIN_REDUCTION:
        return True
    width, height = (w, h) if kind == "backward_input" else (ow, oh)
    outputs = x_shape[0] * lanes * groups * height * width
    short_pays = outputs >= INDIRECT_MIN_SHORT_OUTPUTS
    return short_pays and _i.pixels_pay(lanes, width, np.float32)


def choose_algorithm(kind, x_shape, w_shape, stride, padding, dilation, groups):
    """The algorithm the entry points run for ``kind``; one of ALGORITHMS."""
    algos = applicable_algorithms(kind, x_shape, w_shape, stride, padding, dilation, groups)
    if "full_window" in algos:  # one GEMM over the batch (a 1x1 map: gemm1x1 runs one per image)
        return "full_window"
    if algos[0] == "gemm1x1":  # a plain GEMM: always best
        return algos[0]
    if "dense" in algos and x_shape[0] >= DENSE_MIN_BATCH:
        return "dense"
    k, cg, kh, kw = w_shape
    pays = _indirect_pays(kind, x_shape, w_shape, stride, padding, dilation, groups)
    if "direct" not in algos:  # strided (see INDIRECT_MIN_REDUCTION)
        return "indirect" if "indirect" in algos and pays and kh * kw > 1 else "im2col"
    if "winograd" in algos and _winograd_pays(kind, x_shape, w_shape, padding):
        return "winograd"
    if pays:
        return "indirect"
    kg = k // groups
    if kind == "forward":
        direct = cg * kh * kw <= DIRECT_MAX_REDUCTION or kg <= DIRECT_MAX_ROWS
    elif kind == "backward_input":
        direct = kg * kh * kw <= DIRECT_MAX_REDUCTION or cg <= DIRECT_MAX_ROWS
    else:  # kernel rows of 5 taps: every pass of the direct kernel is full (no repeated taps)
        limit = DIRECT_MAX_WGRAD_SIZE * (4 if kw % 5 == 0 else 1)
        direct = kg * cg * kh * kw <= limit
    return "direct" if direct else "im2col"
