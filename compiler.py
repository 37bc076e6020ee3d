"""The convenience chains: trace -> backward -> optimizer -> backend, bound to a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np

from .backends import get_backend
from .backends.executable import Executable, check_array
from .engine.autodiff import SEED_NAME, build_backward
from .engine.nn import Module
from .engine.optim import LR_NAME, Optimizer
from .engine.tensor import Spec
from .engine.trace import trace
from .errors import NumbagradError, ShapeError
from .graph import Graph


@contextmanager
def _mode(model: Module, training: bool):
    """Trace in train or eval mode without changing the mode the user left the model in."""
    before = {id(m): m.training for _, m in model.named_modules()}
    model.train(training)
    try:
        yield
    finally:
        for _, m in model.named_modules():
            object.__setattr__(m, "training", before[id(m)])


def _param_bindings(model: Module, graph: Graph) -> dict[int, np.ndarray]:
    params = dict(model.named_parameters())
    return {leaf.id: params[leaf.name].data for leaf in graph.leaves("param")}


def _saved_bindings(backward: Graph, forward: Executable) -> dict[int, np.ndarray]:
    """Bind the backward graph's saved-value inputs to the forward executable's buffers."""
    return {
        n.id: forward.buffers[n.attrs["saved_from"]]
        for n in backward.leaves("input")
        if "saved_from" in n.attrs
    }


def _feed(exe: Executable, names: Sequence[str], arrays: Sequence[np.ndarray], what: str) -> None:
    """Copy user arrays into the executable's input buffers, refusing a wrong shape or dtype."""
    if len(arrays) != len(names):
        raise NumbagradError(
            f"{what} takes {len(names)} arrays ({', '.join(names)}), got {len(arrays)}"
        )
    for name, array in zip(names, arrays):
        node = exe.graph.by_name(name, role="input")
        array = np.asarray(array)
        try:
            check_array(array, node, f"{what} input")
        except ShapeError as e:
            raise ShapeError(f"{e}; compile again with a new ng.Spec for other shapes") from None
        np.copyto(exe.buffers[node.id], array)


class CompiledModel:
    """``ng.compile``: inference. ``predict(x) -> ndarray`` (a tuple for several outputs)."""

    def __init__(self, model: Module, specs: Sequence[Spec], backend: str) -> None:
        names = ["input"] if len(specs) == 1 else [f"input{i}" for i in range(len(specs))]
        with _mode(model, training=False):
            self.forward_graph = trace(model, *specs, input_names=names)
        self.input_names = names
        self.backend = get_backend(backend).NAME
        self.executable = get_backend(backend).compile(
            self.forward_graph, _param_bindings(model, self.forward_graph)
        )

    def __call__(self, *inputs: np.ndarray):
        _feed(self.executable, self.input_names, inputs, "compiled model")
        self.executable.run()
        outs = [a.copy() for a in self.executable.output_arrays()]
        return outs[0] if len(outs) == 1 else tuple(outs)


class _LossGraphs:
    """The forward graph of ``loss(model(input), target)`` and its compiled executable."""

    def __init__(self, model, loss, inputs: Spec, targets: Spec, backend: str) -> None:
        with _mode(model, training=True):
            self.forward_graph = trace(
                model,
                inputs,
                targets,
                fn=lambda x, y: loss(model(x), y),
                input_names=["input", "target"],
                name=f"{type(model).__name__}.loss",
            )
        loss_node = self.forward_graph[self.forward_graph.outputs[0]]
        if loss_node.shape != ():
            raise ShapeError(f"the loss must be a scalar, got shape {loss_node.shape}")
        self.model = model
        self.backend = get_backend(backend)
        self.forward = self.backend.compile(
            self.forward_graph, _param_bindings(model, self.forward_graph)
        )

    def compile_backward(self, backward_graph: Graph) -> Executable:
        bindings = {**_param_bindings(self.model, backward_graph)}
        bindings.update(_saved_bindings(backward_graph, self.forward))
        exe = self.backend.compile(backward_graph, bindings)
        seed = backward_graph.by_name(SEED_NAME, role="input")
        exe.buffers[seed.id][...] = 1.0
        return exe

    def run_forward(self, x, y, what: str) -> float:
        _feed(self.forward, ["input", "target"], [x, y], what)
        self.forward.run()
        return float(self.forward.output_arrays()[0])


class GradFunction(_LossGraphs):
    """``ng.compile_grad``: ``loss, grads = fn(x, y)`` with grads keyed like ``state_dict``."""

    def __init__(self, model, loss, inputs, targets, backend) -> None:
        super().__init__(model, loss, inputs, targets, backend)
        builder, _, grads = build_backward(self.forward_graph)
        self.backward_graph = builder.build(list(grads.values()), output_names=list(grads))
        self.backward = self.compile_backward(self.backward_graph)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss = self.run_forward(x, y, "compiled grad")
        self.backward.run()
        grads = self.backward.output_arrays()
        return loss, {k: g.copy() for k, g in zip(self.backward_graph.output_names, grads)}


class TrainingStep(_LossGraphs):
    """``ng.compile_training``: ``loss = step(x, y)`` runs forward, backward and the optimizer
    update; parameters are updated in place in the model. ``step.lr`` may change any time."""

    def __init__(self, model, loss, optimizer: Optimizer, inputs, targets, backend) -> None:
        super().__init__(model, loss, inputs, targets, backend)
        builder, values, grads = build_backward(self.forward_graph)
        params = {name: values.param(name) for name in grads}
        dtype = next(iter(params.values())).dtype if params else "float32"
        lr = builder.leaf("input", (), dtype, LR_NAME)
        updates = optimizer.build(builder, params, grads, lr)
        self.optimizer = optimizer
        self.backward_graph = builder.build([], updates=updates)
        self.backward = self.compile_backward(self.backward_graph)
        self._lr_buffer = self.backward.buffers[lr.id]
        self.lr = optimizer.lr

    @property
    def lr(self) -> float:
        return float(self._lr_buffer)

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr_buffer[...] = value

    @property
    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {n.name: self.backward.buffers[n.id] for n in self.backward_graph.leaves("state")}

    def __call__(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> float:
        if lr is not None:
            self.lr = lr
        loss = self.run_forward(x, y, "training step")
        self.backward.run()
        return loss


def compile(model: Module, *inputs: Spec, backend: str = "cpu") -> CompiledModel:  # noqa: A001
    """Compile ``model`` for inference on inputs of the given specs."""
    return CompiledModel(model, inputs, backend)


def compile_grad(
    model: Module, loss: Callable, inputs: Spec, targets: Spec, backend: str = "cpu"
) -> GradFunction:
    """Compile ``loss(model(x), y)`` and its gradient with respect to every parameter."""
    return GradFunction(model, loss, inputs, targets, backend)


def compile_training(
    model: Module,
    loss: Callable,
    optimizer: Optimizer,
    inputs: Spec,
    targets: Spec,
    backend: str = "cpu",
) -> TrainingStep:
    """Compile one optimizer step of ``loss(model(x), y)``."""
    return TrainingStep(model, loss, optimizer, inputs, targets, backend)
