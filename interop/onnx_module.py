"""``ng.from_onnx``: an ONNX model as an ``nn.Module`` whose ``forward`` replays the ONNX graph
through numbagrad's ops (onnx_ops*.py), so tracing, autodiff, the passes and every backend see
the same graph a hand-written model would give.

Float initializers become parameters (0-d ones, scalars of the exported arithmetic, and those
feeding settings such as Resize's scales stay constants), named by their ONNX names: a dotted
PyTorch name (``layer1.0.conv1.weight``) nests as modules do, anything else
(``onnx::Conv_193``) becomes an identifier (``onnx__Conv_193``). A node with weights named
like a layer's (onnx_layers.py) becomes that layer. Integer initializers and Constant nodes
are constants; shape arithmetic on them folds.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..engine.nn.module import Module, Parameter
from ..engine.trace import current_tracer
from ..errors import DTypeError, NumbagradError, OnnxError, ShapeError
from . import (  # noqa: F401 - register converters
    onnx_ops_nn,
    onnx_ops_reduce,
    onnx_ops_rnn,
    onnx_ops_shape,
)
from .onnx_layers import SLOTS, make_layer
from .onnx_load import load_model, opset_version
from .onnx_ops import CONVERTERS, SETTING_INPUTS, OnnxNode

_RESERVED = set(dir(Module)) | {"training", "node", "slots"}


def from_onnx(source: str | os.PathLike | onnx.ModelProto) -> OnnxModel:
    """Import an ONNX model (a ``.onnx`` path or a ``ModelProto``) as an ``nn.Module``:
    ``ng.compile(ng.from_onnx("model.onnx"), ng.Spec((1, 3, 224, 224)))``. Unsupported
    operators are refused all at once, naming each with its node and the opset."""
    return OnnxModel(load_model(source))


class _Container(Module):
    """A module that only groups parameters and layers under a dotted path."""

    def forward(self, *args):
        raise OnnxError("an imported model's parameter group is not a layer")


def _identifier(part: str) -> str:
    name = re.sub(r"\W", "_", part) or "_"
    return f"{name}_" if name in _RESERVED else name


def _scope_path(node_name: str) -> list[str]:
    """The module path PyTorch's legacy exporter writes into a node's name: scopes joined by
    "/", each a module's name, a container's child as ``container.child``, then the op:
    ``/layer2/layer2.0/downsample/downsample.0/Conv`` -> ``layer2.0.downsample.0``; other
    names become one identifier."""
    scopes = node_name.split("/")[1:-1]
    if not node_name.startswith("/") or not scopes:
        return [_identifier(node_name)]
    path = scopes[0]
    for scope in scopes[1:]:
        head, _, last = path.rpartition(".")
        if scope.startswith(last + "."):  # the child of the container just named
            path = f"{head}.{scope}" if head else scope
        else:
            path = f"{path}.{scope}"
    return _path(path)


def _path(name: str) -> list[str]:
    """A name's module path: its dotted parts where each is a word, else one identifier."""
    parts = name.split(".")
    if all(re.fullmatch(r"\w+", p) for p in parts):
        return [_identifier(p) for p in parts]
    return [_identifier(name)]


class OnnxModel(Module):
    """An imported ONNX graph; ``forward(*inputs)`` takes the graph's inputs in order."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        super().__init__()
        graph, opset = proto.graph, opset_version(proto)
        _refuse_unsupported(graph, opset)
        if graph.sparse_initializer:
            raise OnnxError("sparse initializers are not supported; store them dense")
        arrays = {t.name: numpy_helper.to_array(t).copy() for t in graph.initializer}  # writable
        trainable = _trainable(graph, arrays)
        uses = Counter(i for n in graph.node for i in n.input if i)
        uses.update(o.name for o in graph.output)
        object.__setattr__(
            self, "input_names", [i.name for i in graph.input if i.name not in arrays]
        )
        object.__setattr__(self, "output_names", [o.name for o in graph.output])
        object.__setattr__(self, "_declared", {i.name: _declared_shape(i) for i in graph.input})
        object.__setattr__(self, "_dtypes", {i.name: _declared_dtype(i) for i in graph.input})
        object.__setattr__(self, "_consts", {n: a for n, a in arrays.items() if n not in trainable})
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_steps", [])
        for index, proto_node in enumerate(graph.node):
            node = _onnx_node(proto_node, index, opset, uses)
            layer = self._layer_for(node, proto_node, arrays, trainable, uses)
            self._steps.append((node, list(proto_node.input), list(proto_node.output), layer))
        order = {name: i for i, name in enumerate(arrays)}
        for name in sorted(trainable - self._params.keys(), key=order.__getitem__):
            if uses[name]:
                self._params[name] = self._place(_path(name), Parameter(arrays[name]))

    def declared_input_shape(self, index: int = 0) -> list[int | None]:
        """The ONNX file's shape of input ``index`` (None for a free axis, [] if undeclared)."""
        return list(self._declared[self.input_names[index]])

    def _place(self, path: list[str], item):
        """Register ``item`` (a Parameter or a layer) at the dotted ``path``; a taken path
        gets a numbered suffix."""
        owner = self
        for part in path[:-1]:
            child = owner._modules.get(part)
            if child is None:
                if part in owner.__dict__ or part in owner._parameters:
                    return self._place([_identifier("_".join(path))], item)
                child = _Container()
                setattr(owner, part, child)
            owner = child
        last, k = path[-1], 1
        while last in owner.__dict__ or last in owner._parameters or last in owner._modules:
            last, k = f"{path[-1]}_{k}", k + 1
        setattr(owner, last, item)
        return item

    def _layer_for(self, node, proto_node, arrays, trainable, uses) -> Module | None:
        """The layer module of a node with weights, or None (the node runs as a function).

        Weights named like a layer's (``conv1.weight``, ``conv1.bias``) belong to a layer at
        that path. Others (``onnx::Conv_193``) stay parameters of the model itself under their
        ONNX names (listed first, so the keys keep them) and the layer, placed where the node's
        name says (``/layer1/layer1.0/conv1/Conv``: ``layer1.0.conv1``), shares them."""
        slots = SLOTS.get(node.op)
        inputs = list(proto_node.input)
        if slots is None or len(inputs) < 2:
            return None
        named = {slot: n for slot, n in zip(slots, inputs[1:]) if n}
        if any(n not in trainable or uses[n] != 1 for n in named.values()):
            return None
        prefixes = {n[: -len(slot) - 1] for slot, n in named.items() if n.endswith("." + slot)}
        conforming = len(prefixes) == 1 and all(n.endswith("." + s) for s, n in named.items())
        shared = not conforming and node.op != "BatchNormalization"
        if shared and any(len(_path(n)) > 1 for n in named.values()):
            return None  # a nested parameter could be listed under the layer's name first
        if shared:
            weights = {slot: self._root_param(n, arrays[n]) for slot, n in named.items()}
        else:
            weights = {slot: Parameter(arrays[n]) for slot, n in named.items()}
            self._params.update((n, None) for n in named.values())  # owned by the layer
        path = _path(prefixes.pop()) if conforming else _scope_path(node.name)
        return self._place(path, make_layer(node, weights))

    def _root_param(self, name: str, array: np.ndarray) -> Parameter:
        self._params[name] = self._place(_path(name), Parameter(array))
        return self._params[name]

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise ShapeError(
                f"the imported ONNX model takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        env = dict(self._consts)
        env.update({n: p.__graph_value__() for n, p in self._params.items() if p is not None})
        for name, x in zip(self.input_names, inputs):
            _check_input(name, x, self._declared[name], self._dtypes[name])
            env[name] = x
        builder = current_tracer().builder
        for node, names_in, names_out, layer in self._steps:
            if layer is not None:
                outs = [layer(env[names_in[0]])]
            else:
                args = [env[n] if n else None for n in names_in]
                with builder.scope(node.name):
                    outs = _convert(replace(node, training=self.training), args)
            env.update((n, np.asarray(o) if isinstance(o, np.generic) else o)
                       for n, o in zip(names_out, outs))  # fmt: skip
        outputs = [env[n] for n in self.output_names]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _trainable(graph: onnx.GraphProto, arrays: dict[str, np.ndarray]) -> set[str]:
    """The float initializers that are parameters. Exporters also store constants of the
    arithmetic as initializers (an attention scale as a 1-element tensor, Resize's scales), so
    these stay constants: 0-d ones, those feeding settings (SETTING_INPUTS), and 1-element ones
    unless a layer reads them as weights (PReLU's slope) or a module name (``act.weight``)."""
    settings, weights = set(), set()
    for n in graph.node:
        settings.update(n.input[i] for i in SETTING_INPUTS.get(n.op_type, ()) if i < len(n.input))
        weights.update(n.input[1 : 1 + len(SLOTS.get(n.op_type, ()))])

    def is_parameter(name: str, a: np.ndarray) -> bool:
        if a.ndim == 0 or name in settings or not np.issubdtype(a.dtype, np.floating):
            return False
        return a.size > 1 or name in weights or len(_path(name)) > 1

    return {name for name, a in arrays.items() if is_parameter(name, a)}


def _convert(node: OnnxNode, args: list) -> list:
    """The node's converter; what a malformed node makes NumPy raise becomes an OnnxError."""
    try:
        return CONVERTERS[node.op](node, args)
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, NumbagradError):
            raise
        raise node.refuse(f"its inputs or attributes are malformed ({e})") from None


def _onnx_node(proto_node, index: int, opset: int, uses: Counter) -> OnnxNode:
    attrs = {}
    for a in proto_node.attribute:
        value = helper.get_attribute_value(a)
        attrs[a.name] = value.decode() if isinstance(value, bytes) else value
    used = tuple(bool(o) and uses[o] > 0 for o in proto_node.output)
    name = proto_node.name or f"{proto_node.op_type}_{index}"
    return OnnxNode(proto_node.op_type, name, attrs, opset, n_outputs=len(proto_node.output),
                    outputs_used=used)  # fmt: skip


def _refuse_unsupported(graph: onnx.GraphProto, opset: int) -> None:
    """One error naming every unsupported operator with (up to 3 of) its nodes."""
    nodes: dict[str, list[str]] = {}
    for i, n in enumerate(graph.node):
        if n.domain not in ("", "ai.onnx") or n.op_type not in CONVERTERS:
            op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            nodes.setdefault(op, []).append(repr(n.name or f"#{i}"))
    if nodes:
        listed = "; ".join(
            f"{op} (node{'s' if len(names) > 1 else ''} {', '.join(names[:3])}"
            f"{f' and {len(names) - 3} more' if len(names) > 3 else ''})"
            for op, names in nodes.items()
        )
        raise OnnxError(
            f"numbagrad cannot import {len(nodes)} operator(s) of this ONNX model (opset "
            f"{opset}): {listed}"
        )


def _declared_shape(info: onnx.ValueInfoProto) -> list[int | None]:
    dims = info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _declared_dtype(info: onnx.ValueInfoProto) -> str | None:
    elem = info.type.tensor_type.elem_type
    return str(helper.tensor_dtype_to_np_dtype(elem)) if elem else None


def _check_input(name: str, x, declared: list, dtype: str | None) -> None:
    """The traced input against the file's declared shape and dtype; the batch axis (0) may
    differ (a graph with the batch baked into its shape constants refuses it at that node)."""
    if dtype is not None and dtype != x.dtype:
        raise DTypeError(
            f"the imported ONNX model's input {name!r} is {dtype}, got {x.dtype}; give "
            f'ng.Spec(shape, "{dtype}")'
        )
    pairs = list(zip(declared, x.shape))[1:]
    fits = len(declared) == x.ndim and all(d is None or d == s for d, s in pairs)
    if declared and not fits:
        shown = ",".join("?" if d is None else str(d) for d in declared)
        raise ShapeError(
            f"the imported ONNX model's input {name!r} has shape [{shown}], got {list(x.shape)}"
        )
