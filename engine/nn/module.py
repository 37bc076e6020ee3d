"""Module and Parameter: the PyTorch-shaped containers users build models from."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np

from ...errors import NumbagradError, ShapeError
from ...graph import Value
from ..trace import current_tracer, is_tracing


class Parameter:
    """A trainable array. While tracing it stands for a ``param`` leaf of the graph; compiled
    steps update ``data`` in place, so the module always holds the trained values."""

    def __init__(self, data: np.ndarray, requires_grad: bool = True) -> None:
        self.data = np.ascontiguousarray(data)
        self.requires_grad = requires_grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> str:
        return str(self.data.dtype)

    def __graph_value__(self) -> Value:
        return current_tracer().param_value(self)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return getattr(self.__graph_value__(), name)(*args, **kwargs)

    method.__name__ = name
    return method


class Buffer:
    """A non-trainable array a module keeps in its ``state_dict`` (BatchNorm's running
    statistics). While tracing it stands for a ``state`` leaf named by its key; a layer may
    give it a new value per run with ``current_tracer().update(buffer, value)``, which the
    compiled step applies in place after the forward graph has run."""

    requires_grad = False
    shape = Parameter.shape
    dtype = Parameter.dtype

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.asarray(data, order="C")  # (ascontiguousarray would make 0-d 1-d)

    def __graph_value__(self) -> Value:
        return current_tracer().buffer_value(self)

    def __repr__(self) -> str:
        return f"Buffer(shape={self.shape}, dtype={self.dtype})"


# Inside forward(), parameters take part in arithmetic like any traced tensor.
for _name in (
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __neg__ "
    "__matmul__ __rmatmul__ __pow__ __abs__ __lt__ __le__ __gt__ __ge__ __getitem__ astype "
    "reshape flatten transpose sum mean exp log relu tanh sigmoid"
).split():
    setattr(Parameter, _name, _delegate(_name))
    setattr(Buffer, _name, _delegate(_name))
Parameter.T = Buffer.T = property(lambda self: self.__graph_value__().T)


class Module:
    """Base class of layers and models. Assigning a Parameter or Module attribute registers it;
    ``forward`` is traced, never run on data."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)
        # Compiled executables holding this module's state elsewhere (on a GPU): state_dict()
        # pulls their values first, load_state_dict() pushes new values to them after.
        object.__setattr__(self, "_state_holders", weakref.WeakSet())

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise NumbagradError(f"{type(self).__name__}.__init__ must call super().__init__()")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self.__dict__.get("_buffers", {}).pop(name, None)
        if isinstance(value, Buffer):
            self._buffers[name] = value
        elif isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        if not is_tracing():
            raise NumbagradError(
                f"{type(self).__name__} is called outside a trace; compile it first, "
                "e.g. ng.compile(model, ng.Spec(shape))"
            )
        tracer = current_tracer()
        with tracer.builder.scope(tracer.module_path(self)):
            return self.forward(*args, **kwargs)

    # --- traversal ----------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            path, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            stack[0:0] = [(f"{path}.{n}" if path else n, m) for n, m in module._modules.items()]

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Dotted names; a parameter shared by several modules is listed once (first name)."""
        seen: set[int] = set()
        for path, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def named_buffers(self) -> Iterator[tuple[str, Buffer]]:
        """Dotted names of the buffers (``bn.running_mean``), in ``named_modules`` order."""
        seen: set[int] = set()
        for path, module in self.named_modules():
            for name, b in module._buffers.items():
                if id(b) not in seen:
                    seen.add(id(b))
                    yield (f"{path}.{name}" if path else name), b

    def register_buffer(self, name: str, data: np.ndarray) -> Buffer:
        """Keep ``data`` as a buffer called ``name`` (in ``state_dict``, not trained)."""
        setattr(self, name, Buffer(data))
        return self._buffers[name]

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def children(self) -> list[Module]:
        return list(self._modules.values())

    def num_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    # --- state ----------------------------------------------------------------------------

    def _named_state(self) -> Iterator[tuple[str, Parameter | Buffer]]:
        """Parameters and buffers in PyTorch's ``state_dict`` order: per module (pre-order),
        its parameters, then its buffers."""
        params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
        for path, module in self.named_modules():
            for table, source in ((params, module._parameters), (buffers, module._buffers)):
                for name in source:
                    key = f"{path}.{name}" if path else name
                    if key in table:
                        yield key, table[key]

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of the current parameter and buffer values, keyed like PyTorch
        (``features.0.weight``, ``bn.running_mean``)."""
        self.refresh_state()
        return OrderedDict((name, p.data.copy()) for name, p in self._named_state())

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy values into the parameters and buffers in place (compiled steps keep seeing
        them)."""
        params = dict(self._named_state())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise NumbagradError(
                f"load_state_dict: missing keys {missing}, unexpected {unexpected}"
            )
        for key, value in state.items():
            if key not in params:
                continue
            value = np.asarray(value)
            if value.shape != params[key].shape:
                raise ShapeError(
                    f"load_state_dict: {key} has shape {params[key].shape}, got {value.shape}"
                )
            np.copyto(params[key].data, value, casting="same_kind")
        for holder in list(self._state_holders):
            holder.sync_bindings_to_device()

    def refresh_state(self) -> None:
        """Copy values that compiled executables hold elsewhere (a GPU) back into this
        module's arrays; ``state_dict`` and the compilers call it."""
        for holder in list(self._state_holders):
            holder.sync_bindings_to_host()

    def attach_state_holder(self, executable) -> None:
        """Keep ``state_dict``/``load_state_dict`` of this module and its submodules in step
        with ``executable`` (anything with ``sync_bindings_to_host``/``_to_device``), which
        holds their values elsewhere; it is held weakly. The compiler calls this."""
        for _, module in self.named_modules():
            module._state_holders.add(executable)

    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        body = "\n".join(
            f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()
        )
        return f"{type(self).__name__}(\n{body}\n)"
