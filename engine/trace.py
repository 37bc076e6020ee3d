"""Tracing: run a model's forward() once on symbolic tensors to record a static Graph."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import NumbagradError
from ..graph import Builder, Graph, Value
from .tensor import Spec

STEP_COUNTER = "rng.step"
"""The name of the state leaf that counts runs of a traced graph (see Tracer.step_counter)."""

_ACTIVE: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("tracer", default=None)


class Tracer:
    """The state of one trace: the builder, parameter leaves (one per Parameter object, so
    shared parameters stay shared) and the dotted path of every module."""

    def __init__(self, builder: Builder, model: Any) -> None:
        self.builder = builder
        self._param_names = {id(p): name for name, p in model.named_parameters()}
        self._module_paths = {id(m): path for path, m in model.named_modules()}
        self._leaves: dict[int, Value] = {}
        named_buffers = getattr(model, "named_buffers", lambda: ())
        self._buffer_names = {id(b): name for name, b in named_buffers()}
        self.updates: dict[int, tuple[Value, Value]] = {}  # buffer id -> (state leaf, value)
        self.ticks: list[Any] = []  # step counters: buffers the compiled step increments
        self._step: Value | None = None  # see step_counter

    def _leaf(self, array: Any, names: dict[int, str], role: str, kind: str) -> Value:
        """The one leaf of ``role`` standing for a registered Parameter or Buffer object."""
        key = id(array)
        if key not in self._leaves:
            name = names.get(key)
            if name is None:
                raise NumbagradError(
                    f"a {kind} of shape {array.shape} is used in forward() but is not "
                    "registered on the traced model (assign it as a module attribute)"
                )
            self._leaves[key] = self.builder.leaf(role, array.shape, array.dtype, name)
        return self._leaves[key]

    def param_value(self, param: Any) -> Value:
        return self._leaf(param, self._param_names, "param", "Parameter")

    def buffer_value(self, buffer: Any) -> Value:
        """The ``state`` leaf standing for a module buffer, named by its state_dict key."""
        return self._leaf(buffer, self._buffer_names, "state", "Buffer")

    def update(self, buffer: Any, value: Value) -> None:
        """After each run of the traced graph, ``buffer`` takes ``value`` (a graph update)."""
        if id(buffer) in self.updates:
            raise NumbagradError(
                f"buffer {self._buffer_names.get(id(buffer))!r} is updated twice in one "
                "forward(); a module with running statistics can be called once per trace"
            )
        self.updates[id(buffer)] = (self.buffer_value(buffer), value)

    def tick(self, buffer: Any) -> None:
        """Count one step in an integer ``buffer`` (e.g. BatchNorm's num_batches_tracked):
        integer state stays on the host, so the compiled step increments it after each run."""
        self.ticks.append(buffer)

    def step_counter(self) -> Value:
        """This run's step number (1, 2, ...): a float64 ``state`` leaf (``STEP_COUNTER``, no
        module buffer: each compiled executable counts from 0) that the graph increments after
        every run. One per trace; dropout keys its random masks by it."""
        if self._step is None:
            leaf = self.builder.leaf("state", (), "float64", STEP_COUNTER)
            self._step = leaf + 1.0
            self.updates[id(self)] = (leaf, self._step)  # keyed apart from any buffer id
        return self._step

    def module_path(self, module: Any) -> str:
        return self._module_paths.get(id(module), type(module).__name__)


def current_tracer() -> Tracer:
    tracer = _ACTIVE.get()
    if tracer is None:
        raise NumbagradError(
            "this needs a trace: call the model through ng.compile / ng.trace, "
            "not directly on arrays"
        )
    return tracer


def layer_path() -> str:
    """The dotted path of the module being traced (for error messages), or "<model>"."""
    return current_tracer().builder.current_scope or "<model>"


def is_tracing() -> bool:
    return _ACTIVE.get() is not None


@contextmanager
def _activate(tracer: Tracer):
    token = _ACTIVE.set(tracer)
    try:
        yield tracer
    finally:
        _ACTIVE.reset(token)


def trace(
    model: Any,
    *specs: Spec,
    fn: Callable[..., Any] | None = None,
    input_names: Sequence[str] | None = None,
    name: str = "",
    step_counters: list | None = None,
) -> Graph:
    """Record ``model(*inputs)`` (or ``fn(*inputs)``, which may call the model) as a Graph.

    ``specs`` give the inputs' shapes and dtypes. The outputs are whatever the call returns:
    a Tensor, or a tuple/list of them. Parameters become ``param`` leaves named by their
    ``state_dict`` keys; nodes carry the dotted path of the module that emitted them.
    Buffers become ``state`` leaves; the new values layers give them are the graph's
    ``updates``, and integer step counters they tick are appended to ``step_counters``.
    """
    names = list(input_names) if input_names else [f"input{i}" for i in range(len(specs))]
    if len(names) != len(specs):
        raise NumbagradError(f"trace: {len(specs)} specs but {len(names)} input names")
    builder = Builder(name or type(model).__name__)
    with _activate(Tracer(builder, model)) as tracer:
        inputs = [builder.leaf("input", s.shape, s.dtype, n) for s, n in zip(specs, names)]
        result = (fn or model)(*inputs)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, out in enumerate(outputs):
        if not isinstance(out, Value):
            raise NumbagradError(
                f"trace: output {i} of the traced call is a {type(out).__name__}, not a Tensor"
            )
    if step_counters is not None:
        step_counters.extend(tracer.ticks)
    return builder.build(outputs, updates=list(tracer.updates.values()))
