"""A packed GEMM on the register-blocked micro-kernel, for CPUs whose BLAS runs narrower
vectors than the CPU has.

OpenBLAS picks its kernels by CPU model at load time. On a CPU it does not know as an AVX-512
one (AMD Zen 5 with OpenBLAS 0.3.30, for one) it runs its AVX2 "Haswell" kernels: 230-245
GFLOP/s on a 2-core Zen 5 where the micro-kernel's AVX-512 FMAs reach 400. ``blas.gemm``
then comes here (``OWN_GEMM``), for float32 with alpha 1 and beta 0 or 1, which is every GEMM
the kernels issue; elsewhere it keeps BLAS.

The loops are BLIS's: a panel of B (PACK_K x PACK_N) is copied into slivers of
``VECTORS`` vectors of columns, k-major, so the micro-kernel streams it from L1/L2 with unit
stride; the block of C accumulates over the panels of K. A is read in place through the
micro-kernel's row offsets (BLOCK_ROWS rows, each a unit-stride run of k), except a
transposed A, whose blocks (PACK_M x PACK_K) are copied into k-major slivers (see
``packed_gemm``). Edge blocks of C (rows or columns short of a whole block) go through a
small tile.
"""

from __future__ import annotations

import llvmlite.binding as llb
import numpy as np
from numba import carray, cfunc, njit, types

from ..threads import blas_architectures
from .microkernel import ROWS, VECTOR_BYTES, microkernel

VECTORS = 2  # vectors of columns per block: 16 accumulators keep the FMA units busier
BLOCK_ROWS = ROWS[VECTORS]
COLUMNS = VECTORS * VECTOR_BYTES // 4  # float32 columns per block (a constant: loops unroll)
BLOCK_KERNEL = microkernel(BLOCK_ROWS, VECTORS)
BLOCK_KERNEL_ADD = microkernel(BLOCK_ROWS, VECTORS, accumulate=True)
# Block sizes measured on a 2-core Zen 5 (48 KiB L1d, 1 MiB L2 per core), 2048^3 and the
# im2col products of ResNet-18: PACK_K 384 and PACK_M 96 beat 256/128 by 5-40%.
PACK_K, PACK_M, PACK_N = 384, 96, 1024
# Elements of a row of b read in one run when packing op(b) = b^T: a TRANSPOSE_RUN x COLUMNS
# tile of the pack stays in L1 while COLUMNS rows of b stream in.
TRANSPOSE_RUN = 16
# OpenBLAS's kernel sets (threadpoolctl's "architecture") that use AVX-512.
OPENBLAS_AVX512 = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


def blas_is_narrower(vector_bytes: int, libraries: list[tuple[str, str | None]]) -> bool:
    """Whether the BLAS the kernels call runs narrower vectors than the CPU's
    ``vector_bytes``: an OpenBLAS whose kernel set is not an AVX-512 one on an AVX-512 CPU.
    Any other BLAS (MKL, BLIS, none found) is trusted to use the CPU."""
    if vector_bytes < 64 or not libraries:
        return False
    return all(
        api == "openblas" and (arch or "").lower() not in OPENBLAS_AVX512 for api, arch in libraries
    )


# Read once at import. Cached kernels hold the choice, so their folder's name depends on the
# BLAS libraries loaded (numba_cache.kernels_digest): a kernel cached where gemm calls SYMBOL
# must not load where it is not registered.
OWN_GEMM = blas_is_narrower(VECTOR_BYTES, blas_architectures())


def own_gemm_applies(m: int, n: int, k: int, itemsize: int, alpha: float, beta: float) -> bool:
    """Whether ``packed_gemm`` computes this product (a whole block at least, float32,
    alpha 1, beta 0 or 1); a pure function, so tests can ask it for any case."""
    return (
        itemsize == 4
        and alpha == 1
        and (beta == 0 or beta == 1)
        and m >= BLOCK_ROWS
        and n >= COLUMNS
        and k > 0
    )


own_gemm_applies_jit = njit(cache=True, inline="always")(own_gemm_applies)


@njit(cache=True, nogil=True, inline="always")
def _pack_at(a, r0, rows, k0, kc, ap):
    """Rows r0.. r0+rows of op(a) = a^T, columns k0.. k0+kc, into ``ap`` as slivers of
    BLOCK_ROWS rows, each k-major (zeros for the rows past the end)."""
    for s in range((rows + BLOCK_ROWS - 1) // BLOCK_ROWS):
        for k in range(kc):
            at = (s * kc + k) * BLOCK_ROWS
            for i in range(BLOCK_ROWS):
                r = s * BLOCK_ROWS + i
                ap[at + i] = a[k0 + k, r0 + r] if r < rows else 0


@njit(cache=True, nogil=True, inline="always")
def _pack_b(b, trans_b, k0, kc, j0, cols, bp):
    """Columns j0.. j0+cols of op(b), rows k0.. k0+kc, into ``bp`` as panels of COLUMNS
    columns, each k-major (zeros for the columns past the end). Indices into ``bp`` are
    written (p * kc + k) * COLUMNS + v: as p * kc * COLUMNS + k * COLUMNS + v, LLVM left the
    plain copy scalar (3x slower)."""
    for p in range((cols + COLUMNS - 1) // COLUMNS):
        jp = j0 + p * COLUMNS
        if p * COLUMNS + COLUMNS > cols:
            _pack_b_edge(b, trans_b, k0, kc, jp, cols - p * COLUMNS, bp, p)
        elif trans_b:
            _pack_bt_panel(b, k0, kc, jp, bp, p)
        else:  # a contiguous copy per row of b, which LLVM vectorizes
            for k in range(kc):
                for v in range(COLUMNS):
                    bp[(p * kc + k) * COLUMNS + v] = b[k0 + k, jp + v]


@njit(cache=True, nogil=True, inline="always")
def _pack_bt_panel(b, k0, kc, jp, bp, p):
    """Whole panel p of op(b) = b^T: rows jp.. of b, read along them in runs of
    TRANSPOSE_RUN (one k at a time across COLUMNS rows of b ran 6x slower)."""
    whole = kc - kc % TRANSPOSE_RUN
    for kb in range(0, whole, TRANSPOSE_RUN):
        for v in range(COLUMNS):
            for t in range(TRANSPOSE_RUN):
                bp[(p * kc + kb + t) * COLUMNS + v] = b[jp + v, k0 + kb + t]
    for v in range(COLUMNS):
        for k in range(whole, kc):
            bp[(p * kc + k) * COLUMNS + v] = b[jp + v, k0 + k]


@njit(cache=True, nogil=True, inline="always")
def _pack_b_edge(b, trans_b, k0, kc, jp, cols, bp, p):
    """Panel p, the last, ``cols`` < COLUMNS columns wide: zeros past them."""
    for k in range(kc):
        for v in range(COLUMNS):
            at = (p * kc + k) * COLUMNS + v
            if v >= cols:
                bp[at] = 0
            elif trans_b:
                bp[at] = b[jp + v, k0 + k]
            else:
                bp[at] = b[k0 + k, jp + v]


@njit(cache=True, nogil=True)
def _edge_block(c, m, n, i0, j0, ap, a0, ra, r0, ka, kc, bp, b0, tile, add):
    """A block of C that sticks out past row m or column n: computed whole into ``tile``,
    then its part inside C written (or added)."""
    BLOCK_KERNEL(tile, 0, COLUMNS, ap, a0, ra, r0, ka, 0, kc, bp, b0, COLUMNS)
    for i in range(min(BLOCK_ROWS, m - i0)):
        for v in range(min(COLUMNS, n - j0)):
            if add:
                c[i0 + i, j0 + v] += tile[i * COLUMNS + v]
            else:
                c[i0 + i, j0 + v] = tile[i * COLUMNS + v]


@njit(cache=True, nogil=True)
def packed_gemm(a, b, c, m, n, k, trans_a, trans_b, beta):
    """c[:m, :n] = op(a) @ op(b) + beta * c[:m, :n] on one thread, float32, beta 0 or 1 (0
    ignores what c held, NaN included). a, b and c are C-contiguous, one row per row of the
    operand at its leading dimension (their shape[1]; the columns past the operand's are not
    touched): op(a) is (m, k), op(b) (k, n), transposed as in ``blas.gemm``. C-contiguous so
    that the copies into the packs know their unit stride and vectorize.

    A is read in place, its rows through an offset table, unless ``trans_a``: a column of
    a (a row of op(a)) then has its k at the leading dimension apart, often a multiple of
    4 KiB, and a block's reads would all land in one L1 set (1024^3: 160-175 against 200-205
    GFLOP/s packed). Packing A paid for nothing else: on the small products of the Winograd
    blocks (64x128x64) it cost as much as the multiplies."""
    w = COLUMNS
    kc_max = min(PACK_K, k)
    bp = np.empty(-(-min(PACK_N, n) // w) * w * kc_max, c.dtype)
    tile = np.empty(BLOCK_ROWS * w, c.dtype)
    ldc = c.shape[1]
    if trans_a:  # the pack of A, its rows' and k's offsets
        src = np.empty(-(-min(PACK_M, m) // BLOCK_ROWS) * BLOCK_ROWS * kc_max, c.dtype)
        ra = np.arange(BLOCK_ROWS)
        ka = np.arange(kc_max) * BLOCK_ROWS
    else:  # a itself, rows past m at the last (their results are not read)
        src = a.reshape(-1)
        ra = np.minimum(np.arange(-(-m // BLOCK_ROWS) * BLOCK_ROWS), m - 1) * a.shape[1]
        ka = np.arange(kc_max)
    for jc in range(0, n, PACK_N):
        cols = min(PACK_N, n - jc)
        for pc in range(0, k, PACK_K):
            kc = min(PACK_K, k - pc)
            add = beta != 0 or pc > 0
            _pack_b(b, trans_b, pc, kc, jc, cols, bp)
            for ic in range(0, m, PACK_M):
                rows = min(PACK_M, m - ic)
                if trans_a:
                    _pack_at(a, ic, rows, pc, kc, src)
                for p in range(-(-cols // w)):
                    j0 = jc + p * w
                    b0 = p * kc * w
                    for s in range(-(-rows // BLOCK_ROWS)):
                        i0 = ic + s * BLOCK_ROWS
                        a0, r0 = (s * kc * BLOCK_ROWS, 0) if trans_a else (pc, i0)
                        if i0 + BLOCK_ROWS > m or j0 + w > n:
                            _edge_block(c, m, n, i0, j0, src, a0, ra, r0, ka, kc, bp, b0, tile,
                                        add)  # fmt: skip
                        elif add:
                            BLOCK_KERNEL_ADD(
                                c, i0 * ldc + j0, ldc, src, a0, ra, r0, ka, 0, kc, bp, b0, w
                            )
                        else:
                            BLOCK_KERNEL(
                                c, i0 * ldc + j0, ldc, src, a0, ra, r0, ka, 0, kc, bp, b0, w
                            )


# ``gemm`` calls the packed GEMM by this name, as it calls BLAS: a call to an @njit function
# would link its code into every kernel that calls gemm, and Numba optimizes each kernel's
# linked code again (+8 s of LeNet-5's cold start). A C callback is compiled once.
SYMBOL = "numbagrad_packed_sgemm"


def _signature(pointer: types.Type) -> types.Type:
    """(a, lda, b, ldb, c, ldc, m, n, k, trans_a, trans_b, beta): ``packed_gemm``'s operands
    as pointers and leading dimensions, the flags as integers."""
    n = types.intp
    return types.void(pointer, n, pointer, n, pointer, n, n, n, n, n, n, types.float32)


EXTERNAL = types.ExternalFunction(SYMBOL, _signature(types.voidptr))


def _packed_sgemm(a, lda, b, ldb, c, ldc, m, n, k, trans_a, trans_b, beta):
    packed_gemm(
        carray(a, (k if trans_a else m, lda)),
        carray(b, (n if trans_b else k, ldb)),
        carray(c, (m, ldc)),
        m, n, k, trans_a != 0, trans_b != 0, beta,
    )  # fmt: skip


if OWN_GEMM:  # compiled (or loaded from the cache) only where gemm calls it
    PACKED_SGEMM = cfunc(_signature(types.CPointer(types.float32)), cache=True)(_packed_sgemm)
    llb.add_symbol(SYMBOL, PACKED_SGEMM.address)
