"""A register-blocked GEMM micro-kernel with gathered rows, written in LLVM IR.

``microkernel(rows, vectors)`` is a Numba intrinsic that computes a ``rows`` x ``vectors*LANES``
block of C = A' @ B, where row i of A' is gathered from a flat array through two offset
tables (an "indirect GEMM"):

    C[c0 + i*ldc + v] = sum over k < kk of
                        A[a0 + ra[r0 + i] + ka[k0 + k]] * B[b0 + (k0 + k)*ldb + v]

for i < rows, v < vectors*LANES. With A a convolution's input, ``ra`` the output pixels'
offsets and ``ka`` the taps' offsets, it is a convolution that reads the input in place (no
im2col copy) with the output channels along the vector lanes; with the roles of the tables
swapped it is the weight gradient.

Why IR and not Numba loops: the ``rows x vectors`` accumulators must stay in registers for the
whole reduction. LLVM's vectorizer does not do that from scalar loops, and Numba has no vector
type; here each accumulator is one ``<LANES x float>`` value, each step loads ``vectors``
vectors of B, broadcasts ``rows`` scalars of A and issues ``rows*vectors`` FMAs. LeNet's C3
forward (6 -> 16 channels, 5x5, batch 64): 320 GFLOP/s with 8 rows of one 16-lane vector,
against 56 for the direct kernel and 190 for PyTorch (oneDNN).

The vectors are as wide as the CPU's widest (64 bytes with AVX-512, 32 with AVX, else 16);
LLVM splits a wider vector into the ones the CPU has, so the result never depends on it. No
masks: the caller pads B's columns to whole vectors and C's rows to whole blocks, and points
the rows past the end at valid ones (what they compute is not read).
"""

from __future__ import annotations

import functools

import llvmlite.binding as llb
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic


def _vector_bytes() -> int:
    """The widest vector register of the CPU Numba compiles for, in bytes."""
    features = config.CPU_FEATURES or llb.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(","):
        return 64
    if "+avx" in features.split(","):
        return 32
    return 16


VECTOR_BYTES = _vector_bytes()
# Accumulator rows per block for 1..4 vectors of columns: rows*vectors accumulators plus the
# B vectors and one broadcast must fit the vector registers (32 with AVX-512, else 16).
# Measured on LeNet's C3 (16 lanes, one vector): 4 rows 208, 8 rows 321, 12 rows 309 GFLOP/s.
ROWS = {1: 8, 2: 8, 3: 6, 4: 6} if VECTOR_BYTES == 64 else {1: 8, 2: 6, 3: 4, 4: 3}
MAX_VECTORS = 4


def lanes(dtype) -> int:
    """Elements of ``dtype`` (a NumPy dtype) per vector."""
    return VECTOR_BYTES // dtype.itemsize


def _data(context, builder, ty, value):
    return context.make_array(ty)(context, builder, value).data


def _vector_at(builder, base, offset, vty):
    """A pointer to the vector at element ``offset`` of the scalar pointer ``base``."""
    return builder.bitcast(builder.gep(base, [offset]), vty.as_pointer())


@functools.cache
def microkernel(rows: int, vectors: int, accumulate: bool = False):
    """The intrinsic ``mk(c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb)`` (arrays are
    C-contiguous of one float dtype, tables int64; see the module docstring). It overwrites
    the block of C, or with ``accumulate`` adds to it (the packed GEMM's panels of K).
    ``ldb`` may also be a table: row k of B then starts at b0 + ldb[k0 + k] (B a conv's
    input, its rows the taps' shifts, its vectors consecutive pixels)."""

    @intrinsic
    def mk(typingctx, c, c0, ldc, a, a0, ra, r0, ka, k0, kk, b, b0, ldb):
        n = types.intp  # (Numba casts the offsets the caller passes)
        b_table = isinstance(ldb, types.Array)
        sig = types.void(c, n, n, a, n, ra, n, ka, n, n, b, n, ldb if b_table else n)

        def codegen(context, builder, signature, args):
            c_, c0_, ldc_, a_, a0_, ra_, r0_, ka_, k0_, kk_, b_, b0_, ldb_ = args
            cty, aty, raty, katy, bty = (signature.args[i] for i in (0, 3, 5, 7, 10))
            fty = context.get_value_type(cty.dtype)
            width = VECTOR_BYTES // context.get_abi_sizeof(fty)
            vty = ir.VectorType(fty, width)
            i64 = ir.IntType(64)
            cp, ap, rp, kp, bp = (
                _data(context, builder, t, v)
                for t, v in ((cty, c_), (aty, a_), (raty, ra_), (katy, ka_), (bty, b_))
            )
            kbp = _data(context, builder, signature.args[12], ldb_) if b_table else None
            a_rows = []
            for i in range(rows):
                ri = builder.load(builder.gep(rp, [builder.add(r0_, ir.Constant(i64, i))]))
                a_rows.append(builder.gep(ap, [builder.add(a0_, ri)]))
            c_vecs = [
                [
                    _vector_at(
                        builder,
                        cp,
                        builder.add(
                            builder.add(c0_, builder.mul(ldc_, ir.Constant(i64, i))),
                            ir.Constant(i64, j * width),
                        ),
                        vty,
                    )
                    for j in range(vectors)
                ]
                for i in range(rows)
            ]
            accs = [
                [
                    cgutils.alloca_once_value(
                        builder,
                        builder.load(c_vecs[i][j], align=1)
                        if accumulate
                        else ir.Constant(vty, None),
                    )
                    for j in range(vectors)
                ]
                for i in range(rows)
            ]
            suffix = f"v{width}f{'32' if cty.dtype == types.float32 else '64'}"
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.{suffix}"
            )
            splat = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            undef = ir.Constant(vty, ir.Undefined)
            with cgutils.for_range(builder, kk_) as loop:
                k = builder.add(k0_, loop.index)
                off = builder.load(builder.gep(kp, [k]))
                if b_table:
                    b_row = builder.add(b0_, builder.load(builder.gep(kbp, [k])))
                else:
                    b_row = builder.add(b0_, builder.mul(k, ldb_))
                b_vecs = [
                    builder.load(
                        _vector_at(
                            builder, bp, builder.add(b_row, ir.Constant(i64, j * width)), vty
                        ),
                        align=1,
                    )
                    for j in range(vectors)
                ]
                for i in range(rows):
                    s = builder.load(builder.gep(a_rows[i], [off]))
                    s = builder.insert_element(undef, s, ir.Constant(ir.IntType(32), 0))
                    s = builder.shuffle_vector(s, undef, splat)
                    for j in range(vectors):
                        acc = builder.load(accs[i][j])
                        builder.store(builder.call(fma, [s, b_vecs[j], acc]), accs[i][j])
            for i in range(rows):
                for j in range(vectors):
                    builder.store(builder.load(accs[i][j]), c_vecs[i][j], align=1)
            return context.get_dummy_value()

        return sig, codegen

    return mk
