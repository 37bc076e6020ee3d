"""``ng.to_onnx``: a numbagrad forward graph as an ONNX model (opset 18) that ``onnx.checker``
accepts and onnxruntime runs. A module is traced in eval mode (optionally optimized first); a
compiled model exports its optimized graph, fused kernels expanded back to standard operators
(onnx_export_ops.py). Parameters and buffers become initializers named by their state_dict
keys, so ``from_onnx`` of the file gives the same keys back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..engine.nn.module import Module
from ..engine.tensor import Spec
from ..engine.trace import trace
from ..errors import OnnxError
from ..graph import Graph
from ..graph.pipeline import optimize
from .onnx_export_ops import WRITERS

OPSET = 18


class Emitter:
    """Collects ONNX nodes and initializers, naming every value uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.op, self.out_shape, self.scope = "", (), ""
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op_type: str, inputs: Sequence[str], **attrs) -> str:
        out = self.fresh(op_type.lower())
        name = f"{self.scope}/{op_type}_{self._count}" if self.scope else out
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def initializer(self, array: np.ndarray, name: str) -> str:
        """A parameter or buffer: an initializer, which from_onnx makes a parameter again."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        self.shapes[name] = tuple(array.shape)
        return name

    def constant(self, array: np.ndarray) -> str:
        """A constant: a Constant node, which from_onnx keeps constant."""
        out = self.fresh("const")
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        self.shapes[out] = tuple(array.shape)
        return out

    def scalar(self, value: float) -> str:
        return self.constant(np.array(value, np.float32 if self.dtype != "float64" else np.float64))

    def ints(self, values) -> str:
        return self.constant(np.array([int(v) for v in values], np.int64))

    def rank(self, name: str) -> int:
        return len(self.shapes[name])

    @contextmanager
    def as_op(self, op: str):
        saved, self.op = self.op, op
        try:
            yield
        finally:
            self.op = saved

    dtype = "float32"


def _graph_and_values(model_or_compiled, specs: Sequence[Spec], optimized: bool):
    """(forward graph, leaf id -> array for param and state leaves)."""
    if isinstance(model_or_compiled, Module):
        if not specs:
            raise OnnxError("to_onnx: give the input spec(s) to trace the module with")
        model = model_or_compiled
        training = {id(m): m.training for _, m in model.named_modules()}
        model.eval()
        try:
            graph = trace(model, *specs, input_names=_input_names(len(specs)))
        finally:
            for _, m in model.named_modules():
                object.__setattr__(m, "training", training[id(m)])
        if optimized:
            graph, _ = optimize(graph)
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        return graph, {
            n.id: state[n.name].data for n in graph.nodes if n.role in ("param", "state")
        }
    graph = getattr(model_or_compiled, "forward_graph", None)
    if graph is None or not hasattr(model_or_compiled, "executable"):
        raise OnnxError(
            f"to_onnx exports inference models: give an nn.Module or what ng.compile or "
            f"ng.load returns, not a {type(model_or_compiled).__name__}"
        )
    read = model_or_compiled.executable.read
    return graph, {n.id: read(n.id) for n in graph.nodes if n.role in ("param", "state")}


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


def graph_to_onnx(
    graph: Graph, values: dict[int, np.ndarray], name: str = "numbagrad"
) -> onnx.ModelProto:
    """The ONNX model of a forward ``graph``; ``values`` holds its param and state leaves."""
    em, names = Emitter(), {}
    inputs = []
    for node in graph.nodes:
        if node.role == "input":
            names[node.id] = node.name
            em.shapes[node.name] = node.shape
            inputs.append(_value_info(node.name, node.shape, node.dtype))
        elif node.role in ("param", "state"):
            names[node.id] = em.initializer(np.asarray(values[node.id]), node.name)
        elif node.role == "const":
            names[node.id] = em.constant(node.value)
        else:
            names[node.id] = _write(em, node, [names[i] for i in node.inputs])
    outputs = []
    for k, out in enumerate(graph.outputs):
        node = graph[out]
        final = f"output{k}" if len(graph.outputs) > 1 else "output"
        em.nodes.append(helper.make_node("Identity", [names[out]], [final], name=final))
        outputs.append(_value_info(final, node.shape, node.dtype))
    onnx_graph = helper.make_graph(em.nodes, name, inputs, outputs, em.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="numbagrad")  # fmt: skip
    onnx.checker.check_model(model)
    return model


def _write(em: Emitter, node, inputs: list[str]) -> str:
    writer = WRITERS.get(node.op)
    if writer is None:
        raise OnnxError(
            f"to_onnx: op {node.op} (node %{node.id} in layer {node.name or '<model>'!r}) has "
            "no ONNX equivalent in numbagrad's exporter"
        )
    em.op, em.out_shape, em.scope, em.dtype = node.op, node.shape, node.name, node.dtype
    out = writer(em, dict(node.attrs), inputs)
    em.shapes[out] = node.shape
    return out


def _value_info(name: str, shape, dtype: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape)
    )


def to_onnx(
    model_or_compiled,
    spec: Spec | Sequence[Spec] | None = None,
    path: str | os.PathLike | None = None,
    optimized: bool = False,
) -> onnx.ModelProto:
    """Export the forward graph as ONNX (opset 18) and write it to ``path`` when given.

    ``model_or_compiled``: an ``nn.Module`` (traced in eval mode on ``spec``, after the
    default passes when ``optimized``) or what ``ng.compile``/``ng.load`` return (its optimized
    graph; ``spec`` is not needed). Returns the ``ModelProto``."""
    specs = (spec,) if isinstance(spec, Spec) else tuple(spec or ())
    graph, values = _graph_and_values(model_or_compiled, specs, optimized)
    model = graph_to_onnx(graph, values, graph.name or "numbagrad")
    if path is not None:
        onnx.save(model, Path(path))
    return model
