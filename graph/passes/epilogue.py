"""Epilogue fusion: the elementwise work that consumes a GEMM-like op's result becomes that
op's epilogue, so the result is finished in one kernel and never stored unfinished.

Forward, that is a conv's bias + activation (+ residual add) and a Linear's bias +
activation; backward, the activation mask (``relu_grad``) applied to the gradient that a
GEMM, a conv's input gradient or a pooling gradient just produced.

A producer ``P`` (see ``PRODUCERS``) and the elementwise node ``E`` that is its only reader
(a single op or a ``fused_elementwise`` group; an intermediate reshape is allowed) become one
``<P>_epilogue`` node, registered here for each producer. Its attributes are the producer's
plus:

- ``n_main``: how many of the node's inputs are the producer's (conv2d has 2 or 3);
- ``view``: the shape the producer's result is viewed as before the epilogue (the reshape
  between P and E), or None;
- ``body``/``scalar``: the epilogue in ``fuse.py``'s format, over operands ``{0}`` = the
  producer's result and ``{1}, {2}, ...`` = the node's inputs after the first ``n_main``
  (``scalar`` derived from ``body``, as there: never stored in a saved file).

Example: ``relu(conv2d(x, w, b))`` -> ``conv2d_epilogue(x, w, b)`` with ``n_main=3``,
``body=(("relu", (0,), ()),)``. Backends run the producer's kernel into the output buffer,
then the epilogue over that buffer in place (one launch, no intermediate buffer); the node's
NumPy reference and VJP are those of the producer followed by the body.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...errors import OpError, ShapeError
from ..ir import Graph, Node
from ..ops import OpDef, TensorType, get_op, register
from ..ops.common import FLOAT_DTYPES
from ..ops.shape import reshape
from ..rewriter import Rewriter
from .fuse import FUSED, MAX_INPUTS, compose_scalar
from .fuse import _check_body as check_body
from .fuse import _flops as body_flops
from .fuse import _reference as body_reference
from .fuse import _step_types as step_types
from .fuse import _vjp as body_vjp

PRODUCERS = ("conv2d", "matmul", "conv2d_grad_input", "max_pool2d_grad")
"""Ops that take an epilogue: the GEMM-like ops whose results activations and masks follow."""

EPILOGUE_OPS = {p: f"{p}_epilogue" for p in PRODUCERS}
"""Producer op name -> the name of its epilogue op."""

_EXTRA = ("n_main", "view", "body", "scalar")


def producer_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The producer's own attributes among an epilogue node's."""
    return {k: v for k, v in attrs.items() if k not in _EXTRA}


def _acc_type(producer: OpDef, types: Sequence[TensorType], attrs: dict) -> TensorType:
    """The type of the producer's result as the epilogue sees it (after ``view``)."""
    n, view = attrs["n_main"], attrs["view"]
    if len(types) < n:
        raise OpError(f"{producer.name}_epilogue: n_main={n} but only {len(types)} inputs")
    acc = producer.infer(types[:n], producer_attrs(attrs))
    if view is None:
        return acc
    if math.prod(view) != math.prod(acc.shape):
        raise ShapeError(f"{producer.name}_epilogue: cannot view {acc.shape} as {view}")
    return TensorType(view, acc.dtype)


class _Operands:
    """The interface of ``engine.autodiff.VJPContext`` over explicit operand Values: the
    producer's VJP sees the node's first ``n_main`` inputs, the body's VJP (``fuse._vjp``)
    sees the producer's result followed by the extra inputs."""

    def __init__(self, operands, output, attrs, needs, shapes) -> None:
        self._operands, self.output, self.attrs = operands, output, attrs
        self._needs, self._shapes = needs, shapes
        self.node = SimpleNamespace(inputs=tuple(range(len(operands))))

    def input(self, i: int):
        return self._operands[i]

    def shape(self, i: int) -> tuple[int, ...]:
        return self._shapes[i]

    def dtype(self, i: int) -> str:
        return self._operands[i].dtype

    def needs(self, i: int) -> bool:
        return self._needs[i]


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in value
    )


def _make_op(producer: OpDef) -> OpDef:
    name = EPILOGUE_OPS[producer.name]

    def normalize(attrs: dict[str, Any]) -> dict[str, Any]:
        own = producer.make_attrs(producer_attrs(attrs))
        n = attrs["n_main"]
        if not isinstance(n, int) or not producer.arity[0] <= n <= producer.arity[1]:
            raise OpError(f"{name}: n_main must be an int in {producer.arity}, got {n!r}")
        view = attrs["view"]
        if view is not None and not _is_shape(view):
            raise OpError(f"{name}: view must be None or a shape (a tuple of ints >= 0)")
        view = None if view is None else tuple(int(d) for d in view)
        body = check_body(attrs["body"])
        return {**own, "n_main": n, "view": view, "body": body, "scalar": compose_scalar(body)}

    def infer(types: Sequence[TensorType], attrs: dict) -> TensorType:
        acc = _acc_type(producer, types, attrs)
        out = step_types([acc, *types[attrs["n_main"] :]], attrs["body"])[-1]
        if (tuple(out.shape), out.dtype) != (tuple(acc.shape), acc.dtype):
            raise ShapeError(
                f"{name}: the epilogue must keep the {producer.name} result's type "
                f"{acc.shape} {acc.dtype}, got {out.shape} {out.dtype}"
            )
        return out

    def reference(*arrays, n_main, view, body, scalar=None, **own):
        acc = producer.reference(*arrays[:n_main], **own)
        if view is not None:
            acc = acc.reshape(view)
        return body_reference(acc, *arrays[n_main:], body=body)

    def flops(ins: Sequence[TensorType], out: TensorType, attrs: dict) -> int:
        n = attrs["n_main"]
        own = producer_attrs(attrs)
        raw = producer.infer(ins[:n], own)
        acc = _acc_type(producer, ins, attrs)
        tail = body_flops([acc, *ins[n:]], out, {"body": attrs["body"]})
        return int(producer.flops(ins[:n], raw, own)) + int(tail)

    def vjp(ctx, g):
        """Recompute the producer's result, run the body's VJP rules back to it, then the
        producer's VJP rule (so the epilogue node is differentiable like its parts)."""
        attrs = ctx.attrs
        n, view, own = attrs["n_main"], attrs["view"], producer_attrs(attrs)
        k = len(ctx.node.inputs)
        main = [ctx.input(i) for i in range(n)]
        raw = g.builder.emit(producer.name, main, **own)
        acc = raw if view is None else reshape(raw, view)
        needs_main = [ctx.needs(i) for i in range(n)]
        extras = [ctx.input(i) for i in range(n, k)]
        tail = _Operands(
            [acc, *extras],
            ctx.output,
            {"body": attrs["body"]},
            [any(needs_main), *(ctx.needs(i) for i in range(n, k))],
            [acc.shape, *(e.shape for e in extras)],
        )
        g_acc, *g_extras = body_vjp(tail, g)
        if g_acc is None or not any(needs_main):
            return [None] * n + list(g_extras)
        if view is not None:
            g_acc = reshape(g_acc, raw.shape)
        head = _Operands(main, raw, own, needs_main, [ctx.shape(i) for i in range(n)])
        return list(producer.vjp(head, g_acc)) + list(g_extras)

    return register(
        OpDef(
            name=name,
            arity=(producer.arity[0], producer.arity[1] + MAX_INPUTS),
            infer=infer,
            reference=reference,
            vjp=vjp if producer.vjp is not None else None,
            category="opaque",
            attrs={**producer.attrs, "n_main": 0, "view": None, "body": (), "scalar": ""},
            normalize=normalize,
            flops=flops,
            doc=f"{producer.name} followed by an elementwise epilogue; see "
            "graph/passes/epilogue.py",
            derived=("scalar",),
        )
    )


EPILOGUE_OPDEFS = {p: _make_op(get_op(p)) for p in PRODUCERS}


def producer_node(node: Node, graph: Graph) -> Node:
    """The producer part of an epilogue node, as a node of its own (same id, inputs and
    name; its shape is the producer's raw result's), for backends to lower."""
    producer = get_op(node.op.removesuffix("_epilogue"))
    n = node.attrs["n_main"]
    own = producer_attrs(node.attrs)
    raw = producer.infer([TensorType(graph[i].shape, graph[i].dtype) for i in node.inputs[:n]], own)
    return Node(
        node.id, producer.name, node.inputs[:n], own, tuple(raw.shape), raw.dtype, node.name
    )


def _sole_user(graph: Graph, users: dict[int, list[int]], node_id: int) -> Node | None:
    readers = users[node_id]
    return graph[readers[0]] if len(readers) == 1 else None


def _epilogue_node(p: Node, src: int, e: Node, view) -> Node | None:
    """``e`` (which reads ``src``, the producer ``p``'s result or its reshape) with ``p``
    folded in; None when the node would take too many inputs."""
    extras: list[int] = []

    def ref(i: int) -> int:
        if i == src:
            return 0
        if i not in extras:
            extras.append(i)
        return 1 + extras.index(i)

    if e.op == FUSED:
        outer = [ref(i) for i in e.inputs]
        body = tuple(
            (op, tuple(outer[r] if r >= 0 else r for r in refs), a)
            for op, refs, a in e.attrs["body"]
        )
    else:
        body = ((e.op, tuple(ref(i) for i in e.inputs), tuple(e.attrs.items())),)
    opdef = EPILOGUE_OPDEFS[p.op]
    inputs = (*p.inputs, *extras)
    if len(inputs) > opdef.arity[1]:
        return None
    attrs = opdef.make_attrs({**p.attrs, "n_main": len(p.inputs), "view": view, "body": body})
    return Node(e.id, opdef.name, inputs, attrs, e.shape, e.dtype, p.name)


def fuse_epilogue(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Fold every producer (``PRODUCERS``) into the elementwise node that is its only reader.

    Valid when the producer's result (and the reshape in between, if any) is read by nothing
    else, is neither kept (e.g. a pre-activation the backward graph reads) nor an output, and
    the elementwise node computes one value per element of that result (same shape and
    dtype: no broadcasting beyond it). The fused node takes the elementwise node's id (so a
    kept activation stays available) and the producer's name (its layer).

    Not fused: an optimizer update that reads its own state (momentum: ``m = mu * m + g``).
    The producer's kernel writes its result before the epilogue reads the state, so the
    fused node could not be computed into the state's buffer (``memory.inplace_updates``) and
    would hold a weight-sized arena buffer to the end of the run; apart, the gradient dies at
    the update, which runs in place.
    """
    users = graph.users()
    escapes = set(graph.roots()) | set(keep)
    reads_own_state = {v for s, v in graph.updates if s in graph[v].inputs}
    taken: set[int] = set()
    rw = Rewriter(graph, keep)
    for p in graph.ops():
        if p.op not in EPILOGUE_OPDEFS or p.id in escapes or p.dtype not in FLOAT_DTYPES:
            continue
        chain, view = [p.id], None
        e = _sole_user(graph, users, p.id)
        if e is not None and e.op == "reshape" and e.id not in escapes:
            chain.append(e.id)
            view = e.shape
            e = _sole_user(graph, users, e.id)
        if (
            e is None
            or e.id in taken
            or e.id in reads_own_state
            or get_op(e.op).category != "elementwise"
            or (e.shape, e.dtype) != (graph[chain[-1]].shape, p.dtype)
        ):
            continue
        node = _epilogue_node(p, chain[-1], e, view)
        if node is None:
            continue
        rw.set(node)
        taken.add(e.id)
        for c in chain:
            rw.remove(c)
    return rw.build()


def epilogue_size(node: Node) -> int:
    """How many elementwise ops an epilogue node's body holds (0 for other nodes)."""
    return len(node.attrs["body"]) if node.op in EPILOGUE_OPS.values() else 0


__all__ = [
    "EPILOGUE_OPS",
    "PRODUCERS",
    "epilogue_size",
    "fuse_epilogue",
    "producer_attrs",
    "producer_node",
]
