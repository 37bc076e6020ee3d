"""Tracing: run a model's forward() once on symbolic tensors to record a static Graph."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import NumbagradError
from ..graph import Builder, Graph, Value
from .tensor import Spec

_ACTIVE: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("tracer", default=None)


class Tracer:
    """The state of one trace: the builder, parameter leaves (one per Parameter object, so
    shared parameters stay shared) and the dotted path of every module."""

    def __init__(self, builder: Builder, model: Any) -> None:
        self.builder = builder
        self._param_names = {id(p): name for name, p in model.named_parameters()}
        self._module_paths = {id(m): path for path, m in model.named_modules()}
        self._leaves: dict[int, Value] = {}

    def param_value(self, param: Any) -> Value:
        key = id(param)
        if key not in self._leaves:
            name = self._param_names.get(key)
            if name is None:
                raise NumbagradError(
                    f"a Parameter of shape {param.shape} is used in forward() but is not "
                    "registered on the traced model (assign it as a module attribute)"
                )
            self._leaves[key] = self.builder.leaf("param", param.shape, param.dtype, name)
        return self._leaves[key]

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
) -> Graph:
    """Record ``model(*inputs)`` (or ``fn(*inputs)``, which may call the model) as a Graph.

    ``specs`` give the inputs' shapes and dtypes. The outputs are whatever the call returns:
    a Tensor, or a tuple/list of them. Parameters become ``param`` leaves named by their
    ``state_dict`` keys; nodes carry the dotted path of the module that emitted them.
    """
    names = list(input_names) if input_names else [f"input{i}" for i in range(len(specs))]
    if len(names) != len(specs):
        raise NumbagradError(f"trace: {len(specs)} specs but {len(names)} input names")
    builder = Builder(name or type(model).__name__)
    with _activate(Tracer(builder, model)):
        inputs = [builder.leaf("input", s.shape, s.dtype, n) for s, n in zip(specs, names)]
        result = (fn or model)(*inputs)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, out in enumerate(outputs):
        if not isinstance(out, Value):
            raise NumbagradError(
                f"trace: output {i} of the traced call is a {type(out).__name__}, not a Tensor"
            )
    return builder.build(outputs)
