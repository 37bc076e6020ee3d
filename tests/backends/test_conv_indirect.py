"""The indirect-GEMM conv kernels (conv_indirect.py on microkernel.py) against PyTorch, on the
shapes that exercise their blocking: several vectors and column blocks of channels, groups,
row blocks that end past the last pixel, strides, dilation, both dtypes; their NaN and
infinity results against im2col's; and where the dispatch picks them."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from kernel_checks import (  # noqa: E402
    CONV_KINDS,
    DTYPES,
    NONFINITE_OPERANDS,
    assert_nonfinite_as_im2col,
    conv_case,
    run_conv,
)

from numbagrad.backends.cpu.kernels import conv, conv_indirect, microkernel  # noqa: E402
from numbagrad.backends.cpu.kernels.packed_gemm import OWN_GEMM  # noqa: E402

pytestmark = pytest.mark.torch

KINDS = CONV_KINDS

# (n, c, h, w, k, kh, kw, stride, padding, dilation, groups)
BLOCKING_CASES = [
    (2, 3, 6, 5, 70, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # 70 channels: two column blocks
    (1, 4, 7, 6, 40, 3, 2, (2, 1), (1, 0), (1, 2), 2),  # 20 a group, strided, dilated
    (3, 20, 5, 4, 17, 2, 2, (1, 1), (0, 1), (1, 1), 1),  # 17: a vector and one lane
    (2, 6, 7, 7, 16, 5, 5, (1, 1), (0, 0), (1, 1), 1),  # LeNet's C3
    (2, 3, 5, 6, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # 5 rows in 4 runs: one run empty
    (1, 2, 4, 20, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # 20 px wide: pixel kernel, 4 row blocks
    # 100 pixels an image: forward runs and transposed strips cross images; the weight
    # gradient sums 2 images a call, then the third alone
    (3, 5, 10, 10, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (3, 4, 19, 20, 20, 3, 3, (2, 2), (1, 1), (1, 1), 1),  # the same, strided
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BLOCKING_CASES)
def test_indirect_matches_torch(shape, dtype):
    *dims, stride, pad, dil, groups = shape
    case = conv_case(*dims, stride, pad, dil, groups, True, dtype, seed=len(dims) + dims[4])
    kinds = [k for k in KINDS if stride == (1, 1) or k != "backward_input"]
    run_conv(case, stride, pad, dil, groups, dtype, algorithm="indirect", kinds=kinds)


def test_blocking_cases_cover_the_blocks():
    """The cases above reach more than one vector and more than one column block, and a
    batch that the weight gradient's spans of images do not divide."""

    def span(n, c, h, w, k, kh, kw, stride, pad, dil, groups):
        oh, ow = ((x + 2 * p - d * (r - 1) - 1) // s + 1 for x, p, d, r, s in
                  zip((h, w), pad, dil, (kh, kw), stride))  # fmt: skip
        return n, conv_indirect.WGRAD_SPAN_PIXELS // (oh * ow)

    assert any(1 < sp < n and n % sp for n, sp in (span(*s) for s in BLOCKING_CASES))
    blocks = {conv_indirect.column_blocks(s[4] // s[10], np.float32) for s in BLOCKING_CASES}
    assert max(v for v, _ in blocks) > 1 and max(b for _, b in blocks) > 1
    lanes = microkernel.lanes(np.dtype(np.float32))
    assert {conv_indirect.column_blocks(c, np.float32) for c in (lanes, lanes + 1)} == {
        (1, 1),
        (2, 1),
    }


@pytest.mark.parametrize("kind, operand", NONFINITE_OPERANDS)
def test_nan_and_inf_as_im2col(kind, operand):
    """With padding, so zeros meet the infinities."""
    shape = (2, 5, 6, 7, 20, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    assert_nonfinite_as_im2col(shape, kind, operand, "indirect")


def test_dispatch_picks_indirect_where_it_was_measured_faster():
    choose = conv.choose_algorithm
    one = ((1, 1), (0, 0), (1, 1), 1)
    c3 = ((64, 6, 14, 14), (16, 6, 5, 5))
    assert {choose(kd, *c3, *one) for kd in KINDS} == {"indirect"}
    c1 = ((64, 1, 32, 32), (6, 1, 5, 5))  # input gradient: 1 channel; weight gradient: 6
    assert [choose(kd, *c1, *one) for kd in KINDS] == ["indirect", "direct", "direct"]
    c1_b1 = ((1, 1, 32, 32), (6, 1, 5, 5))  # 25 taps, 4704 outputs: too small to pay
    assert {choose(kd, *c1_b1, *one) for kd in KINDS} == {"direct"}
    stem = ((32, 3, 32, 32), (64, 3, 3, 3))  # (27 taps: the weight gradient has no pixel kernel)
    stem_args = ((1, 1), (1, 1), (1, 1), 1)
    assert [choose(kd, *stem, *stem_args) for kd in KINDS] == ["indirect", "indirect", "im2col"]
    s2_args = ((2, 2), (1, 1), (1, 1), 1)  # stride 2: no input gradient; 16x16 pixels
    s2 = ((32, 64, 32, 32), (128, 64, 3, 3))
    assert [choose(kd, *s2, *s2_args) for kd in KINDS] == ["indirect", "im2col", "indirect"]
    s2_8px = ((32, 128, 16, 16), (256, 128, 3, 3))  # 8x8 outputs: the weight gradient only
    wgrad_8px = "indirect" if OWN_GEMM else "im2col"  # where the packed GEMM runs im2col's
    assert [choose(kd, *s2_8px, *s2_args) for kd in KINDS] == ["indirect", "im2col", wgrad_8px]
    s2_1x1 = ((32, 64, 32, 32), (128, 64, 1, 1))
    assert {choose(kd, *s2_1x1, (2, 2), (0, 0), (1, 1), 1) for kd in KINDS} == {"im2col"}
    few_pixels = ((8, 32, 8, 8), (32, 32, 5, 5))  # 4x4 outputs: not the weight gradient
    assert [choose(kd, *few_pixels, *one) for kd in KINDS] == ["indirect", "indirect", "im2col"]


NARROWER_TARGETS = {  # Numba's target CPU -> the vector bytes the micro-kernel must then use
    ("haswell", "+64bit,+avx,+avx2,+fma,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+cmov,+popcnt"): 32,
    ("x86-64", "+64bit,+sse,+sse2,+cmov"): 16,
}


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 targets only"
)
@pytest.mark.parametrize("target", NARROWER_TARGETS, ids=lambda t: t[0])
def test_narrower_vectors_give_the_same_results(target):
    """On a CPU without AVX-512 (or AVX) the micro-kernel takes narrower vectors and smaller
    blocks (fewer registers): the blocking cases in a process compiling for such a CPU."""
    name, features = target
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from numbagrad.backends.cpu.kernels import microkernel as m\n"
        f"assert m.VECTOR_BYTES == {NARROWER_TARGETS[target]}, m.VECTOR_BYTES\n"
        "import test_conv_indirect as t\n"
        "for shape in t.BLOCKING_CASES:\n"
        "    for dtype in t.DTYPES:\n"
        "        t.test_indirect_matches_torch(shape, dtype)\n"
    )
    env = {**os.environ, "NUMBA_CPU_NAME": name, "NUMBA_CPU_FEATURES": features}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
