"""Collective ops for data-parallel training: ``allreduce`` sums (or averages) values across
the processes of a job.

``allreduce(x0, x1, ...)`` takes any number of tensors of one dtype and returns ONE flat
vector: their raveled values, packed one after another, reduced element by element across
processes. One node per bucket of gradients is one ``MPI_Allreduce`` on one contiguous buffer
of the arena (the memory planner places the node's output like any value), so many small
gradients cost one message; ``bucket_gradients`` slices each gradient back out (reshapes
alias). The reduction runs in the backends (``backends/collective.py``); the NumPy reference
here is the world of one, where the sum and the average are the values themselves.

Its VJP: averaging over P processes is the linear map (1/P) * 1 1^T (x) I, symmetric, so its
adjoint is the same averaging allreduce of the incoming gradient, sliced per operand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ...errors import OpError
from ..builder import Value, as_values
from .common import same_dtype
from .join import slice_
from .registry import OpDef, TensorType, register
from .shape import reshape

MAX_ALLREDUCE_INPUTS = 4096
DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024  # as torch DDP's bucket_cap_mb=25
BUCKET_SCOPE = "gradients.bucket"
"""Bucket k's nodes are named ``gradients.bucket<k>``: profiles show each bucket's time."""


def _normalize(attrs: dict) -> dict:
    if type(attrs["average"]) is not bool:
        raise OpError(f"average must be True or False, got {attrs['average']!r}")
    return attrs


def _infer(types, attrs) -> TensorType:
    return TensorType((sum(math.prod(t.shape) for t in types),), same_dtype(types))


def allreduce_reference(*xs: np.ndarray, average: bool) -> np.ndarray:
    """A world of one: the operands raveled and packed (their own sum and average)."""
    return np.concatenate([np.ravel(x) for x in xs])


def unpack(flat: Value, shapes: list[tuple[int, ...]]) -> list[Value]:
    """The pieces of a packed vector, shaped like the operands that were packed."""
    pieces, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(reshape(slice_(flat, start, start + size, 0), shape))
        start += size
    return pieces


def _vjp(ctx, g):
    shapes = [ctx.shape(i) for i in range(len(ctx.node.inputs))]
    return unpack(allreduce(g, average=ctx.attrs["average"]), shapes)


register(
    OpDef(
        name="allreduce",
        arity=(1, MAX_ALLREDUCE_INPUTS),
        infer=_infer,
        reference=allreduce_reference,
        vjp=_vjp,
        category="opaque",
        attrs={"average": True},
        normalize=_normalize,
        flops=lambda ins, out, attrs: math.prod(out.shape),
        doc="operands raveled and packed into one vector, summed (averaged when average) "
        "element by element across the processes of the job (MPI_Allreduce)",
    )
)


def allreduce(*xs, average: bool = True) -> Value:
    """One flat vector: ``xs`` raveled and packed, reduced across processes (their mean
    when ``average``, else their sum)."""
    values = as_values(*xs)
    return values[0].builder.emit("allreduce", values, average=bool(average))


def buckets(sizes: list[int], bucket_bytes: int) -> list[list[int]]:
    """Consecutive index runs of ``sizes`` (bytes), each closed once it reaches
    ``bucket_bytes`` (a tensor larger than that is a bucket of its own)."""
    result: list[list[int]] = [[]]
    filled = 0
    for i, size in enumerate(sizes):
        if result[-1] and filled + size > bucket_bytes:
            result.append([])
            filled = 0
        result[-1].append(i)
        filled += size
    return [b for b in result if b]


def bucket_gradients(
    grads: Mapping[str, Value], bucket_bytes: int = DEFAULT_BUCKET_BYTES
) -> dict[str, Value]:
    """Each gradient averaged across processes, through one ``allreduce`` per bucket of
    about ``bucket_bytes``. Buckets take the gradients in reverse order (the order the
    backward pass finishes them, last layer first, as DDP); gradients of different dtypes
    never share one."""
    names = list(grads)[::-1]
    result: dict[str, Value] = {}
    by_dtype: dict[str, list[str]] = {}
    for name in names:
        by_dtype.setdefault(grads[name].dtype, []).append(name)
    index = 0
    for members in by_dtype.values():
        sizes = [math.prod(grads[n].shape) * np.dtype(grads[n].dtype).itemsize for n in members]
        for run in buckets(sizes, bucket_bytes):
            values = [grads[members[i]] for i in run]
            with values[0].builder.scope(f"{BUCKET_SCOPE}{index}"):
                flat = allreduce(*values)
                pieces = unpack(flat, [v.shape for v in values])
            result.update((members[i], p) for i, p in zip(run, pieces))
            index += 1
    return {name: result[name] for name in grads}


__all__ = [
    "BUCKET_SCOPE",
    "DEFAULT_BUCKET_BYTES",
    "allreduce",
    "allreduce_reference",
    "bucket_gradients",
    "buckets",
    "unpack",
]
