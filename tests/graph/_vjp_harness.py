"""The harness of the op VJP tests (test_ops_vjp_cases.py, test_ops_vjp_sweeps.py,
test_ops_torch_reference.py): a case is ``sum(op(...) * R)`` for a fixed random ``R`` fed as an
input leaf, so every output element carries a distinct weight. The forward graph is evaluated
with the interp backend, ``numbagrad.engine.backward`` builds the backward graph, and the interp
backend evaluates it with the saved values fed in; the finite differences call the op's
``reference`` directly. Also the hypothesis settings and conv strategy shared by the sweeps.
Imported by name (tests/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from numbagrad.backends import interp
from numbagrad.engine import backward
from numbagrad.graph import Builder, Graph
from numbagrad.graph import ops as O
from numbagrad.graph.ops import get_op

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-6

# --- the harness ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One op application: ``build(*leaves)`` must emit exactly one ``op`` node.

    ``operands``: (shape, kind) per leaf. Kinds: ``f`` uniform in [-1, 1]; ``pos`` in [0.5, 2];
    ``away`` |x| in [0.2, 1.2] (keeps relu/abs/sign off their kink); ``distinct`` all values
    distinct and at least 0.01 apart (no max-pool ties, even after an eps perturbation);
    ``cls<C>`` int64 class indices below C (an ``input`` leaf; float operands are ``param``s).
    """

    id: str
    op: str
    operands: tuple[tuple[tuple[int, ...], str], ...]
    build: Callable


def make_array(shape: Sequence[int], kind: str, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(shape)
    if kind.startswith("cls"):
        return rng.integers(0, int(kind[3:]), shape).astype(np.int64)
    if kind == "f":
        return rng.uniform(-1.0, 1.0, shape)
    if kind == "pos":
        return rng.uniform(0.5, 2.0, shape)
    if kind == "prob":
        return rng.uniform(0.05, 0.95, shape)
    if kind == "away":
        return rng.uniform(0.2, 1.2, shape) * rng.choice([-1.0, 1.0], shape)
    if kind == "distinct":
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) * 0.01 - 0.005 * n).astype(np.float64)
    raise ValueError(kind)


def build_case(operands, build, name="case"):
    """The forward graph of ``sum(build(*leaves) * R)``; returns graph, leaves, op node, R leaf."""
    b = Builder(name)
    leaves = []
    for i, (shape, kind) in enumerate(operands):
        if kind.startswith("cls"):
            leaves.append(b.leaf("input", shape, "int64", f"t{i}"))
        else:
            leaves.append(b.leaf("param", shape, "float64", f"p{i}"))
    out = build(*leaves)
    r = b.leaf("input", out.shape, "float64", "R")
    loss = O.sum(O.mul(O.cast(out, "float64"), r))  # (a comparison's bool result: cast)
    return b.build([loss]), leaves, out.node, r


def forward_values(graph: Graph, feeds: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Every node's value: evaluate a copy of ``graph`` whose outputs are all its nodes."""
    everything = Graph(graph.nodes, graph.inputs, [n.id for n in graph.nodes])
    return dict(zip(everything.outputs, interp.evaluate(everything, feeds)))


def backward_feeds(fwd: Graph, bwd: Graph, values: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Feeds for the backward graph: saved values, shared params (by name), ones for dloss."""
    feeds = {}
    for leaf in bwd.leaves():
        if leaf.role == "const":
            continue
        if "saved_from" in leaf.attrs:
            src = leaf.attrs["saved_from"]
            assert fwd[src].shape == leaf.shape and fwd[src].dtype == leaf.dtype
            feeds[leaf.id] = values[src]
        elif leaf.role == "param":
            feeds[leaf.id] = values[fwd.by_name(leaf.name, role="param").id]
        elif leaf.name == "dloss":
            assert leaf.role == "input" and leaf.shape == ()
            feeds[leaf.id] = np.ones(leaf.shape)
        else:
            raise AssertionError(f"backward graph has an unexpected leaf: {leaf.format()}")
    return feeds


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of ``f`` with respect to ``x`` (perturbed in place, restored)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = f()
        x[idx] = old - eps
        minus = f()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def check_vjp(operands, build, op: str, seed: int = 0) -> Graph:
    """Build, differentiate, evaluate and compare with finite differences; return the
    backward graph."""
    rng = np.random.default_rng(seed)
    fwd, leaves, node, r = build_case(operands, build)
    assert node.op == op, f"the case emitted {node.op}, not {op}"
    arrays = {v.id: make_array(shape, kind, rng) for v, (shape, kind) in zip(leaves, operands)}
    arrays[r.id] = rng.standard_normal(r.shape)

    values = forward_values(fwd, arrays)
    opdef = get_op(node.op)

    def loss_from_reference() -> float:
        operand_values = [
            fwd[i].value if fwd[i].role == "const" else arrays[i] for i in node.inputs
        ]
        return float(np.sum(opdef.reference(*operand_values, **node.attrs) * arrays[r.id]))

    # The graph computes what the reference says.
    np.testing.assert_allclose(values[fwd.outputs[0]], loss_from_reference(), rtol=1e-12)

    bwd = backward(fwd)
    params = [v for v in leaves if v.node.role == "param"]
    assert list(bwd.output_names) == [v.node.name for v in params]
    grads = interp.evaluate(bwd, backward_feeds(fwd, bwd, values))
    for v, g in zip(params, grads):
        assert g.shape == v.shape and g.dtype == np.float64
        expected = numeric_grad(loss_from_reference, arrays[v.id])
        np.testing.assert_allclose(
            g, expected, rtol=RTOL, atol=ATOL, err_msg=f"{op}: gradient of {v.node.name}"
        )
    return bwd


def _conv(**attrs):
    return lambda x, w, b=None: O.conv2d(x, w, b, **attrs)


# --- hypothesis sweeps over conv and pooling ------------------------------------------------

SWEEP = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _window_size(draw, extent, pad):
    """An input size along one axis that the (padded) window fits."""
    return max(1, extent - 2 * pad) + draw(st.integers(0, 3))


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = _window_size(draw, dilation[0] * (kh - 1) + 1, padding[0])
    w = _window_size(draw, dilation[1] * (kw - 1) + 1, padding[1])
    n = draw(st.integers(1, 2))
    operands = [((n, cin, h, w), "f"), ((cout, cin // groups, kh, kw), "f")]
    if draw(st.booleans()):
        operands.append(((cout,), "f"))
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return operands, attrs
