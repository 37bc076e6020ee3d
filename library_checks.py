"""Checks for ops and layers of your own: ``numbagrad.library.opcheck`` (a custom op's shape
rule, kernels, template and VJP against its reference, and a save/load round trip) and
``numbagrad.gradcheck`` (any function of numbagrad ops, or a layer: gradients against central
finite differences in float64)."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .backends import get_backend
from .engine.autodiff import SEED_NAME, build_backward
from .engine.nn import Module, Parameter
from .engine.tensor import Spec
from .engine.trace import trace
from .errors import BackendError, GradCheckError, OpCheckError, OpError
from .graph import Builder, Graph
from .graph.ir import format_type
from .graph.ops import TensorType, cast, neg
from .graph.ops import sum as graph_sum
from .graph.passes import fuse_elementwise
from .library import CustomOp, _Definition, defined
from .library_defs import NON_FINITE

# --- opcheck ----------------------------------------------------------------------------------


def opcheck(op, *samples, **attrs) -> list[str]:
    """Check the custom op (or custom_vjp function) ``op`` on the sample input arrays with
    ``attrs``: the shape rule against the reference's output; every registered kernel, and an
    elementwise template (alone, fused with a neighbour, and on NaN/Inf inputs), against the
    reference; the VJP rule against central finite differences in float64; a save/load round
    trip. Raises ``OpCheckError`` naming the check that failed and by how much; returns the
    names of the checks that ran."""
    definition = op if isinstance(op, _Definition) else defined(op)
    if definition is None:
        raise OpError(f"opcheck takes a custom op or custom_vjp function, not {op!r}")
    arrays = [np.asarray(a) for a in samples]
    checks = []
    if isinstance(definition, CustomOp):
        expected = _reference(definition, arrays, attrs)
        _check_shape(definition, arrays, attrs, expected)
        checks.append("shape rule")
        for backend in sorted(definition.kernels):
            if _check_kernel(definition, backend, arrays, attrs, expected):
                checks.append(f"{backend} kernel")
        if definition.template:
            _check_template(definition, arrays, attrs, expected)
            checks.append("template")
    if definition.vjp_rule is not None:
        try:
            gradcheck(lambda *xs: definition(*xs, **attrs), *arrays)
        except GradCheckError as e:
            raise OpCheckError(f"opcheck {definition.name}: the VJP rule is wrong: {e}") from None
        checks.append("vjp")
    _check_round_trip(definition, arrays, attrs)
    checks.append("save/load")
    return checks


def _fail(definition, what: str) -> OpCheckError:
    return OpCheckError(f"opcheck {definition.name}: {what}")


def _reference(definition: CustomOp, arrays, attrs) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(definition.reference(*arrays, **definition.checked_attrs(attrs)))


def _check_shape(definition: CustomOp, arrays, attrs, expected: np.ndarray) -> None:
    types = [TensorType(a.shape, str(a.dtype)) for a in arrays]
    try:
        out = definition.opdef.infer(types, definition.opdef.make_attrs(attrs))
    except OpError as e:
        raise _fail(definition, str(e)) from None
    if (tuple(out.shape), out.dtype) != (expected.shape, str(expected.dtype)):
        got = format_type(expected.shape, str(expected.dtype))
        raise _fail(
            definition, f"the shape rule gives {format_type(*out)}, but the reference returns {got}"
        )


def _graph(definition, arrays, attrs, after: Callable | None = None) -> tuple[Graph, list]:
    b = Builder(definition.name)
    leaves = [b.leaf("input", a.shape, str(a.dtype), f"x{i}") for i, a in enumerate(arrays)]
    out = definition(*leaves, **attrs)
    return b.build([after(out) if after else out]), leaves


def _run(backend: str, graph: Graph, leaves, arrays) -> np.ndarray:
    exe = get_backend(backend).compile(graph)
    for v, a in zip(leaves, arrays):
        exe.set_input(v.id, a)
    with np.errstate(all="ignore"):
        exe.run()
    return exe.read(graph.outputs[0])


def _compare(definition, what: str, got: np.ndarray, expected: np.ndarray) -> None:
    if got.shape != expected.shape or got.dtype != expected.dtype:
        shapes = (
            format_type(got.shape, str(got.dtype)),
            format_type(expected.shape, str(expected.dtype)),
        )
        raise _fail(definition, f"{what} gives {shapes[0]}, the reference {shapes[1]}")
    tol = (1e-5, 1e-6) if expected.dtype == np.float32 else (1e-7, 1e-10)
    g, e = got.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isclose(g, e, rtol=tol[0], atol=tol[1], equal_nan=True)
        diffs = np.abs(g - e)[bad & np.isfinite(g) & np.isfinite(e)]
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        by = f" by up to {diffs.max():.3g}" if diffs.size else ""
        raise _fail(
            definition,
            f"{what} differs from the reference{by} (at index {index}: {g[index]:.6g} where the "
            f"reference gives {e[index]:.6g})",
        )


def _check_kernel(definition: CustomOp, backend: str, arrays, attrs, expected) -> bool:
    try:
        get_backend(backend)
    except BackendError as e:
        warnings.warn(
            f"opcheck {definition.name}: its {backend} kernel was not run ({e})", stacklevel=3
        )
        return False
    graph, leaves = _graph(definition, arrays, attrs)
    _compare(definition, f"the {backend} kernel", _run(backend, graph, leaves, arrays), expected)
    return True


def _check_template(definition: CustomOp, arrays, attrs, expected) -> None:
    """The generated cpu kernel alone, fused into a group with a neighbour, and on inputs
    holding NaN, infinities and zeros (which it must treat as the reference does)."""
    graph, leaves = _graph(definition, arrays, attrs)
    _compare(definition, "the template", _run("cpu", graph, leaves, arrays), expected)
    graph, leaves = _graph(definition, arrays, attrs, after=neg)
    fused = fuse_elementwise(graph)
    got = -_run("cpu", fused, leaves, arrays)
    _compare(definition, "the template fused with a neighbour", got, expected)
    specials = [_with_specials(a, k) for k, a in enumerate(arrays)]
    graph, leaves = _graph(definition, specials, attrs)
    got = _run("cpu", graph, leaves, specials)
    what = "the template on NaN/Inf inputs"
    _compare(definition, what, got, _reference(definition, specials, attrs))


def _with_specials(a: np.ndarray, k: int) -> np.ndarray:
    if a.dtype.kind != "f" or a.size == 0:
        return a
    out = a.copy().reshape(-1)
    for j, value in enumerate(NON_FINITE):
        out[(j + k) % out.size :: len(NON_FINITE) + 1] = value
    return out.reshape(a.shape)


class _OpModule(Module):
    def __init__(self, definition, attrs) -> None:
        super().__init__()
        self.definition, self.attrs = definition, attrs

    def forward(self, *xs):
        return self.definition(*xs, **self.attrs)


def _check_round_trip(definition, arrays, attrs) -> None:
    from .aot import load
    from .compiler import compile as compile_model

    specs = [Spec(a.shape, str(a.dtype)) for a in arrays]
    model = compile_model(_OpModule(definition, attrs), *specs, backend="interp")
    with tempfile.TemporaryDirectory() as folder, np.errstate(all="ignore"):
        before = model(*arrays)
        after = load(model.save(Path(folder) / "op.npz"))(*arrays)
    _compare(definition, "the model after save and load", np.asarray(after), np.asarray(before))


# --- gradcheck --------------------------------------------------------------------------------


class _Arguments(Module):
    """The float arrays as float64 parameters ``x<i>`` (and the layer, if one is checked)."""

    def __init__(self, arrays, layer: Module | None) -> None:
        super().__init__()
        for i, a in enumerate(arrays):
            if a.dtype.kind == "f":
                setattr(self, f"x{i}", Parameter(a.astype(np.float64)))
        self.layer = layer


@contextmanager
def _in_float64(layer: Module | None) -> Iterator[None]:
    """The layer's float parameters and buffers as float64 copies while inside."""
    held = [] if layer is None else [*layer.parameters(), *(b for _, b in layer.named_buffers())]
    saved = [(p, p.data) for p in held if p.data.dtype.kind == "f"]
    try:
        for p, data in saved:
            p.data = data.astype(np.float64)
        yield
    finally:
        for p, data in saved:
            p.data = data


def gradcheck(
    fn: Callable | Module, *arrays, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6
) -> bool:
    """Check the gradients of ``sum(fn(*arrays) * r)`` (``r`` fixed random weights) with
    respect to every float array (and, for a layer, its parameters), computed by numbagrad's
    reverse mode in float64, against central finite differences. ``fn`` is a function of
    numbagrad ops or an ``nn.Module``; integer arrays are inputs, not differentiated. Returns
    True; raises ``GradCheckError`` naming the first gradient that differs, and by how much."""
    arrays = [np.asarray(a) for a in arrays]
    layer = fn if isinstance(fn, Module) else None
    holder = _Arguments(arrays, layer)
    with _in_float64(layer):
        graph, forward, params = _loss_graph(holder, fn, arrays)
        analytic = _analytic(graph, forward, params)

        def loss() -> float:
            forward.run()
            return float(forward.output_arrays()[0])

        for name, p in params.items():
            numeric = _numeric(loss, p.data, eps)
            _compare_grads(name, analytic[name], numeric, rtol, atol)
    return True


def _loss_graph(holder: _Arguments, fn, arrays):
    ints = [i for i, a in enumerate(arrays) if a.dtype.kind != "f"]
    specs = [Spec(arrays[i].shape, str(arrays[i].dtype)) for i in ints]

    def loss(*int_values):
        by_index = dict(zip(ints, int_values))
        values = [
            by_index[i] if i in by_index else getattr(holder, f"x{i}").__graph_value__()
            for i in range(len(arrays))
        ]
        out = (holder.layer or fn)(*values)
        r = np.random.default_rng(0).standard_normal(out.shape)
        return graph_sum(cast(out, "float64") * out.builder.const(r, "float64"))

    graph = trace(holder, *specs, fn=loss, input_names=[f"x{i}" for i in ints])
    params = {k: p for k, p in holder.named_parameters() if p.requires_grad}
    exe = get_backend("interp").compile(graph, _bindings(graph, params))
    for i, leaf in zip(ints, graph.leaves("input")):
        exe.set_input(leaf.id, arrays[i])

    return graph, exe, params


def _bindings(graph: Graph, params: dict[str, Parameter]) -> dict:
    return {
        leaf.id: params[leaf.name].data for leaf in graph.leaves("param") if leaf.name in params
    }


def _analytic(graph: Graph, forward, params: dict[str, Parameter]) -> dict[str, np.ndarray]:
    """Reverse mode's gradients: the backward graph run on the interp backend with the values
    a run of ``forward`` (fed) saved."""
    forward.run()
    builder, _, grads = build_backward(graph, wrt=list(params))
    bwd = builder.build(list(grads.values()), output_names=list(grads))
    bindings = _bindings(bwd, params)
    bindings.update(
        (n.id, forward.buffers[n.attrs["saved_from"]])
        for n in bwd.leaves("input")
        if "saved_from" in n.attrs
    )
    backward = get_backend("interp").compile(bwd, bindings)
    for n in bwd.leaves("input"):
        if n.name == SEED_NAME:
            backward.set_input(n.id, 1.0)
    backward.run()
    return {name: backward.read(o) for name, o in zip(bwd.output_names, bwd.outputs)}


def _numeric(loss: Callable[[], float], x: np.ndarray, eps: float) -> np.ndarray:
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = loss()
        x[idx] = old - eps
        minus = loss()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def _compare_grads(name: str, analytic, numeric, rtol, atol) -> None:
    bad = ~np.isclose(analytic, numeric, rtol=rtol, atol=atol)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        diff = float(np.max(np.abs(analytic - numeric)))
        raise GradCheckError(
            f"the gradient of {name} differs from central finite differences by up to "
            f"{diff:.3g} (at index {index}: {analytic[index]:.6g}, numerically "
            f"{numeric[index]:.6g})"
        )


__all__ = ["gradcheck", "opcheck"]
