"""NaN and +-Inf through every op case of op_cases.py (issue 11): the hand-written kernels
(pooling, conv and GEMM with their epilogues, softmax, cross-entropy, reductions, dropout, ...)
and their gradients, on cpu and cuda (simulator), must give what the NumPy reference gives
when NaN and +-Inf are planted in their float inputs. test_nonfinite_torch.py checks those
references against PyTorch."""

from __future__ import annotations

import nonfinite_cases as nc  # first: it chooses the CUDA simulator
import numpy as np
import op_cases as oc
import pytest

from numbagrad.backends import get_backend, interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O

# Invalid operations are the point here (the simulator's kernel threads warn on each).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# Small shapes: the simulator runs each GPU thread as a Python thread.
CASES = oc.op_cases(
    x4=(2, 3, 5, 4), specs={"conv2d": [((1, 2, 6, 6), "f"), ((3, 2, 3, 3), "f"), ((3,), "f")]}
)
_BY_ID = {case[0]: case for case in CASES}
RUNS = ["cpu", pytest.param("cuda", marks=nc.CUDA_MARKS)]


# On cuda, conv2d's input gradient (and conv_transpose2d, the same kernels) is an implicit GEMM
# over the zero-padded gradient: a NaN or Inf weight meets the padding's zeros there, so dL/dx
# is NaN in more places than the reference's (and torch's) scatter gives. There those cases keep
# their weights (operand 1) finite; test_a_nan_weight_is_never_lost... checks that the kernels
# lose no NaN and get every finite value right. (The cpu backend matches exactly.)
GRAD_INPUT_OPS = ("conv2d_grad_input", "conv_transpose2d")
# The simulator's Python math refuses log(0): sigmoid(+-Inf) inside bce would reach it.
SIM_NAN_ONLY = {"bce"}
# A NaN or infinity cast to an integer is undefined (C, NumPy, torch; the simulator raises):
# these cases keep their inputs finite.
UNDEFINED_FOR_NON_FINITE = {"cast_f_to_i64"}


def _grad_input_in(graph) -> bool:
    return any(n.op.startswith(GRAD_INPUT_OPS) for n in graph.ops())


def planted(specs, dtype: str, seed=0, finite=(), specials=None) -> list[np.ndarray]:
    """The op case's usual inputs with NaN, +Inf and -Inf (or ``specials``) planted in each
    float input except those at positions ``finite`` (only NaN and +Inf in a positive-only
    input: log or sqrt of it stays in Python's math domain)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for k, (shape, kind) in enumerate(specs):
        a = oc.array(shape, kind, dtype, rng)
        if kind in ("f", "pos") and a.size and k not in finite:
            flat = a.reshape(-1)
            values = specials or ((nc.NAN, nc.INF, -nc.INF) if kind == "f" else (nc.NAN, nc.INF))
            for j, v in enumerate(values):
                flat[(j * a.size) // len(values)] = v
        arrays.append(a)
    return arrays


def _forward(case, backend, nan_weights=False):
    graph, leaves = oc.build(case, "float32")
    finite = (1,) if backend == "cuda" and _grad_input_in(graph) and not nan_weights else ()
    finite = (0,) if case[0] in UNDEFINED_FOR_NON_FINITE else finite
    specials = (nc.NAN,) if backend == "cuda" and case[0] in SIM_NAN_ONLY else None
    arrays = planted(case[1], "float32", finite=finite, specials=specials)
    return graph, {v.id: a for v, a in zip(leaves, arrays)}


@pytest.mark.parametrize("backend", RUNS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference_with_nan_and_inf(backend, case):
    graph, feeds = _forward(case, backend)
    with np.errstate(all="ignore"):
        nc.run_backends(graph, feeds, backend, "float32")


def _backward(name, backend, nan_weights=False):
    forward_case, grad_ops = oc.GRAD_CASES[name]
    case = _BY_ID[forward_case]
    grad_input = set(grad_ops) & set(GRAD_INPUT_OPS)
    finite = (1,) if backend == "cuda" and grad_input and not nan_weights else ()
    with np.errstate(all="ignore"):
        bwd, feeds = oc.backward_inputs(case, planted(case[1], "float64", finite=finite))
    assert {n.op for n in bwd.ops()} >= set(grad_ops)
    return bwd, feeds


@pytest.mark.parametrize("backend", RUNS)
@pytest.mark.parametrize("name", list(oc.GRAD_CASES))
def test_backward_ops_match_reference_with_nan_and_inf(backend, name):
    bwd, feeds = _backward(name, backend)
    with np.errstate(all="ignore"):
        nc.run_backends(bwd, feeds, backend, "float64")


NAN_WEIGHT_CASES = [c[0] for c in CASES if _grad_input_in(oc.build(c, "float32")[0])]
NAN_WEIGHT_GRADS = [n for n, (_, ops) in oc.GRAD_CASES.items() if set(ops) & set(GRAD_INPUT_OPS)]


@pytest.mark.parametrize("backend", [pytest.param("cuda", marks=nc.CUDA_MARKS)])
@pytest.mark.parametrize("name", NAN_WEIGHT_CASES + NAN_WEIGHT_GRADS)
def test_a_nan_weight_is_never_lost_by_the_input_gradient(backend, name):
    """With NaN and Inf weights, conv2d's input gradient on cuda is NaN wherever the
    reference's is (it may add NaN where padding zeros meet them, see GRAD_INPUT_OPS) and
    equal to it everywhere else."""
    nc.require(backend)
    if name in oc.GRAD_CASES:
        graph, feeds, dtype = *_backward(name, backend, nan_weights=True), "float64"
    else:
        graph, feeds, dtype = *_forward(_BY_ID[name], backend, nan_weights=True), "float32"
    with np.errstate(all="ignore"):
        expected = interp.evaluate(graph, feeds)
        got, _ = oc.run(backend, graph, feeds)
    for g, e in zip(got, expected):
        assert np.isnan(g[np.isnan(e)]).all(), "a NaN of the reference is lost"
        same = ~np.isnan(g)
        nc.assert_same(g[same], e[same], name, **nc.tolerance(dtype))


# --- NaN gradients reach the inputs ----------------------------------------------------------


@pytest.mark.parametrize("backend", RUNS)
def test_relu_and_max_pool_gradients_pass_a_nan_upstream_gradient(backend):
    """An upstream NaN gradient must not be masked away where the activation is NaN: relu's
    backward and max pooling's backward send it to the NaN input, as torch does."""
    x = np.array([[[[nc.NAN, 1.0, 2.0, 3.0], [0.5, -1.0, nc.NAN, 0.0]]]], np.float32)
    g = np.full((1, 1, 1, 2), nc.NAN, np.float32)
    b = Builder()
    xv, gv = b.leaf("input", x.shape, "float32", "x"), b.leaf("input", g.shape, "float32", "g")
    y = O.relu(xv)
    pooled_grad = b.emit("max_pool2d_grad", [gv, y], kernel=2, stride=2)
    graph = b.build([O.relu_grad(pooled_grad, y)])
    with np.errstate(all="ignore"):
        (expected,) = interp.evaluate(graph, {xv.id: x, gv.id: g})
        nc.run_backends(graph, {xv.id: x, gv.id: g}, backend, "float32")
    assert np.isnan(expected[0, 0, 0, 0]) and np.isnan(expected[0, 0, 1, 2])
    assert np.count_nonzero(np.isnan(expected)) == 2  # the other taps lost both windows


# --- stale values: a NaN in one run leaves nothing behind -------------------------------------


STALE_CASES = [
    "conv2d",
    "conv2d_s2_p1_d2",
    "conv2d_epilogue_residual_relu",
    "max_pool_3s2p1",
    "softmax_axis1",
    "cross_entropy_long_rows",
    "matmul_epilogue_view_tanh",
]


@pytest.mark.parametrize("backend", RUNS)
@pytest.mark.parametrize("name", STALE_CASES)
def test_a_clean_run_after_a_nan_run_is_clean(backend, name):
    """Padded copies, workspaces and the arena are reused between runs: after a run on NaN
    and Inf inputs, a run on finite inputs gives finite values equal to the reference."""
    nc.require(backend)
    case = _BY_ID[name]
    graph, leaves = oc.build(case, "float32")
    exe = get_backend(backend).compile(graph)
    with np.errstate(all="ignore"):
        for node, a in zip(leaves, planted(case[1], "float32")):
            exe.set_input(node.id, a)
        exe.run()
    clean = oc.feeds(case[1], leaves, "float32", seed=3)
    for node_id, a in clean.items():
        exe.set_input(node_id, a)
    exe.run()
    (got,) = [a.copy() for a in exe.output_arrays()]
    (expected,) = interp.evaluate(graph, clean)
    assert np.isfinite(got).all()
    nc.assert_same(got, expected, name, **nc.tolerance("float32"))


# --- dropout keeps a dropped NaN ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["interp", *RUNS])
def test_dropout_never_hides_nan_or_inf(backend):
    """As torch (x * mask / (1 - p)): a NaN stays NaN whether kept or dropped, an Inf stays
    Inf when kept and becomes NaN when dropped; p = 1 drops everything, NaN included."""
    nc.require(backend)
    x = np.array([nc.NAN, nc.INF, -nc.INF] * 8, np.float32)
    for p in (0.5, 1.0):
        b = Builder()
        xv = b.leaf("input", x.shape, "float32", "x")
        graph = b.build([O.dropout(xv, b.const(4.0, "float64"), p=p, seed=5)])
        with np.errstate(all="ignore"):
            (got,), _ = oc.run(backend, graph, {xv.id: x})
        assert np.isnan(got[0::3]).all()
        inf = got[1::3]
        assert np.all((inf == nc.INF) | np.isnan(inf)) and np.all(
            np.isnan(got[2::3]) | (got[2::3] == -nc.INF)
        )
        if p == 1.0:
            assert np.isnan(got).all()
        else:
            assert np.isfinite(got).sum() == 0 and (~np.isnan(inf)).any() and np.isnan(inf).any()
