"""Elementwise fusion: chains (and trees, and diamonds) of elementwise ops become one
``fused_elementwise`` node, so a backend runs them as one loop with no intermediate buffers.

The op ``fused_elementwise`` (registered here) has one attribute that defines it and one
derived from it:

- ``body``: a tuple of steps ``(op_name, refs, attrs)``, evaluated in order. ``op_name`` is a
  registered elementwise op, ``attrs`` a tuple of ``(name, value)`` pairs, and each ref in
  ``refs`` names an operand: ``r >= 0`` is the fused node's input ``r``; ``r < 0`` is the
  result of step ``~r`` (= ``-1 - r``), an earlier step. The last step's result is the output.
- ``scalar`` (derived by ``normalize``; any value given is replaced, and saved files never
  store it): the composition of the steps' scalar templates, one expression over ``{0}, {1},
  ...`` (the fused node's inputs), so a backend's elementwise code generator runs it like any
  elementwise op's template, reading it from ``node.attrs["scalar"]`` instead of the registry
  entry. Templates that use an operand twice (relu, sign) duplicate the operand's
  subexpression; the pass bounds groups so the expression stays small, and ``normalize``
  refuses a body (say, from a tampered file) whose expression would grow past that bound.

Example: ``relu(x * w + b)`` -> ``fused_elementwise(x, w, b)`` with ``body = (("mul", (0, 1),
()), ("add", (-1, 2), ()), ("relu", (-2,), ()))`` and ``scalar = "(0.0 if (({0} * {1}) +
{2}) <= 0.0 else (({0} * {1}) + {2}))"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import NotDifferentiableError, OpError
from ..ir import Graph, Node
from ..ops import OpDef, TensorType, get_op, register
from ..ops.common import FLOAT_DTYPES
from ..rewriter import Rewriter

FUSED = "fused_elementwise"
MAX_STEPS = 16
MAX_EXPR_CHARS = 2000
MAX_INPUTS = 32

Step = tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]]


def compose_scalar(body: Sequence[Step]) -> str:
    """The body as one scalar template over the fused node's inputs ``{0}, {1}, ...``;
    ``OpError`` when a step's expression grows past ``MAX_EXPR_CHARS``."""
    exprs: list[str] = []
    for j, (op, refs, attrs) in enumerate(body):
        operands = [f"{{{r}}}" if r >= 0 else exprs[~r] for r in refs]
        exprs.append(get_op(op).scalar.format(*operands, **dict(attrs)))
        if len(exprs[-1]) > MAX_EXPR_CHARS:
            raise OpError(f"{FUSED}: step {j} ({op}) grows past {MAX_EXPR_CHARS} characters")
    return exprs[-1]


def _is_pairs(attrs: Any) -> bool:
    return isinstance(attrs, (tuple, list)) and all(
        isinstance(a, (tuple, list)) and len(a) == 2 and isinstance(a[0], str) for a in attrs
    )


def _are_refs(refs: Any, j: int, arity: int) -> bool:
    """Operand refs of step ``j``: inputs (``r >= 0``) or earlier steps (``~j < r < 0``)."""
    return (
        isinstance(refs, (tuple, list))
        and len(refs) == arity
        and all(
            isinstance(r, int) and not isinstance(r, bool) and ~j < r <= MAX_INPUTS for r in refs
        )
    )


def _check_step(j: int, step: Any) -> Step:
    """Step ``j`` of a body, checked (it may come from a file) and canonical."""
    if not (isinstance(step, (tuple, list)) and len(step) == 3 and isinstance(step[0], str)):
        raise OpError(f"{FUSED}: step {j} must be (op name, operand refs, attributes)")
    op, refs, attrs = step
    opdef = get_op(op)
    if opdef.category != "elementwise" or op == FUSED:
        raise OpError(f"{FUSED}: step {j} ({op}) is not a plain elementwise op")
    if not _are_refs(refs, j, opdef.arity[0]):
        raise OpError(
            f"{FUSED}: step {j} ({op}) has bad operand refs: it reads {opdef.arity[0]}, each "
            f"an input 0..{MAX_INPUTS} or an earlier step (-1 is step 0)"
        )
    if not _is_pairs(attrs):
        raise OpError(f"{FUSED}: step {j} ({op}) attributes must be (name, value) pairs")
    attrs = tuple(opdef.make_attrs(dict(attrs)).items())  # checked, canonical (tuples)
    return (op, tuple(refs), attrs)


def _check_body(body: Any) -> tuple[Step, ...]:
    if not isinstance(body, (tuple, list)) or not 1 <= len(body) <= MAX_STEPS:
        raise OpError(f"{FUSED}: body must be a tuple of 1 to {MAX_STEPS} steps")
    return tuple(_check_step(j, step) for j, step in enumerate(body))


def _normalize(attrs: dict[str, Any]) -> dict[str, Any]:
    body = _check_body(attrs["body"])
    return {"body": body, "scalar": compose_scalar(body)}


def _step_types(types: Sequence[TensorType], body: Sequence[Step]) -> list[TensorType]:
    results: list[TensorType] = []
    for op, refs, attrs in body:
        if any(r >= len(types) for r in refs):
            raise OpError(f"{FUSED}: step {op} reads input {max(refs)} of {len(types)}")
        operands = [types[r] if r >= 0 else results[~r] for r in refs]
        results.append(get_op(op).infer(operands, dict(attrs)))
    return results


def _infer(types: Sequence[TensorType], attrs: dict[str, Any]) -> TensorType:
    return _step_types(types, attrs["body"])[-1]


def _reference(*arrays, body, scalar=None):
    results: list = []
    for op, refs, attrs in body:
        operands = [arrays[r] if r >= 0 else results[~r] for r in refs]
        results.append(get_op(op).reference(*operands, **dict(attrs)))
    return results[-1]


def _flops(ins: Sequence[TensorType], out: TensorType, attrs: dict[str, Any]) -> int:
    total = 0
    body = attrs["body"]
    step_types = _step_types(ins, body)
    for (op, refs, a), t in zip(body, step_types):
        operands = [ins[r] if r >= 0 else step_types[~r] for r in refs]
        total += get_op(op).flops(operands, t, dict(a))
    return total


class _StepContext:
    """What one step's VJP rule sees (the interface of ``engine.autodiff.VJPContext``)."""

    def __init__(self, operands, output, attrs, needs) -> None:
        self._operands, self.output, self.attrs, self._needs = operands, output, attrs, needs

    def input(self, i: int):
        return self._operands[i]

    def shape(self, i: int) -> tuple[int, ...]:
        return self._operands[i].shape

    def dtype(self, i: int) -> str:
        return self._operands[i].dtype

    def needs(self, i: int) -> bool:
        return self._needs[i]


def _vjp(ctx, g):
    """Recompute the steps' results from the inputs (the last one is the saved output), then
    run each step's VJP rule in reverse, summing gradients that meet on a value."""
    body = ctx.attrs["body"]
    n_in = len(ctx.node.inputs)
    values, needs = [], [ctx.needs(k) for k in range(n_in)]
    for j, (op, refs, attrs) in enumerate(body):
        operands = [ctx.input(r) if r >= 0 else values[~r] for r in refs]
        last = j == len(body) - 1
        values.append(ctx.output if last else g.builder.emit(op, operands, **dict(attrs)))
        needs.append(any(needs[r if r >= 0 else n_in + ~r] for r in refs))
    grads: dict[int, object] = {n_in + len(body) - 1: g}
    for j in reversed(range(len(body))):
        gj = grads.get(n_in + j)
        if gj is None:
            continue
        op, refs, attrs = body[j]
        slots = [r if r >= 0 else n_in + ~r for r in refs]
        operands = [ctx.input(r) if r >= 0 else values[~r] for r in refs]
        step = _StepContext(operands, values[j], dict(attrs), [needs[s] for s in slots])
        rule = get_op(op).vjp
        if rule is None:
            raise NotDifferentiableError(f"{FUSED}: its step {op!r} has no VJP rule")
        for slot, gi in zip(slots, rule(step, gj)):
            if gi is not None and needs[slot]:
                grads[slot] = gi if slot not in grads else grads[slot] + gi
    return [grads.get(k) for k in range(n_in)]


class _PerNodeScalar(str):
    """The registry-level template of ``fused_elementwise``: the real one is per node."""

    def format(self, *args: Any, **kwargs: Any) -> str:
        raise OpError(
            f"{FUSED}: its scalar expression depends on the node: use node.attrs['scalar'] "
            "(a backend lowering elementwise ops should read attrs.get('scalar', opdef.scalar))"
        )


FUSED_OP = register(
    OpDef(
        name=FUSED,
        arity=(1, MAX_INPUTS),
        infer=_infer,
        reference=_reference,
        vjp=_vjp,
        category="elementwise",
        attrs={"body": (), "scalar": ""},
        normalize=_normalize,
        scalar=_PerNodeScalar("{0}"),
        flops=_flops,
        doc="several elementwise ops as one; see graph/passes/fuse.py for the body format",
        derived=("scalar",),
    )
)


def _fusible(node: Node) -> bool:
    # A cast rounds: inside a group its operand would stay in the wider type.
    return (
        not node.is_leaf
        and node.dtype in FLOAT_DTYPES
        and get_op(node.op).category == "elementwise"
        and node.op != "cast"
    )


def _build(graph: Graph, members: list[int]) -> tuple[tuple[int, ...], tuple[Step, ...]]:
    """The fused node's inputs and body for ``members`` (in topological order)."""
    inputs: list[int] = []
    ref: dict[int, int] = {}  # member id -> ref of its result
    body: list[Step] = []

    def operand(i: int) -> int:
        if i in ref:
            return ref[i]
        if i not in inputs:
            inputs.append(i)
        return inputs.index(i)

    for m in members:
        node = graph[m]
        if node.op == FUSED:  # inline an earlier fusion's body
            outer = [operand(i) for i in node.inputs]
            base = len(body)
            for op, refs, attrs in node.attrs["body"]:
                body.append((op, tuple(outer[r] if r >= 0 else ~(base + ~r) for r in refs), attrs))
        else:
            body.append(
                (node.op, tuple(operand(i) for i in node.inputs), tuple(node.attrs.items()))
            )
        ref[m] = ~(len(body) - 1)
    return tuple(inputs), tuple(body)


def _fits(graph: Graph, members: list[int]) -> bool:
    inputs, body = _build(graph, members)
    if len(body) > MAX_STEPS or len(inputs) > MAX_INPUTS:
        return False
    try:
        compose_scalar(body)
    except OpError:  # the expression grows too long
        return False
    return True


def fuse_elementwise(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Replace maximal elementwise groups by ``fused_elementwise`` nodes.

    Walking from the last node back, each unfused elementwise node roots a group that absorbs
    elementwise producers whose every user is already in the group and which are neither
    kept nor outputs (so no intermediate value escapes and the group is convex). A group of
    one op stays as it is; the fused node takes the root's id and name.
    """
    users = graph.users()
    position = {n.id: k for k, n in enumerate(graph.nodes)}
    escapes = set(graph.roots()) | set(keep)
    fusible = {n.id for n in graph.nodes if _fusible(n)}
    taken: set[int] = set()
    rw = Rewriter(graph, keep)
    for root in reversed(graph.nodes):
        if root.id not in fusible or root.id in taken:
            continue
        members = [root.id]
        grown = True
        while grown:
            grown = False
            for m in list(members):
                for p in graph[m].inputs:
                    if (
                        p in fusible
                        and p not in taken
                        and p not in escapes
                        and p not in members
                        and all(u in members for u in users[p])
                    ):
                        candidate = sorted([*members, p], key=position.__getitem__)
                        if _fits(graph, candidate):
                            members = candidate
                            grown = True
        taken.update(members)
        if len(members) == 1:
            continue
        inputs, body = _build(graph, members)
        attrs = FUSED_OP.make_attrs({"body": body})
        out = FUSED_OP.infer([TensorType(graph[i].shape, graph[i].dtype) for i in inputs], attrs)
        if (tuple(out.shape), out.dtype) != (root.shape, root.dtype):
            raise AssertionError(f"fusion changed the type of {root.format()}")
        rw.set(Node(root.id, FUSED, inputs, attrs, root.shape, root.dtype, root.name))
        for m in members[:-1]:
            rw.remove(m)
    return rw.build()


def fused_size(node: Node) -> int:
    """How many ops a node stands for (1 unless it is a fusion)."""
    return len(node.attrs["body"]) if node.op == FUSED else 1


__all__ = ["FUSED", "FUSED_OP", "compose_scalar", "fuse_elementwise", "fused_size"]
