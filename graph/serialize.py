"""A graph as JSON-ready data plus arrays (no pickle): what ``numbagrad.load`` reads back.

Attributes are numbers, strings, booleans, None and (nested) tuples; tuples become JSON lists
and come back as tuples, so a loaded graph's nodes equal the saved ones. Constant leaves'
values travel separately, as arrays keyed ``const<id>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import NumbagradError
from .ir import Graph, Node
from .ops import get_op


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        return [_encode(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise NumbagradError(f"{where}: cannot save an attribute of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    return tuple(_decode(v) for v in value) if isinstance(value, list) else value


def const_key(node_id: int, prefix: str = "") -> str:
    return f"{prefix}const{node_id}"


def graph_to_dict(graph: Graph, prefix: str = "") -> tuple[dict, dict[str, np.ndarray]]:
    """``graph`` as JSON-ready data and the constant leaves' values (``<prefix>const<id>``:
    a prefix keeps two graphs' constants apart in one file)."""
    nodes, arrays = [], {}
    for n in graph.nodes:
        where = f"saving {n.format()}"
        nodes.append(
            {
                "id": n.id,
                "op": n.op,
                "inputs": list(n.inputs),
                "attrs": {k: _encode(v, where) for k, v in n.attrs.items()},
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


def graph_from_dict(data: dict, arrays, prefix: str = "") -> Graph:
    """The graph ``graph_to_dict`` saved; ``arrays`` maps ``<prefix>const<id>`` to values."""
    nodes = []
    for d in data["nodes"]:
        if d["role"] is None:
            get_op(d["op"])  # an op this numbagrad does not know fails here, by name
        value = None
        if d["role"] == "const":
            value = np.array(arrays[const_key(d["id"], prefix)], dtype=d["dtype"])
            value.setflags(write=False)
        attrs = {k: _decode(v) for k, v in d["attrs"].items()}
        shape = tuple(d["shape"])
        node = Node(d["id"], d["op"], tuple(d["inputs"]), attrs, shape, d["dtype"], d["name"])
        nodes.append(dataclasses.replace(node, role=d["role"], value=value))
    return Graph(
        nodes,
        data["inputs"],
        data["outputs"],
        [tuple(pair) for pair in data["updates"]],
        data["output_names"],
        data["name"],
    )
