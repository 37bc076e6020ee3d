"""The convenience chains: trace -> backward -> optimizer -> optimize -> backend, bound to a
model. Every compiled object keeps its (optimized) graphs, the pass report and a profiler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .backends import get_backend
from .backends.custom_kernels import strict_kernels
from .backends.executable import Executable, check_array
from .backends.finite import arm_finite_checks, undone_if_non_finite
from .backends.profile import KernelProfile, profile_runs
from .distributed import DataParallel, save_from_main
from .engine.autodiff import SEED_NAME, build_backward
from .engine.nn import Module
from .engine.optim import LR_NAME, Optimizer
from .engine.optimizer import host_scalar_fn
from .engine.tensor import Spec
from .engine.trace import trace
from .errors import NumbagradError, ShapeError
from .graph import Graph
from .graph.pipeline import DEFAULT_PASSES, optimize, optimize_training

Passes = Sequence[str] | None
"""Pass names in order (``graph.passes.PASSES``); None is the default pipeline."""


def _passes(passes: Passes) -> Sequence[str]:
    return DEFAULT_PASSES if passes is None else passes


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
    """Params by name, and the state leaves that stand for module buffers (BatchNorm's
    running statistics: updated in place by the forward graph's ``updates``), with the
    values any earlier compiled step holds on a GPU copied back first."""
    model.refresh_state()
    params = dict(model.named_parameters())
    bound = {leaf.id: params[leaf.name].data for leaf in graph.leaves("param")}
    buffers = dict(model.named_buffers())
    bound.update((n.id, buffers[n.name].data) for n in graph.leaves("state") if n.name in buffers)
    return bound


def _saved_bindings(backward: Graph, forward: Executable) -> dict[int, np.ndarray]:
    """Bind the backward graph's saved-value inputs to the forward executable's buffers."""
    return {
        n.id: forward.buffers[n.attrs["saved_from"]]
        for n in backward.leaves("input")
        if "saved_from" in n.attrs
    }


def _compile_forward(backend, model: Module, graph: Graph, report) -> Executable:
    """Compile an optimized forward graph with the model's parameters and buffers bound."""
    return backend.compile(graph, _param_bindings(model, graph), report.plans.get("forward"))


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
        exe.set_input(node.id, array)


class InferenceModel:
    """What ``ng.compile`` and ``ng.load`` return: ``predict(x) -> ndarray`` (a tuple for
    several outputs), with its optimized ``forward_graph`` and ``executable``."""

    forward_graph: Graph
    input_names: list[str]
    backend: str
    executable: Executable
    check_finite = False  # anomaly mode (see compile)

    def _arm_finite_checks(self, check_finite: bool | None) -> None:
        self.check_finite = arm_finite_checks(check_finite, forward=self.executable)

    def __call__(self, *inputs: np.ndarray):
        _feed(self.executable, self.input_names, inputs, "compiled model")
        self.executable.run()
        outs = [a.copy() for a in self.executable.output_arrays()]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def profile(self, *inputs: np.ndarray, n_runs: int = 20) -> KernelProfile:
        """Time every kernel over ``n_runs`` calls on ``inputs``."""
        _feed(self.executable, self.input_names, inputs, "compiled model")
        return profile_runs([self.executable], n_runs)

    def save(self, path: str | Path) -> Path:
        """Write the compiled model to one ``.npz`` file (graph and memory plan as JSON,
        parameters and constants as arrays) for ``numbagrad.load``; returns its path."""
        from .aot import save

        return save(self, path)


class CompiledModel(InferenceModel):
    """``ng.compile``: inference, traced and optimized from ``model``."""

    def __init__(
        self,
        model: Module,
        specs: Sequence[Spec],
        backend: str,
        passes: Passes = None,
        disable: Sequence[str] = (),
        dump_dir=None,
        check_finite: bool | None = None,
    ) -> None:
        names = ["input"] if len(specs) == 1 else [f"input{i}" for i in range(len(specs))]
        with _mode(model, training=False):
            self.traced_graph = trace(model, *specs, input_names=names)
        self.forward_graph, self.report = optimize(
            self.traced_graph, _passes(passes), disable=disable, dump_dir=dump_dir, label="forward"
        )
        self.input_names = names
        module = get_backend(backend)
        self.backend = module.NAME
        self.executable = _compile_forward(module, model, self.forward_graph, self.report)
        model.attach_state_holder(self.executable)  # load_state_dict() reaches a GPU copy
        self._arm_finite_checks(check_finite)


class _LossStep:
    """Shared by compile_grad and compile_training: trace ``loss(model(input), target)``,
    differentiate it with respect to the trainable parameters (``requires_grad``), let
    ``finish_backward`` complete the backward graph, optimize both graphs, compile them."""

    what = "compiled step"
    check_finite = False  # anomaly mode (see compile)

    def __init__(
        self,
        model: Module,
        loss: Callable,
        inputs: Spec,
        targets: Spec,
        backend: str,
        passes: Passes = None,
        disable: Sequence[str] = (),
        dump_dir: str | Path | None = None,
        check_finite: bool | None = None,
        memory_budget: int | str | None = None,
    ) -> None:
        self._step_counters: list = []  # integer buffers to count steps in (host side)
        with _mode(model, training=True):
            traced = trace(
                model,
                inputs,
                targets,
                fn=lambda x, y: loss(model(x), y),
                input_names=["input", "target"],
                name=f"{type(model).__name__}.loss",
                step_counters=self._step_counters,
            )
        loss_node = traced[traced.outputs[0]]
        if loss_node.shape != ():
            raise ShapeError(f"the loss must be a scalar, got shape {loss_node.shape}")
        params = dict(model.named_parameters())
        self.trainable = [
            leaf.name for leaf in traced.leaves("param") if params[leaf.name].requires_grad
        ]
        if not self.trainable:
            raise NumbagradError(
                f"{self.what}: {type(model).__name__} has no trainable parameter that "
                "forward() uses (all are unused or requires_grad=False)"
            )
        builder, values, grads = build_backward(traced, wrt=self.trainable)
        traced_backward = self.finish_backward(builder, values, grads)
        self.traced_graphs = (traced, traced_backward)
        self.forward_graph, self.backward_graph, self.report = optimize_training(
            traced, traced_backward, _passes(passes), disable, dump_dir=dump_dir,
            memory_budget=memory_budget,
        )  # fmt: skip
        self.model = model
        self.backend = get_backend(backend)
        self.forward = _compile_forward(self.backend, model, self.forward_graph, self.report)
        bindings = _param_bindings(model, self.backward_graph)
        bindings.update(_saved_bindings(self.backward_graph, self.forward))
        self.backward = self.backend.compile(  # one arena for both graphs (pipeline)
            self.backward_graph, bindings, self.report.plans.get("backward"), self.forward.arena
        )
        model.attach_state_holder(self.forward)  # on a GPU, state_dict() reads back from them
        model.attach_state_holder(self.backward)
        self._feed_seed()
        self._arm_finite_checks(check_finite)

    def _feed_seed(self) -> None:
        for seed in self.backward_graph.leaves("input"):
            if seed.name == SEED_NAME:  # absent when the loss does not depend on a parameter
                self.backward.set_input(seed.id, 1.0)

    def finish_backward(self, builder, values, grads) -> Graph:
        raise NotImplementedError

    def _arm_finite_checks(self, check_finite: bool | None) -> None:
        both = {"forward": self.forward, "backward": self.backward}
        self.check_finite = arm_finite_checks(check_finite, **both)

    def _refusable(self, step: Callable, *args):
        """``step(*args)``; in anomaly mode, a step refused by a ``NonFiniteError`` first puts
        back every value it changed (parameters, buffers, optimizer state, step counters), so
        the model stands as it did before the step."""
        if not self.check_finite:
            return step(*args)
        counters = [c.data for c in self._step_counters]
        with undone_if_non_finite((self.forward, self.backward), counters):
            return step(*args)

    def run_forward(self, x, y) -> float:
        _feed(self.forward, ["input", "target"], [x, y], self.what)
        self.forward.run()
        for counter in self._step_counters:
            counter.data += 1
        return float(self.forward.output_arrays()[0])

    def profile(self, x: np.ndarray, y: np.ndarray, n_steps: int = 20) -> KernelProfile:
        """Run ``n_steps`` steps on one batch, timing every kernel of both graphs (this
        trains: a training step's parameters move)."""
        _feed(self.forward, ["input", "target"], [x, y], self.what)
        return profile_runs([self.forward, self.backward], n_steps)


class GradFunction(_LossStep):
    """``ng.compile_grad``: ``loss, grads = fn(x, y)`` with grads keyed like ``state_dict``
    (zeros for a trainable parameter that forward() does not use)."""

    what = "compiled grad"

    def __init__(self, model: Module, *args, **options) -> None:  # _LossStep's arguments
        super().__init__(model, *args, **options)
        self._unused = {
            name: np.zeros_like(p.data)
            for name, p in model.named_parameters()
            if p.requires_grad and name not in self.trainable
        }

    def finish_backward(self, builder, values, grads) -> Graph:
        return builder.build(list(grads.values()), output_names=list(grads))

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        return self._refusable(self._grads, x, y)

    def _grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss = self.run_forward(x, y)
        self.backward.run()
        grads = self.backward.output_arrays()
        result = {k: g.copy() for k, g in zip(self.backward_graph.output_names, grads)}
        result.update((k, z.copy()) for k, z in self._unused.items())
        return loss, result


class TrainingStep(_LossStep):
    """``ng.compile_training``: ``loss = step(x, y)`` runs forward, backward and the optimizer
    update; parameters are updated in place in the model. ``step.lr`` may change any time."""

    what = "training step"
    data_parallel: DataParallel | None = None  # distributed=True (distributed.py)

    def __init__(
        self,
        model: Module,
        loss: Callable,
        optimizer: Optimizer,
        *args,
        data_parallel: DataParallel | None = None,
        **options,
    ):
        self.optimizer = optimizer  # _LossStep's arguments, with the optimizer third
        self.data_parallel = data_parallel
        if data_parallel is not None:
            data_parallel.before_compile(model)
        super().__init__(model, loss, *args, **options)
        if data_parallel is not None:
            data_parallel.after_compile(self.forward_graph, self.backward_graph)
        self.step_count = 0  # optimizer steps taken (torch's state["step"])
        self._prepare_steps(optimizer.lr)

    def _prepare_steps(self, lr: float) -> None:
        """Feed ``lr`` and the next step's host-fed scalars (Adam's bias corrections, ...), so
        profile() runs valid steps too."""
        self._lr_id = self.backward_graph.by_name(LR_NAME, role="input").id
        self.lr = lr
        feeds = ((n.id, host_scalar_fn(n.name)) for n in self.backward_graph.leaves("input"))
        self._scalar_feeds = [(node_id, fn) for node_id, fn in feeds if fn is not None]
        self._feed_step_scalars(self.step_count + 1)

    def finish_backward(self, builder, values, grads) -> Graph:
        params = {name: values.param(name) for name in grads}
        if self.data_parallel is not None:
            grads = self.data_parallel.reduce(grads)
        dtype = next(iter(params.values())).dtype
        lr = builder.leaf("input", (), dtype, LR_NAME)
        return builder.build([], updates=self.optimizer.build(builder, params, grads, lr))

    @property
    def lr(self) -> float:
        return float(self.backward.read(self._lr_id))

    @lr.setter
    def lr(self, value: float) -> None:
        self.backward.set_input(self._lr_id, value)

    @property
    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {n.name: self.backward.read(n.id) for n in self.backward_graph.leaves("state")}

    def sync(self) -> None:
        """Write the trained parameters into the model's arrays now. ``state_dict()`` does
        this by itself; a no-op on the CPU, where the model's arrays are the live ones."""
        self.backward.sync_bindings_to_host()
        self.forward.sync_bindings_to_host()  # buffers the forward graph updates

    def __call__(self, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> float:
        if lr is not None:
            self.lr = lr
        return self._refusable(self._step, x, y)

    def _step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss = self.run_forward(x, y)
        self._feed_step_scalars(self.step_count + 1)
        self.backward.run()
        self.step_count += 1  # after the run: a refused step does not count
        return loss

    def _feed_step_scalars(self, step: int) -> None:
        for node_id, fn in self._scalar_feeds:
            self.backward.set_input(node_id, fn(step))

    def save(self, path: str | Path) -> Path:
        """Write the step to one ``.npz`` file (both graphs and their memory plan as JSON;
        parameters, buffers and optimizer state as arrays; lr and the step count) for
        ``numbagrad.load``, which resumes training where this step is; returns the path."""
        from .aot import save_training

        return save_from_main(self.backward_graph, lambda: save_training(self, path))


def compile(  # noqa: A001
    model: Module,
    *inputs: Spec,
    backend: str = "cpu",
    passes: Passes = None,
    disable: Sequence[str] = (),
    dump_dir: str | Path | None = None,
    check_finite: bool | None = None,
    strict: bool = False,
) -> CompiledModel:
    """Compile ``model`` for inference on inputs of the given specs. ``passes`` (names, in
    order) replaces the default pass pipeline; ``disable`` drops passes from it by name
    (``"plan_memory"`` included); ``dump_dir`` receives the graph after every pass (text and
    Graphviz dot). ``check_finite`` switches anomaly mode on (None: on when the environment
    has ``NUMBAGRAD_CHECK_FINITE=1``): every run checks each value as it is made and raises
    ``NonFiniteError`` at the first NaN or infinity, naming the graph, op, layer, node and
    index (``backends/finite.py``); off, no check runs and none costs anything. ``strict``:
    a custom op with no kernel for ``backend`` is an error, not its reference run there."""
    with strict_kernels(strict):
        return CompiledModel(model, inputs, backend, passes, disable, dump_dir, check_finite)


def compile_grad(
    model: Module,
    loss: Callable,
    inputs: Spec,
    targets: Spec,
    backend: str = "cpu",
    passes: Passes = None,
    disable: Sequence[str] = (),
    dump_dir: str | Path | None = None,
    check_finite: bool | None = None,
    strict: bool = False,
) -> GradFunction:
    """Compile ``loss(model(x), y)`` and its gradient with respect to every trainable
    parameter. ``passes``/``disable``/``dump_dir``/``check_finite``/``strict`` as in
    ``compile``; in anomaly mode a refused call leaves the model's buffers as they were."""
    with strict_kernels(strict):
        args = (inputs, targets, backend, passes, disable, dump_dir, check_finite)
        return GradFunction(model, loss, *args)


def compile_training(
    model: Module,
    loss: Callable,
    optimizer: Optimizer,
    inputs: Spec,
    targets: Spec,
    backend: str = "cpu",
    passes: Passes = None,
    disable: Sequence[str] = (),
    dump_dir: str | Path | None = None,
    check_finite: bool | None = None,
    strict: bool = False,
    distributed: bool = False,
    bucket_mb: float = 25.0,
    memory_budget: int | str | None = None,
) -> TrainingStep:
    """Compile one optimizer step of ``loss(model(x), y)``. ``passes``/``disable``/
    ``dump_dir``/``check_finite``/``strict`` as in ``compile``; in anomaly mode a step refused
    by a ``NonFiniteError`` leaves the parameters, buffers, optimizer state and step count as
    they were before it. ``memory_budget`` (bytes, or a size such as ``"200MB"``): the
    compiler recomputes saved activations in the backward pass, at the least added FLOPs it
    finds, until the planned arena fits (``graph/remat.py``; ``step.report.recomputed`` says
    what), or raises ``MemoryBudgetError`` naming the smallest arena it can plan.
    ``distributed``: data-parallel over the processes of an MPI job (``numbagrad.distributed``):
    gradients averaged across them in buckets of about ``bucket_mb`` MB, rank 0's parameters to
    every process now, ``save`` from rank 0."""
    data_parallel = DataParallel(bucket_mb) if distributed else None
    with strict_kernels(strict):
        args = (inputs, targets, backend, passes, disable, dump_dir, check_finite, memory_budget)
        return TrainingStep(model, loss, optimizer, *args, data_parallel=data_parallel)
