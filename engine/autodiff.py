"""Reverse mode as a second graph.

``backward(forward, loss)`` walks the forward graph in reverse topological order and calls each
op's VJP rule, which emits gradient ops into a new graph. That graph's inputs are the forward
values the rules read (saved activations, the batch) and the loss seed; parameters appear as
``param`` leaves of the same name, so optimizers can append their updates to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import NotDifferentiableError, NumbagradError
from ..graph import Builder, Graph, Value
from ..graph.ir import format_type
from ..graph.ops import broadcast_to, get_op
from ..graph.ops.common import FLOAT_DTYPES

SEED_NAME = "dloss"


class ForwardValues:
    """The forward values a backward graph reads, materialized on demand.

    This is the one place that decides what crosses from the forward pass to the backward
    pass: every value a VJP rule reads is saved (kept in the forward executable's buffer and
    fed in), except constants, which are re-created, and parameters, which are shared leaves.
    Recomputing cheap values instead of saving them would be decided here.
    """

    def __init__(self, forward: Graph, builder: Builder) -> None:
        self.forward = forward
        self.builder = builder
        self._values: dict[int, Value] = {}
        self._params: dict[str, Value] = {}

    def __getitem__(self, forward_id: int) -> Value:
        if forward_id not in self._values:
            self._values[forward_id] = self._materialize(self.forward[forward_id])
        return self._values[forward_id]

    def param(self, name: str) -> Value:
        """The backward graph's leaf for the parameter called ``name``."""
        return self[self.forward.by_name(name, role="param").id]

    def _materialize(self, node) -> Value:
        if node.role == "const":
            return self.builder.const(node.value, node.dtype)
        if node.role in ("param", "state"):
            return self.builder.leaf(node.role, node.shape, node.dtype, node.name)
        return self.builder.leaf(
            "input", node.shape, node.dtype, node.name, attrs={"saved_from": node.id}
        )


class VJPContext:
    """What a VJP rule sees: the forward node, its operands and output as backward-graph
    Values (saved on first use), operand shapes, and which operands need a gradient."""

    def __init__(self, node, forward: Graph, values: ForwardValues, needs: Sequence[bool]):
        self.node = node
        self.attrs = node.attrs
        self._forward = forward
        self._values = values
        self._needs = tuple(needs)

    def input(self, i: int) -> Value:
        return self._values[self.node.inputs[i]]

    @property
    def output(self) -> Value:
        return self._values[self.node.id]

    def shape(self, i: int) -> tuple[int, ...]:
        return self._forward[self.node.inputs[i]].shape

    def dtype(self, i: int) -> str:
        return self._forward[self.node.inputs[i]].dtype

    def needs(self, i: int) -> bool:
        return self._needs[i]


def _requiring_grad(forward: Graph, wrt: set[int]) -> set[int]:
    """Ids of the float nodes whose value depends on a parameter we differentiate with respect
    to (integer and bool values, such as indices and comparisons, carry no gradient)."""
    result = set(wrt)
    for n in forward.ops():
        if (
            n.dtype in FLOAT_DTYPES
            and n.op != "stop_gradient"
            and any(i in result for i in n.inputs)
        ):
            result.add(n.id)
    return result


def build_backward(
    forward: Graph, loss: int | None = None, wrt: Sequence[str] | None = None
) -> tuple[Builder, ForwardValues, dict[str, Value]]:
    """Emit the gradient ops into a new builder; return it, the saved-value map and the
    gradient Value of each parameter (by name). ``backward`` freezes this into a Graph;
    optimizers append their updates to the builder first."""
    loss_id = forward.outputs[0] if loss is None else loss
    loss_node = forward[loss_id]
    params = {n.name: n for n in forward.leaves("param")}
    names = list(params) if wrt is None else list(wrt)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise NumbagradError(
            f"backward: no parameter named {unknown}; the graph has {list(params)}"
        )

    builder = Builder(f"{forward.name}.backward" if forward.name else "backward")
    values = ForwardValues(forward, builder)
    requires = _requiring_grad(forward, {params[n].id for n in names})
    grads: dict[int, Value] = {}
    if loss_id in requires:
        grads[loss_id] = builder.leaf("input", loss_node.shape, loss_node.dtype, SEED_NAME)

    for node in reversed(forward.ops()):
        g = grads.get(node.id)
        if g is None:
            continue
        needs = [i in requires for i in node.inputs]
        with builder.scope(node.name):
            for i, gi in zip(node.inputs, _call_vjp(node, forward, values, needs, g)):
                if gi is not None and i in requires:
                    grads[i] = gi if i not in grads else grads[i] + gi

    result = {}
    for name in names:
        p = params[name]
        g = grads.get(p.id)
        result[name] = g if g is not None else broadcast_to(builder.const(0.0, p.dtype), p.shape)
    return builder, values, result


def _call_vjp(node, forward, values, needs, g) -> list[Value | None]:
    opdef = get_op(node.op)
    where = f"op {node.op!r}" + (f" in layer '{node.name}'" if node.name else "")
    if opdef.vjp is None:
        raise NotDifferentiableError(f"{where} has no VJP rule, so it cannot be differentiated")
    grads = opdef.vjp(VJPContext(node, forward, values, needs), g)
    if not isinstance(grads, (list, tuple)) or len(grads) != len(node.inputs):
        got = f"{len(grads)} gradients" if isinstance(grads, (list, tuple)) else _kind(grads)
        raise NotDifferentiableError(
            f"{where}: its VJP rule must return a list of {len(node.inputs)} gradients (one per "
            f"input, None where none flows), not {got}"
        )
    for i, gi in enumerate(grads):
        if gi is None:
            if needs[i] and opdef.origin:
                raise NotDifferentiableError(
                    f"{where}: its VJP rule returned None for input {i}, which needs a gradient; "
                    "return a graph value (g * 0.0 for a zero gradient)"
                )
            continue
        if not isinstance(gi, Value):
            raise NotDifferentiableError(
                f"{where}: its VJP rule returned {_kind(gi)} for input {i}; return a graph value "
                "computed from g, ctx.input(i) and ctx.output with numbagrad ops (an array would "
                "be a constant, not a gradient)"
            )
        expected = forward[node.inputs[i]]
        if needs[i] and (gi.shape, gi.dtype) != (expected.shape, expected.dtype):
            raise NotDifferentiableError(
                f"{where}: its VJP rule gave input {i} a gradient "
                f"{format_type(gi.shape, gi.dtype)}, expected "
                f"{format_type(expected.shape, expected.dtype)}"
            )
    return list(grads)


def _kind(value) -> str:
    if isinstance(value, np.ndarray):
        return f"a NumPy array {format_type(value.shape, str(value.dtype))}"
    return f"a {type(value).__name__}"


def backward(forward: Graph, loss: int | None = None, wrt: Sequence[str] | None = None) -> Graph:
    """The backward pass of ``forward`` as a separate Graph.

    Inputs: the saved forward values (leaves with ``saved_from`` = forward node id) and the loss
    seed ``dloss`` (same shape as the loss); params are shared ``param`` leaves. Outputs: one
    gradient per parameter in ``wrt`` (default: all), labelled with the parameter's name.
    """
    builder, _, grads = build_backward(forward, loss, wrt)
    return builder.build(list(grads.values()), output_names=list(grads))


def seed_array(graph: Graph) -> np.ndarray:
    """The conventional seed (ones) for a backward graph's ``dloss`` input."""
    node = graph.by_name(SEED_NAME, role="input")
    return np.ones(node.shape, dtype=node.dtype)
