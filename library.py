"""``numbagrad.library``: ops and gradients of your own, through the op registry, autodiff and
backend kernel tables that the built-in ops use (the README's "Writing your own layer").

- ``custom_op("ns::name", elementwise=None)`` decorates the op's NumPy reference, which defines
  it: its positional parameters are the inputs, its keyword-only ones (with defaults) the
  attributes. ``elementwise="{0} / (1.0 + abs({0}))"`` makes it elementwise (a template over
  the inputs ``{0}, {1}, ...`` and number attributes ``{alpha}``, from which every backend
  generates fused kernels); otherwise it is opaque and runs the kernels registered with
  ``register_kernel(backend)`` (or, with a one-time ``KernelWarning``, its reference).
- ``op.register_vjp(fn)``: ``fn(ctx, g)`` returns one gradient (a graph value) per input, or
  None for an input that needs none, built with numbagrad ops on ``ctx.input(i)``,
  ``ctx.output``, ``ctx.attrs`` (also ``ctx.shape(i)``, ``ctx.dtype(i)``, ``ctx.needs(i)``).
- ``op.register_shape(fn)``: ``fn(*TensorType, **attrs) -> TensorType`` (default: an
  elementwise op broadcasts its inputs; an opaque one has its first input's type).
- ``custom_vjp``: a function of numbagrad ops whose gradient is given by hand.
- ``opcheck`` and ``numbagrad.gradcheck`` check all of it (``library_checks.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from . import library_defs as defs
from .backends import custom_kernels
from .errors import NotDifferentiableError, OpCheckError, OpError
from .graph.builder import Builder, Value, as_value, as_values
from .graph.ops import OpDef, TensorType, get_op, register, stop_gradient
from .graph.ops.common import broadcast_shapes, same_dtype

_DEFINED: dict[str, _Definition] = {}


def _symbolic(values) -> bool:
    return any(isinstance(v, Value) or hasattr(v, "__graph_value__") for v in values)


class _Definition:
    """What custom ops and custom_vjp functions share: the registered OpDef, its attributes,
    its VJP rule, and (re-)registration by name."""

    category = "opaque"
    template: str | None = None
    literal_attrs: frozenset[str] = frozenset()  # written into the template: finite numbers

    def _define(self, name: str, fn: Callable, replace: bool, extra_inputs: int = 0) -> None:
        self.name = defs.check_name(name)
        self.inputs, self.attrs = defs.signature(fn, name)
        self.module = getattr(fn, "__module__", None) or "__main__"
        self.__doc__, self.__wrapped__ = fn.__doc__, fn
        self.vjp_rule: Callable | None = None
        self.opdef = OpDef(
            name=name,
            arity=(self.inputs + extra_inputs,) * 2,
            infer=self._infer,
            reference=self._reference,
            category=self.category,
            attrs=dict(self.attrs),
            normalize=self._normalize,
            scalar=self.template,
            doc=fn.__doc__ or "",
            origin=self.module,
        )
        known = _DEFINED.get(name)
        if known is None:
            try:
                get_op(name)
            except OpError:
                pass
            else:
                raise OpError(f"an op named {name!r} is already registered")
        elif not replace and known.base_fingerprint() != self.base_fingerprint():
            raise OpError(
                f"an op named {name!r} is already registered (defined in module {known.module}); "
                "pass replace=True to replace it"
            )
        custom_kernels.drop(name)
        register(self.opdef, replace=True)
        _DEFINED[name] = self

    def _normalize(self, attrs: dict[str, Any]) -> dict[str, Any]:
        literal = self.literal_attrs
        return {k: defs.attr_value(k, v, self.attrs[k], k in literal) for k, v in attrs.items()}

    def checked_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """``attrs`` with the defaults filled in, validated (an error names the op)."""
        try:
            return self.opdef.make_attrs(attrs)
        except OpError as e:
            raise OpError(f"{self.name}: {e}") from None

    def register_vjp(self, fn: Callable | None = None, *, replace: bool = False):
        """Decorator: ``fn(ctx, g) -> [gradient or None per input]``; a second, different rule
        is refused unless ``replace``."""
        if fn is None:
            return lambda f: self.register_vjp(f, replace=replace)
        if (
            self.vjp_rule is not None
            and not replace
            and defs.source(fn) != defs.source(self.vjp_rule)
        ):
            raise OpError(f"{self.name} already has a VJP rule; pass replace=True to replace it")
        self.vjp_rule = fn
        self._update(vjp=self._vjp)
        return fn

    def _vjp(self, ctx, g):
        return self.vjp_rule(ctx, g)

    def _update(self, **changes: Any) -> None:
        self.opdef = dataclasses.replace(self.opdef, **changes)
        register(self.opdef, replace=True)

    def base_fingerprint(self) -> str:
        """The definition proper (re-running the same definition is not a conflict)."""
        parts = (self.name, self.category, self.inputs, sorted(self.attrs.items()), self.template)
        return defs.fingerprint(*parts, self.module, defs.source(self.__wrapped__))

    def fingerprint(self) -> str:
        """The whole definition: what a saved model records and ``numbagrad.load`` compares."""
        return defs.fingerprint(self.base_fingerprint(), defs.source(self.vjp_rule))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} from {self.module}>"


class CustomOp(_Definition):
    """An op made by ``custom_op``: called on traced tensors it emits a graph node, on arrays
    it runs the reference."""

    def __init__(self, name: str, reference: Callable, elementwise: str | None, replace: bool):
        inputs, attrs = defs.signature(reference, name)
        if elementwise is not None:
            self.category = "elementwise"
            self.template, named = defs.template(elementwise, name, inputs, attrs)
            self.literal_attrs = frozenset(named)
        self.reference = reference
        self.shape_rule: Callable | None = None
        self.kernels: dict[str, Callable] = {}
        self._define(name, reference, replace)

    def _reference(self, *arrays, **attrs):
        return self.reference(*arrays, **attrs)

    def _infer(self, types, attrs) -> TensorType:
        if self.shape_rule is not None:
            return defs.checked_type(self.shape_rule(*types, **attrs))
        if self.category == "elementwise":
            return TensorType(broadcast_shapes(*(t.shape for t in types)), same_dtype(types))
        return types[0]

    def __call__(self, *inputs, **attrs):
        if len(inputs) != self.inputs:
            raise OpError(f"{self.name} takes {self.inputs} inputs, got {len(inputs)}")
        if _symbolic(inputs):
            values = as_values(*inputs)
            return values[0].builder.emit(self.name, values, **attrs)
        return self.reference(*inputs, **self.checked_attrs(attrs))

    def register_shape(self, fn: Callable) -> Callable:
        """Decorator: ``fn(*input_types, **attrs) -> TensorType`` (checked each time it runs)."""
        self.shape_rule = fn
        return fn

    def register_kernel(self, backend: str, *, replace: bool = False) -> Callable:
        """Decorator: a kernel ``kernel(*inputs, out, *attributes)`` for ``backend`` ("cpu": a
        ``numba.njit`` function; "cuda": a ``numba.cuda.jit`` kernel launched over at least
        ``out.size`` threads); see ``backends/custom_kernels.py``."""

        def decorate(kernel: Callable) -> Callable:
            self._check_kernel(backend, kernel)
            known = self.kernels.get(backend)
            same = known is not None and defs.source(known) == defs.source(kernel)
            make = (
                custom_kernels.cuda_lowering if backend == "cuda" else custom_kernels.cpu_lowering
            )
            lowering = make(kernel, list(self.attrs))
            custom_kernels.register(backend, self.name, lowering, replace=replace or same)
            self.kernels[backend] = kernel
            return kernel

        return decorate

    def _check_kernel(self, backend: str, kernel: Callable) -> None:
        if self.category == "elementwise":
            raise OpError(
                f"{self.name} is elementwise: every backend generates its kernels from the template"
            )
        if backend == "cpu" and not hasattr(kernel, "py_func"):
            raise OpError(f"{self.name}: register_kernel('cpu') takes a @numba.njit function")
        if backend == "cuda" and not hasattr(kernel, "__getitem__"):
            raise OpError(f"{self.name}: register_kernel('cuda') takes a @numba.cuda.jit kernel")
        expected = self.inputs + 1 + len(self.attrs)
        count = defs.positional_count(kernel)
        if count is not None and count != expected:
            names = ", ".join([f"in{k}" for k in range(self.inputs)] + ["out", *self.attrs])
            raise OpError(
                f"{self.name}: its {backend} kernel takes {count} parameters, not ({names})"
            )

    def fingerprint(self) -> str:
        kernels = sorted((b, defs.source(k)) for b, k in self.kernels.items())
        shape = defs.source(self.shape_rule)
        return defs.fingerprint(super().fingerprint(), shape, kernels)


def custom_op(
    name: str, *, elementwise: str | None = None, replace: bool = False
) -> Callable[[Callable], CustomOp]:
    """Decorator: the op ``name`` ("namespace::name") defined by the decorated NumPy
    reference (see the module docstring). Defining a name again is refused unless the
    definition is the same (a re-run notebook cell) or ``replace``."""
    return lambda reference: CustomOp(name, reference, elementwise, replace)


class CustomVJP(_Definition):
    """A function of numbagrad ops with a hand-written gradient (``custom_vjp``). Its graph
    node reads the inputs and the function's result (computed from the inputs behind
    ``stop_gradient``), passes the result on, and differentiates by the registered rule."""

    def __init__(self, fn: Callable, name: str | None, replace: bool) -> None:
        self.fn = fn
        self._define(name or f"{fn.__module__}::{fn.__qualname__}", fn, replace, extra_inputs=1)
        for backend, lowering in _COPY_LOWERINGS.items():
            custom_kernels.register(backend, self.name, lowering)

    def _reference(self, *arrays, **attrs):
        return np.array(arrays[-1], copy=True)

    def _infer(self, types, attrs) -> TensorType:
        return types[-1]

    def _vjp(self, ctx, g):
        if ctx.needs(self.inputs):
            raise NotDifferentiableError(
                f"{self.name}: its function reads a traced value (a parameter?) that is not one "
                "of its inputs; pass it as an input so that the VJP rule gives its gradient"
            )
        grads = self.vjp_rule(ctx, g)
        if not isinstance(grads, (list, tuple)) or len(grads) != self.inputs:
            raise NotDifferentiableError(
                f"{self.name}: its VJP rule must return a list of {self.inputs} gradients (one "
                f"per input, None where none flows), not {grads!r}"
            )
        return [*grads, None]

    def __call__(self, *inputs, **attrs):
        if len(inputs) != self.inputs:
            raise OpError(f"{self.name} takes {self.inputs} inputs, got {len(inputs)}")
        full = self.checked_attrs(attrs)
        if not _symbolic(inputs):
            return evaluate(self.fn, inputs, full)
        values = as_values(*inputs)
        stopped = [stop_gradient(v) if v.dtype.startswith("float") else v for v in values]
        result = as_value(self.fn(*stopped, **full))
        return result.builder.emit(self.name, [*values, result], **attrs)


def custom_vjp(fn: Callable | None = None, *, name: str | None = None, replace: bool = False):
    """Decorator (like ``jax.custom_vjp``): ``fn``, written with numbagrad ops, whose gradient
    is the rule given with ``@fn.register_vjp``; no reference or kernel is needed. ``name``
    (default ``module::qualname``) is what saved models record."""
    if fn is None:
        return lambda f: CustomVJP(f, name, replace)
    return CustomVJP(fn, name, replace)


def evaluate(fn: Callable, arrays, attrs: dict[str, Any]) -> np.ndarray:
    """``fn`` (numbagrad ops) on NumPy arrays: traced into a graph, run on the interp
    backend."""
    from .backends import interp

    arrays = [np.asarray(a) for a in arrays]
    b = Builder("evaluate")
    leaves = [b.leaf("input", a.shape, str(a.dtype), f"x{i}") for i, a in enumerate(arrays)]
    graph = b.build([as_value(fn(*leaves, **attrs))])
    return interp.evaluate(graph, {v.id: a for v, a in zip(leaves, arrays)})[0]


def _copy_cpu(node, graph):
    return lambda inputs, out: np.copyto(out, inputs[-1])


def _copy_cuda(node, graph):
    from .backends.cuda.codegen import elementwise_launch

    copy = elementwise_launch("a0", [node.shape], node.shape)
    return lambda inputs, out: copy([inputs[-1]], out)


_COPY_LOWERINGS = {"cpu": _copy_cpu, "cuda": _copy_cuda}


def defined(name: str) -> _Definition | None:
    """The custom op or custom_vjp function registered as ``name`` (None if there is none)."""
    return _DEFINED.get(name)


from .library_checks import opcheck  # noqa: E402  (it reads the classes above)

__all__ = [
    "CustomOp",
    "CustomVJP",
    "OpCheckError",
    "TensorType",
    "custom_op",
    "custom_vjp",
    "opcheck",
]
