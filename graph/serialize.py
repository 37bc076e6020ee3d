"""A graph as JSON-ready data plus arrays (no pickle): what ``numbagrad.load`` reads back.

Attributes are numbers, strings, booleans, None and (nested) tuples; tuples become JSON lists
and come back as tuples, so a loaded graph's nodes equal the saved ones. Derived attributes
(``OpDef.derived``: a fused node's ``scalar``, the kernel expression) are not stored; loading
computes them again. Constant leaves' values travel separately, as arrays keyed ``const<id>``.

Loading trusts nothing in the data (a file may be corrupted, or written by someone hostile):
every node is rebuilt through the op registry as the graph builder builds it — a known op and
its arity, every attribute of the type the op declares, through the op's ``make_attrs`` and
unchanged by it, the output type inferred again from the inputs and equal to the stored one —
and the graph's inputs, outputs and updates must name nodes of the right kind and type. Any
failure is a ``SavedModelError`` naming the node (``forward graph %12 max_pool2d
'features.2': ...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import NumbagradError, OpError
from .ir import DTYPES, ROLES, Graph, Node, format_type
from .ops import OpDef, TensorType, get_op
from .untrusted import (
    MAX_INT,
    ArrayStore,
    attr_value,
    describe,
    fields,
    integer,
    items,
    refuse,
    shape,
    string,
    word,
)

GRAPH_KEYS = ("name", "nodes", "inputs", "outputs", "output_names", "updates")
NODE_KEYS = ("id", "op", "inputs", "attrs", "shape", "dtype", "name", "role")
SAVED_FROM = "saved_from"
"""The one attribute a leaf may carry: a backward graph's input that is forward node %id."""


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        return [_encode(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise NumbagradError(f"{where}: cannot save an attribute of type {type(value).__name__}")


def const_key(node_id: int, prefix: str = "") -> str:
    return f"{prefix}const{node_id}"


def graph_to_dict(graph: Graph, prefix: str = "") -> tuple[dict, dict[str, np.ndarray]]:
    """``graph`` as JSON-ready data and the constant leaves' values (``<prefix>const<id>``:
    a prefix keeps two graphs' constants apart in one file)."""
    nodes, arrays = [], {}
    for n in graph.nodes:
        where = f"saving {n.format()}"
        derived = () if n.is_leaf else get_op(n.op).derived
        nodes.append(
            {
                "id": n.id,
                "op": n.op,
                "inputs": list(n.inputs),
                "attrs": {k: _encode(v, where) for k, v in n.attrs.items() if k not in derived},
                "shape": list(n.shape),
                "dtype": n.dtype,
                "name": n.name,
                "role": n.role,
            }
        )
        if n.role == "const":
            arrays[const_key(n.id, prefix)] = n.value
    data = {
        "name": graph.name,
        "nodes": nodes,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "output_names": list(graph.output_names),
        "updates": [list(pair) for pair in graph.updates],
    }
    return data, arrays


def graph_from_dict(
    data: Any,
    arrays: Mapping[str, np.ndarray] | ArrayStore,
    prefix: str = "",
    label: str = "graph",
    saved_inputs: bool = False,
) -> Graph:
    """The graph ``graph_to_dict`` saved, verified node by node (see the module docstring);
    ``arrays`` maps ``<prefix>const<id>`` to values. ``saved_inputs``: input leaves may carry
    ``saved_from`` (a backward graph). ``label`` names the graph in errors."""
    store = arrays if isinstance(arrays, ArrayStore) else ArrayStore(arrays)
    data = fields(data, GRAPH_KEYS, label)
    if not isinstance(data["nodes"], list):
        refuse(f"{label} nodes", "expected a list of nodes")
    nodes: dict[int, Node] = {}
    for k, d in enumerate(data["nodes"]):
        node = _node(d, nodes, store, prefix, label, f"{label} node {k}", saved_inputs)
        nodes[node.id] = node
    inputs = _ids(data["inputs"], nodes, f"{label} inputs")
    if inputs != [n.id for n in nodes.values() if n.role == "input"]:
        refuse(f"{label} inputs", "they must be the graph's input leaves, in order")
    outputs = _ids(data["outputs"], nodes, f"{label} outputs")
    names = items(data["output_names"], f"{label} output_names", string)
    if len(names) != len(outputs):
        refuse(f"{label} output_names", f"{len(names)} names for {len(outputs)} outputs")
    updates = _updates(data["updates"], nodes, f"{label} updates")
    name = string(data["name"], f"{label} name")
    return Graph(nodes.values(), inputs, outputs, updates, names, name)


def _ids(value: Any, nodes: dict[int, Node], where: str) -> list[int]:
    def node_id(v: Any, w: str) -> int:
        if integer(v, w, 0, MAX_INT) not in nodes:
            refuse(w, f"%{v} is not a node of the graph")
        return v

    return items(value, where, node_id)


def _updates(value: Any, nodes: dict[int, Node], where: str) -> list[tuple[int, int]]:
    pairs = items(value, where, lambda v, w: tuple(_ids(v, nodes, w)))
    for k, pair in enumerate(pairs):
        if len(pair) != 2:
            refuse(f"{where}[{k}]", "an update is a pair [state id, value id]")
        state, value_node = nodes[pair[0]], nodes[pair[1]]
        if state.role not in ("param", "state"):
            refuse(f"{where}[{k}]", f"%{state.id} is not a param or state leaf")
        if (state.shape, state.dtype) != (value_node.shape, value_node.dtype):
            refuse(f"{where}[{k}]", f"%{state.id} and its new value %{value_node.id} differ")
    states = [s for s, _ in pairs]
    if len(set(states)) != len(states):
        refuse(where, "a state leaf is updated twice")
    return pairs


def describe_node(label: str, node: Node) -> str:
    """``forward graph %12 max_pool2d 'features.2'``: a node as errors name it."""
    return f"{label} %{node.id} {word(node.role or node.op)} {node.name!r}"


def _node(d, nodes, store: ArrayStore, prefix, label, where, saved_inputs) -> Node:
    d = fields(d, NODE_KEYS, where)
    node_id = integer(d["id"], f"{where} id")
    op, name = string(d["op"], f"{where} op"), string(d["name"], f"{where} name")
    role = None if d["role"] is None else string(d["role"], f"{where} role", ROLES)
    where = f"{label} %{node_id} {word(role or op)} {name!r}"
    if node_id in nodes:
        refuse(where, f"the id %{node_id} is used twice")
    dtype = string(d["dtype"], f"{where} dtype", DTYPES)
    out_shape = shape(d["shape"], f"{where} shape")
    inputs = items(d["inputs"], f"{where} inputs", integer)
    missing = [i for i in inputs if i not in nodes]
    if missing:
        refuse(where, f"it reads %{missing[0]}, which is not an earlier node of the graph")
    if not isinstance(d["attrs"], dict):
        refuse(f"{where} attrs", "expected a JSON object")
    attrs = {
        string(k, f"{where} attribute name"): attr_value(v, f"{where} attribute {k!r}")
        for k, v in d["attrs"].items()
    }
    node = Node(node_id, op, tuple(inputs), {}, out_shape, dtype, name)
    if role is not None:
        return _leaf(node, role, attrs, store, prefix, where, saved_inputs)
    types = [TensorType(nodes[i].shape, nodes[i].dtype) for i in inputs]
    return dataclasses.replace(node, attrs=_op_attrs(node, types, attrs, where))


def _leaf(node: Node, role, attrs, store: ArrayStore, prefix, where, saved_inputs) -> Node:
    if node.op != "leaf" or node.inputs:
        refuse(where, f"a {role} leaf has op 'leaf' and no inputs")
    allowed = (SAVED_FROM,) if saved_inputs and role == "input" else ()
    unknown = [k for k in attrs if k not in allowed]
    if unknown:
        refuse(where, f"this {role} leaf has no attribute {unknown[0]!r}")
    if SAVED_FROM in attrs:
        integer(attrs[SAVED_FROM], f"{where} attribute {SAVED_FROM!r}")
    value = None
    if role == "const":
        value = store.take(const_key(node.id, prefix), node.shape, node.dtype, where)
        value.setflags(write=False)
    return dataclasses.replace(node, attrs=attrs, role=role, value=value)


def _op_attrs(node: Node, types: list[TensorType], attrs: dict, where: str) -> dict[str, Any]:
    """``attrs`` checked and normalized by the op (derived ones computed), after checking that
    the op exists, takes this many inputs and gives the stored output type."""
    try:
        opdef = get_op(node.op)
    except OpError:
        refuse(where, f"{describe(node.op)} is not an op this numbagrad knows")
    lo, hi = opdef.arity
    if not lo <= len(types) <= hi:
        refuse(where, f"{node.op} takes {lo}..{hi} inputs, not {len(types)}")
    full = _canonical(opdef, attrs, where)
    try:
        out = opdef.infer(types, full)
    except Exception as e:  # noqa: BLE001 - any failure means the file describes no valid node
        ins = ", ".join(format_type(*t) for t in types)
        refuse(where, f"its inputs ({ins}) do not fit its attributes ({_reason(e)})")
    if (tuple(out.shape), out.dtype) != (node.shape, node.dtype):
        stored, inferred = format_type(node.shape, node.dtype), format_type(*out)
        refuse(where, f"it is stored as {stored}, but its inputs give {inferred}")
    return full


def _canonical(opdef: OpDef, attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """Every stored attribute of ``opdef`` (no more, no fewer, none derived), of the type
    its default has, and a fixed point of ``make_attrs``; returns make_attrs' result."""
    derived = [k for k in opdef.derived if k in attrs]
    if derived:
        refuse(where, f"attribute {derived[0]!r} is computed at load and must not be stored")
    expected = [k for k in opdef.attrs if k not in opdef.derived]
    unknown = [k for k in attrs if k not in expected]
    if unknown:
        refuse(where, f"{opdef.name} has no attribute {unknown[0]!r}")
    missing = [k for k in expected if k not in attrs]
    if missing:
        refuse(where, f"attribute {missing[0]!r} is missing")
    for key, value in attrs.items():
        if not _kind_fits(key, value, opdef.attrs[key]):
            refuse(where, f"attribute {key}={describe(value)} is not of the type it takes")
    try:
        full = opdef.make_attrs(attrs)
    except Exception as e:  # noqa: BLE001 - any failure means the file describes no valid node
        refuse(where, f"its attributes are refused ({_reason(e)})")
    for key, value in attrs.items():
        if not _same(value, full[key]):
            refuse(where, f"attribute {key}={describe(value)} is not its canonical form")
    return full


def _kind_fits(key: str, value: Any, default: Any) -> bool:
    """``value`` has the type of the op's ``default`` for it: tuples of ints for tuples (a
    fused ``body`` excepted: its normalize checks it), anything for a None default (the op
    checks those)."""
    if default is None or key == "body":
        return True
    if isinstance(default, tuple):
        return isinstance(value, tuple) and all(type(v) is int for v in value)
    return type(value) is type(default)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, all the way down (``1 != 1.0 != True`` here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _reason(e: Exception) -> str:
    text = str(e) if isinstance(e, NumbagradError) else f"{type(e).__name__}: {e}"
    return text if len(text) <= 300 else f"{text[:297]}..."
