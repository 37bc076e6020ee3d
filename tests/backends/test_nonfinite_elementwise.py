"""NaN and +-Inf through every registered elementwise op (issue 11), walked from the op
registry so that a new op is covered without touching this file: each operand position is fed
NaN, +-Inf, +-0 and finite values; the compiled backends (cpu; cuda on the simulator) must give
what the NumPy reference gives (NaN where it has NaN, the same infinities), and the reference
must give what PyTorch gives. Gradients of the activations are checked against torch autograd.
"""

from __future__ import annotations

import itertools
import math
import re

import nonfinite_cases as nc  # first: it chooses the CUDA simulator
import numpy as np
import pytest

from numbagrad.backends import interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops import all_ops
from numbagrad.graph.passes.fuse import FUSED_OP

torch = pytest.importorskip("torch")
TF = torch.nn.functional
# Invalid operations are the point here (the simulator's kernel threads warn on each).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# Every elementwise op with a template of its own (a fused group's template is its body's).
OPS = sorted(
    n for n, op in all_ops().items() if op.category == "elementwise" and op is not FUSED_OP
)

# Attribute sets beyond the registry defaults (which every op runs with).
MORE_ATTRS = {
    "pow": [{"exponent": e} for e in (-1.5, 0.5, -0.5, 0.0, 3.0)],
    "leaky_relu": [{"negative_slope": 0.2}],
    "elu": [{"alpha": 0.7}],
    "softplus": [{"beta": 2.0, "threshold": 1.5}],
}


def _positive(v: float) -> bool:  # NaN and +Inf pass
    return not v <= 0


def _not_negative(v: float) -> bool:
    return not v < 0


def _probability(v: float) -> bool:  # open (0, 1); NaN passes
    return not (v <= 0 or v >= 1)


def _finite_probability(v: float) -> bool:  # closed [0, 1]; no NaN
    return 0 <= v <= 1


# Operands the CUDA simulator cannot take: it runs kernels as Python, whose math module raises
# where C's (the CPU and a real GPU) returns NaN or -Inf (log(0), sqrt(-1), ...).
SIM_DOMAIN = {
    "log": (_positive,),
    "sqrt": (_not_negative,),
    "pow": (_not_negative,),  # exponents +-0.5 take math.sqrt
    "xlogy": (None, _positive),
    "binary_cross_entropy": (_probability, None),
}
# Operands torch refuses: binary_cross_entropy checks 0 <= p, y <= 1 (NaN raises); batch_norm
# is fed a variance from inv_std, so inv_std must not be negative.
TORCH_DOMAIN = {
    "binary_cross_entropy": (_finite_probability, _finite_probability),
    "batch_norm": (None, None, _not_negative, None, None),
}


def _bn(x, mean, inv_std, gamma, beta):
    var = torch.where(inv_std == 0, torch.inf, 1.0 / inv_std**2)  # 1/sqrt(var) == inv_std
    return TF.batch_norm(x, mean[0], var[0], gamma[0], beta[0], training=False, eps=0.0)


# op -> torch(operands, attrs): the outside oracle for each elementwise op's reference.
TORCH = {
    "abs": lambda t, a: torch.abs(*t),
    "add": lambda t, a: torch.add(*t),
    "batch_norm": lambda t, a: _bn(*t),
    "binary_cross_entropy": lambda t, a: TF.binary_cross_entropy(*t, reduction="none"),
    "binary_cross_entropy_with_logits": lambda t, a: TF.binary_cross_entropy_with_logits(
        *t, reduction="none"
    ),
    "broadcast_to": lambda t, a: torch.broadcast_to(t[0], a["shape"]),
    "cast": lambda t, a: t[0].to(getattr(torch, a["dtype"])),
    "div": lambda t, a: torch.div(*t),
    "elu": lambda t, a: TF.elu(*t, **a),
    "equal": lambda t, a: torch.eq(*t).double(),
    "erf": lambda t, a: torch.erf(*t),
    "exp": lambda t, a: torch.exp(*t),
    "greater": lambda t, a: torch.gt(*t),
    "greater_equal": lambda t, a: torch.ge(*t),
    "leaky_relu": lambda t, a: TF.leaky_relu(*t, **a),
    "log": lambda t, a: torch.log(*t),
    "maximum": lambda t, a: torch.maximum(*t),
    "minimum": lambda t, a: torch.minimum(*t),
    "mul": lambda t, a: torch.mul(*t),
    "neg": lambda t, a: torch.neg(*t),
    "pow": lambda t, a: torch.pow(t[0], a["exponent"]),
    "prelu": lambda t, a: TF.prelu(t[0], t[1][0]),  # (1, C) with one slope per channel
    "relu": lambda t, a: torch.relu(*t),
    "relu_grad": lambda t, a: torch.ops.aten.threshold_backward(*t, 0.0),  # relu's backward
    "scaled_tanh": lambda t, a: a["amplitude"] * torch.tanh(a["slope"] * t[0]),
    "select": lambda t, a: torch.where(t[0] > 0, t[1], t[2]),
    "sigmoid": lambda t, a: torch.sigmoid(*t),
    "sign": lambda t, a: torch.sign(*t),
    "silu": lambda t, a: TF.silu(*t),
    "softplus": lambda t, a: TF.softplus(*t, **a),
    "sqrt": lambda t, a: torch.sqrt(*t),
    "stop_gradient": lambda t, a: t[0].detach(),
    "sub": lambda t, a: torch.sub(*t),
    "tanh": lambda t, a: torch.tanh(*t),
    "xlogy": lambda t, a: torch.xlogy(*t),
}


def _rows(arity: int) -> list[tuple[float, ...]]:
    """Operand tuples: every combination of VALUES, or, for many operands, every pair of
    positions through every pair of values with the other operands at 1.5."""
    if len(nc.VALUES) ** arity <= 512:
        return list(itertools.product(nc.VALUES, repeat=arity))
    rows = []
    for p, q in itertools.combinations(range(arity), 2):
        for u, v in itertools.product(nc.VALUES, repeat=2):
            row = [1.5] * arity
            row[p], row[q] = u, v
            rows.append(tuple(row))
    return rows


def _in_domain(rows, domain) -> list:
    return [r for r in rows if all(ok is None or ok(v) for ok, v in zip(domain, r))]


def _cases() -> list:
    cases = []
    for name in OPS:
        for k, attrs in enumerate([{}, *MORE_ATTRS.get(name, [])]):
            cases.append(pytest.param(name, attrs, id=f"{name}-{k}" if k else name))
    return cases


CASES = _cases()


def _graph(name: str, attrs: dict, n_rows: int, dtype: str):
    """A one-op graph over operands shaped (1, n_rows) (batch_norm's per-channel operands
    broadcast to that too) and its input leaves."""
    arity = all_ops()[name].arity[0]
    b = Builder()
    leaves = [b.leaf("input", (1, n_rows), dtype, f"in{k}") for k in range(arity)]
    if "shape" in all_ops()[name].attrs:  # broadcast_to: to the shape it already has
        attrs = {**attrs, "shape": (1, n_rows)}
    return b.build([b.emit(name, leaves, **attrs)]), leaves


def _feeds(leaves, rows, dtype) -> dict:
    columns = np.asarray(rows, dtype=dtype).T
    return {v.id: col.reshape(1, -1) for v, col in zip(leaves, columns)}


# cuda in float32 only: the simulator runs every element as a Python thread.
RUNS = [
    ("cpu", "float32"),
    ("cpu", "float64"),
    pytest.param("cuda", "float32", marks=nc.CUDA_MARKS),
]


@pytest.mark.parametrize(("backend", "dtype"), RUNS)
@pytest.mark.parametrize(("name", "attrs"), CASES)
def test_backend_matches_reference_on_nan_and_inf(backend, dtype, name, attrs):
    rows = _rows(all_ops()[name].arity[0])
    if backend == "cuda" and not nc.REAL_GPU:
        rows = _in_domain(rows, SIM_DOMAIN.get(name, ()))
    graph, leaves = _graph(name, attrs, len(rows), dtype)
    with np.errstate(all="ignore"):
        nc.run_backends(graph, _feeds(leaves, rows, dtype), backend, dtype)


@pytest.mark.torch
@pytest.mark.parametrize(("name", "attrs"), CASES)
def test_reference_matches_torch_on_nan_and_inf(name, attrs):
    rows = _in_domain(_rows(all_ops()[name].arity[0]), TORCH_DOMAIN.get(name, ()))
    graph, leaves = _graph(name, attrs, len(rows), "float64")
    feeds = _feeds(leaves, rows, "float64")
    with np.errstate(all="ignore"):
        (got,) = interp.evaluate(graph, feeds)
    attrs = dict(graph[graph.outputs[0]].attrs)  # the registry defaults filled in
    expected = TORCH[name]([torch.from_numpy(feeds[v.id]) for v in leaves], attrs)
    nc.assert_same(got, expected.numpy(), f"{name} reference vs torch", rtol=1e-12, atol=1e-12)


def test_every_elementwise_op_has_a_torch_oracle():
    assert set(OPS) - set(TORCH) == set(), "add the op's torch counterpart to TORCH"


def test_no_template_calls_max_or_min():
    """numba-cuda lowers Python's max()/min() on floats to fmax/fmin, which return the other
    operand for a NaN: a real GPU would hide it where the CPU and the simulator do not."""
    calls = re.compile(r"(?<![\w.])(max|min)\(")
    bad = [n for n in OPS if calls.search(all_ops()[n].scalar)]
    assert bad == [], f"templates calling max()/min(): {bad}"


@pytest.mark.parametrize("backend", nc.BACKENDS)
def test_fused_group_and_clamp_keep_nan(backend):
    """A fused chain (one generated kernel from the composed templates) keeps NaN and Inf, and
    clamp written as minimum(maximum(x, lo), hi) is torch.clamp."""
    x = np.array([[math.nan, math.inf, -math.inf, 0.0, 3.0, -3.0, 0.5]], np.float32)
    b = Builder()
    leaf = b.leaf("input", x.shape, "float32", "x")
    clamp = O.minimum(O.maximum(leaf, -1.0), 1.0)
    out = b.emit(
        "fused_elementwise",
        [leaf],
        body=(("maximum", (0, 0), ()), ("relu", (-1,), ()), ("mul", (-2, 0), ())),
    )
    graph = b.build([out, clamp])
    with np.errstate(all="ignore"):
        nc.run_backends(graph, {leaf.id: x}, backend, "float32")
        (_, got_clamp) = interp.evaluate(graph, {leaf.id: x})
    nc.assert_same(got_clamp, torch.clamp(torch.from_numpy(x), -1.0, 1.0), "clamp", 0, 0)


# --- gradients against torch autograd ---------------------------------------------------------

V = np.array(nc.VALUES)
A, B = (np.array(c) for c in zip(*itertools.product(nc.VALUES, repeat=2)))
GRADIENTS = [  # (id, op-API function, torch function, operands)
    ("relu", O.relu, torch.relu, [V]),
    ("leaky_relu", lambda x: O.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), [V]),
    ("softplus", lambda x: O.softplus(x, 2.0, 1.5), lambda x: TF.softplus(x, 2.0, 1.5), [V]),
    ("silu", O.silu, TF.silu, [V]),
    ("sigmoid", O.sigmoid, torch.sigmoid, [V]),
    ("tanh", O.tanh, torch.tanh, [V]),
    ("abs", O.abs, torch.abs, [V]),
    ("maximum", O.maximum, torch.maximum, [A, B]),
    ("minimum", O.minimum, torch.minimum, [A, B]),
    ("xlogy", O.xlogy, torch.xlogy, [A, B]),
    ("prelu", O.prelu, lambda x, a: TF.prelu(x, a[0]), [A[None], B[None]]),
    (
        "bce_with_logits",
        lambda x, y: O.binary_cross_entropy_with_logits(x, y, "none"),
        lambda x, y: TF.binary_cross_entropy_with_logits(x, y, reduction="none"),
        [A, B],
    ),
]


@pytest.mark.torch
@pytest.mark.parametrize("backend", ["interp", "cpu"])
@pytest.mark.parametrize(
    ("fn", "torch_fn", "operands"), [g[1:] for g in GRADIENTS], ids=[g[0] for g in GRADIENTS]
)
def test_gradients_match_torch_autograd_on_nan_and_inf(backend, fn, torch_fn, operands):
    """The VJP rules (relu_grad, maximum's tie and NaN split, ...) on NaN/Inf operands, with
    a finite upstream gradient: what reaches each operand is what torch autograd gives. (elu
    is left out: torch gives its x > 0 slope, 1, at a NaN input; the rule here gives NaN.)"""
    import _op_harness as h  # tests/engine's forward/backward harness (imports torch)

    weights = np.linspace(0.5, 1.5, operands[0].size).reshape(operands[0].shape)
    with np.errstate(all="ignore"):
        out, grads = h.forward_backward(fn, operands, weights, backend=backend)
    t_out, t_grads = h.torch_forward_backward(torch_fn, operands, weights)
    nc.assert_same(out, t_out, "forward", 1e-12, 1e-12)
    for k, (g, t) in enumerate(zip(grads, t_grads)):
        nc.assert_same(g, t, f"gradient of operand {k}", 1e-12, 1e-12)
