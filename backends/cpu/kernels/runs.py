"""Runs of a flat array copied or zeroed as one memcpy or memset, callable from ``@njit`` code
(the Winograd transforms' row copies, conv_direct.pad_flat's padded rows)."""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _element_pointer(context, builder, array_type, array, index, index_type):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [context.cast(builder, index, index_type, types.intp)])


@intrinsic
def copy_run(typingctx, dst, start, src, src_start, n):
    """dst.flat[start : start+n] = src.flat[src_start : src_start+n] for C-contiguous arrays of
    one dtype, as one memcpy (n >= 0). Row copies of 4..32 elements as vectorized loops cost
    several times more (their remainder loops run scalar)."""
    sig = types.void(dst, start, src, src_start, n)

    def codegen(context, builder, signature, args):
        a = signature.args
        d = _element_pointer(context, builder, a[0], args[0], args[1], a[1])
        s = _element_pointer(context, builder, a[2], args[2], args[3], a[3])
        count = context.cast(builder, args[4], a[4], types.intp)
        itemsize = context.get_abi_sizeof(context.get_data_type(a[0].dtype))
        cgutils.raw_memcpy(builder, d, s, count, itemsize)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def zero_run(typingctx, dst, start, n):
    """dst.flat[start : start+n] = 0 for a C-contiguous float array, as one memset (n >= 0)."""
    sig = types.void(dst, start, n)

    def codegen(context, builder, signature, args):
        a = signature.args
        d = _element_pointer(context, builder, a[0], args[0], args[1], a[1])
        itemsize = context.get_abi_sizeof(context.get_data_type(a[0].dtype))
        count = context.cast(builder, args[2], a[2], types.intp)
        cgutils.memset(builder, d, builder.mul(count, count.type(itemsize)), 0)
        return context.get_dummy_value()

    return sig, codegen
