"""Building graphs: a Builder appends checked nodes, a Value is a symbolic handle on one.

Values support Python operators and the common tensor methods, so models (while tracing)
and VJP rules (while differentiating) are written with the same op API.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import NumbagradError, ShapeError
from .ir import DTYPES, ROLES, Graph, Node, format_type
from .ops.registry import TensorType, get_op


class Builder:
    """Appends nodes in topological order; shape inference runs as each op is emitted."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._nodes: list[Node] = []
        self._scope: list[str] = []
        self._consts: dict[tuple[str, tuple[int, ...], bytes], int] = {}

    def __getitem__(self, node_id: int) -> Node:
        return self._nodes[node_id]

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    @contextmanager
    def scope(self, path: str) -> Iterator[None]:
        """Nodes emitted inside carry ``path`` as their name (the layer path)."""
        self._scope.append(path)
        try:
            yield
        finally:
            self._scope.pop()

    @property
    def current_scope(self) -> str:
        return self._scope[-1] if self._scope else ""

    def _append(self, **fields: Any) -> Value:
        node = Node(id=len(self._nodes), **fields)
        self._nodes.append(node)
        return Value(self, node.id)

    def leaf(
        self,
        role: str,
        shape: Sequence[int],
        dtype: str,
        name: str = "",
        attrs: Mapping[str, Any] | None = None,
    ) -> Value:
        if role not in ROLES or role == "const":
            raise ValueError(f"leaf role must be input, param or state, not {role!r}")
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; numbagrad knows {DTYPES}")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ShapeError(f"leaf {name!r}: negative dimension in shape {shape}")
        return self._append(
            op="leaf", inputs=(), attrs=attrs or {}, shape=shape, dtype=dtype, name=name, role=role
        )

    def const(self, value: Any, dtype: str) -> Value:
        """A constant leaf; equal constants are shared."""
        array = np.array(value, dtype=dtype, order="C")  # ascontiguousarray would make 0-d 1-d
        array.setflags(write=False)
        key = (dtype, array.shape, array.tobytes())
        if key not in self._consts:
            v = self._append(
                op="leaf",
                inputs=(),
                attrs={},
                shape=array.shape,
                dtype=dtype,
                name="",
                role="const",
                value=array,
            )
            self._consts[key] = v.id
        return Value(self, self._consts[key])

    def emit(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Append ``op(inputs, attrs)``, checking attributes and inferring the output type."""
        opdef = get_op(op)
        where = f"{op}" + (f" in layer '{self.current_scope}'" if self.current_scope else "")
        lo, hi = opdef.arity
        if not lo <= len(inputs) <= hi:
            raise NumbagradError(f"{where}: takes {lo}..{hi} inputs, got {len(inputs)}")
        for v in inputs:
            if v.builder is not self:
                raise NumbagradError(f"{where}: an input belongs to another graph")
        types = [TensorType(v.node.shape, v.node.dtype) for v in inputs]
        try:
            full_attrs = opdef.make_attrs(attrs)
            out = opdef.infer(types, full_attrs)
        except NumbagradError as e:
            shapes = ", ".join(format_type(*t) for t in types)
            raise type(e)(f"{where}: {e} (inputs: {shapes})") from None
        return self._append(
            op=op,
            inputs=tuple(v.id for v in inputs),
            attrs=full_attrs,
            shape=tuple(out.shape),
            dtype=out.dtype,
            name=self.current_scope,
        )

    def build(
        self,
        outputs: Sequence[Value],
        updates: Sequence[tuple[Value, Value]] = (),
        output_names: Sequence[str] | None = None,
        name: str | None = None,
    ) -> Graph:
        """Freeze into a Graph; its inputs are the input leaves in creation order."""
        for state, value in updates:
            if state.node.role not in ("param", "state"):
                raise NumbagradError(f"only param/state leaves can be updated, not %{state.id}")
            if (state.shape, state.dtype) != (value.shape, value.dtype):
                raise ShapeError(
                    f"update of {state.node.name!r}: value "
                    f"{format_type(value.shape, value.dtype)} does not match "
                    f"{format_type(state.shape, state.dtype)}"
                )
        return Graph(
            self._nodes,
            inputs=[n.id for n in self._nodes if n.role == "input"],
            outputs=[v.id for v in outputs],
            updates=[(s.id, v.id) for s, v in updates],
            output_names=output_names,
            name=self.name if name is None else name,
        )


class Value:
    """A symbolic tensor: one node of a graph under construction."""

    __slots__ = ("builder", "id")
    __array_priority__ = 1000  # make ``ndarray * value`` defer to Value.__rmul__

    def __init__(self, builder: Builder, node_id: int) -> None:
        self.builder = builder
        self.id = node_id

    @property
    def node(self) -> Node:
        return self.builder[self.id]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.shape

    @property
    def dtype(self) -> str:
        return self.node.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    def __repr__(self) -> str:
        return f"Tensor(%{self.id}: {format_type(self.shape, self.dtype)})"

    def __bool__(self) -> bool:
        raise TypeError("a traced tensor has no truth value: its data exists only when compiled")

    def __iter__(self):
        raise TypeError("a traced tensor is not iterable: index it (x[0]) or split it (F.split)")

    # Operators and methods route through the op API (imported lazily: ops import this module).
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().div(self, other)

    def __rtruediv__(self, other):
        return _ops().div(other, self)

    def __neg__(self):
        return _ops().neg(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Value) or hasattr(exponent, "__graph_value__"):
            raise NumbagradError(
                "x ** y takes a constant (number) exponent; use F.exp(y * F.log(x))"
            )
        return _ops().pow(self, exponent)

    def __abs__(self):
        return _ops().abs(self)

    # Comparisons give bool tensors (for F.select, or .astype as masks); == and != stay
    # Python's identity, so Values remain hashable.
    def __lt__(self, other):
        return _ops().greater(other, self)

    def __le__(self, other):
        return _ops().greater_equal(other, self)

    def __gt__(self, other):
        return _ops().greater(self, other)

    def __ge__(self, other):
        return _ops().greater_equal(self, other)

    def __getitem__(self, key):
        return _ops().getitem(self, key)

    @property
    def T(self):  # noqa: N802 - numpy's and torch's name
        """All axes reversed (numpy's ``.T``)."""
        return _ops().transpose(self)

    def astype(self, dtype: str):
        return _ops().cast(self, dtype)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def reshape(self, *shape):
        return _ops().reshape(self, shape[0] if len(shape) == 1 else shape)

    def flatten(self, start_dim: int = 0):
        return _ops().flatten(self, start_dim)

    def transpose(self, *perm):
        return _ops().transpose(self, perm[0] if len(perm) == 1 else perm)

    def sum(self, axis=None, keepdims: bool = False):
        return _ops().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return _ops().mean(self, axis, keepdims)

    def exp(self):
        return _ops().exp(self)

    def log(self):
        return _ops().log(self)

    def relu(self):
        return _ops().relu(self)

    def tanh(self):
        return _ops().tanh(self)

    def sigmoid(self):
        return _ops().sigmoid(self)


def _ops():
    from . import ops

    return ops


def as_value(obj: Any, like: Value | None = None) -> Value:
    """Turn an operand into a Value: Values pass, objects with ``__graph_value__`` (engine
    parameters) convert themselves, numbers and arrays become constants of ``like``'s dtype."""
    if isinstance(obj, Value):
        return obj
    convert = getattr(obj, "__graph_value__", None)
    if convert is not None:
        return convert()
    if like is None:
        raise NumbagradError(f"cannot use {type(obj).__name__} as a graph operand here")
    return like.builder.const(obj, like.dtype)


def as_values(*objs: Any) -> list[Value]:
    """Convert operands together: constants take the dtype of the first symbolic operand."""
    symbolic = [as_value(o) for o in objs if isinstance(o, Value) or hasattr(o, "__graph_value__")]
    if not symbolic:
        raise NumbagradError("an op needs at least one traced tensor among its operands")
    return [as_value(o, like=symbolic[0]) for o in objs]
