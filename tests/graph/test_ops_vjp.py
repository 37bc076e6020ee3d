"""Every differentiable op's VJP rule against central finite differences of its NumPy reference
(float64), and every op's reference against PyTorch.

The loss of each case is ``sum(op(...) * R)`` for a fixed random ``R`` fed as an input leaf, so
every output element carries a distinct weight. The forward graph is evaluated with the interp
backend, ``numbagrad.engine.backward`` builds the backward graph, and the interp backend evaluates
it with the saved values fed in; the finite differences call the op's ``reference`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from numbagrad.backends import interp
from numbagrad.engine import backward
from numbagrad.graph import Builder, Graph
from numbagrad.graph import ops as O
from numbagrad.graph.ops import all_ops, get_op
from numbagrad.graph.passes import EPILOGUE_OPS

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-6

# Backward ops (``vjp is None``): each is emitted by a forward op's VJP rule and exercised
# through it (``test_backward_only_ops_appear_in_backward_graphs`` checks that they are).
BACKWARD_ONLY = {
    "conv2d_grad_input": "conv2d",
    "conv2d_grad_weight": "conv2d",
    "relu_grad": "relu",
    "softmax_grad": "softmax",
    "log_softmax_grad": "log_softmax",
    "cross_entropy_grad": "cross_entropy",
    "max_pool2d_grad": "max_pool2d",
    "avg_pool2d_grad": "avg_pool2d",
    "max_unpool2d_grad": "max_unpool2d",
    "upsample2d_grad": "upsample2d",
    "local_response_norm_grad": "local_response_norm",
}


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
    loss = O.sum(O.mul(out, r))
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


# --- the cases -------------------------------------------------------------------------------

X4 = (2, 3, 5, 4)


def _c(id, op, operands, build):
    return Case(id, op, tuple((tuple(s), k) for s, k in operands), build)


ELEMENTWISE_CASES = [
    _c("add_same", "add", [((2, 3), "f"), ((2, 3), "f")], O.add),
    _c("add_bcast_314_21", "add", [((3, 1, 4), "f"), ((2, 1), "f")], O.add),
    _c("add_bcast_21_314", "add", [((2, 1), "f"), ((3, 1, 4), "f")], O.add),
    _c("add_scalar_param", "add", [((2, 3), "f"), ((), "f")], O.add),
    _c("add_python_scalar", "add", [((2, 3), "f")], lambda a: a + 2.5),
    _c("add_self", "add", [((2, 3), "f")], lambda a: a + a),
    _c("sub_bcast", "sub", [((3, 1, 4), "f"), ((2, 1), "f")], O.sub),
    _c("sub_bcast_first", "sub", [((4,), "f"), ((3, 4), "f")], O.sub),
    _c("sub_scalar_param", "sub", [((), "f"), ((2, 3), "f")], O.sub),
    _c("sub_rscalar", "sub", [((2, 3), "f")], lambda a: 1.5 - a),
    _c("mul_bcast", "mul", [((3, 1, 4), "f"), ((2, 1), "f")], O.mul),
    _c("mul_scalar_param", "mul", [((), "f"), ((2, 3), "f")], O.mul),
    _c("mul_python_scalar", "mul", [((2, 3), "f")], lambda a: a * -3.0),
    _c("mul_self", "mul", [((2, 3), "f")], lambda a: a * a),
    _c("div_bcast", "div", [((3, 1, 4), "f"), ((2, 1), "pos")], O.div),
    _c("div_bcast_first", "div", [((4,), "f"), ((3, 4), "pos")], O.div),
    _c("div_scalar_param", "div", [((2, 3), "f"), ((), "pos")], O.div),
    _c("div_rscalar", "div", [((2, 3), "pos")], lambda a: 1.0 / a),
    _c("neg", "neg", [(X4, "f")], O.neg),
    _c("exp", "exp", [(X4, "f")], O.exp),
    _c("exp_0d", "exp", [((), "f")], O.exp),
    _c("log", "log", [(X4, "pos")], O.log),
    _c("sqrt", "sqrt", [(X4, "pos")], O.sqrt),
    _c("abs", "abs", [(X4, "away")], O.abs),
    _c("sign", "sign", [(X4, "away")], O.sign),
    _c("relu", "relu", [(X4, "away")], O.relu),
    _c("relu_1d", "relu", [((7,), "away")], O.relu),
    _c("tanh", "tanh", [(X4, "f")], O.tanh),
    _c("sigmoid", "sigmoid", [(X4, "f")], O.sigmoid),
    _c("broadcast_31_234", "broadcast_to", [((3, 1), "f")], lambda a: O.broadcast_to(a, (2, 3, 4))),
    _c("broadcast_0d", "broadcast_to", [((), "f")], lambda a: O.broadcast_to(a, (2, 3))),
    _c("broadcast_4_34", "broadcast_to", [((4,), "f")], lambda a: O.broadcast_to(a, (3, 4))),
    _c(
        "fused_mul_add_tanh_bcast",
        "fused_elementwise",
        [(X4, "f"), ((3, 1, 1), "f"), ((4,), "f")],
        lambda x, w, b: x.builder.emit(
            "fused_elementwise",
            [x, w, b],
            body=(("mul", (0, 1), ()), ("add", (-1, 2), ()), ("tanh", (-2,), ())),
        ),
    ),
]

REDUCE_SHAPE_CASES = [
    _c("sum_all", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a)),
    _c("sum_02", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, (0, 2))),
    _c("sum_1_keep", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, 1, keepdims=True)),
    _c("sum_all_keep", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, None, keepdims=True)),
    _c("sum_neg_axis", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, -1)),
    _c("sum_12_keep", "sum", [(X4, "f")], lambda a: O.sum(a, (1, 2), keepdims=True)),
    _c("mean_all", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a)),
    _c("mean_02", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a, (0, 2))),
    _c("mean_1_keep", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a, 1, keepdims=True)),
    _c("mean_23_keep", "mean", [(X4, "f")], lambda a: O.mean(a, (2, 3), keepdims=True)),
    _c("mean_neg_axis", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a, -2)),
    _c("reshape", "reshape", [((2, 3, 4), "f")], lambda a: O.reshape(a, (6, 4))),
    _c("reshape_infer", "reshape", [((2, 3, 4), "f")], lambda a: a.reshape(4, -1)),
    _c("reshape_flatten", "reshape", [(X4, "f")], lambda a: O.flatten(a, 1)),
    _c("transpose_201", "transpose", [((2, 3, 4), "f")], lambda a: O.transpose(a, (2, 0, 1))),
    _c("transpose_102", "transpose", [((2, 3, 4), "f")], lambda a: O.transpose(a, (1, 0, 2))),
    _c("transpose_2d_default", "transpose", [((3, 5), "f")], lambda a: O.transpose(a)),
    _c("transpose_nhwc", "transpose", [(X4, "f")], lambda a: O.transpose(a, (0, 2, 3, 1))),
]


def _matmul_cases():
    m, k, n = 3, 4, 5
    cases = []
    for batch in ((), (2,)):
        for ta in (False, True):
            for tb in (False, True):
                a = (*batch, k, m) if ta else (*batch, m, k)
                b = (*batch, n, k) if tb else (*batch, k, n)
                cases.append(
                    _c(
                        f"matmul_{len(batch) + 2}d_ta{int(ta)}_tb{int(tb)}",
                        "matmul",
                        [(a, "f"), (b, "f")],
                        lambda x, y, ta=ta, tb=tb: O.matmul(x, y, trans_a=ta, trans_b=tb),
                    )
                )
    cases.append(
        _c("matmul_self_gram", "matmul", [((3, 4), "f")], lambda x: O.matmul(x, x, False, True))
    )
    return cases


SOFTMAX_LOSS_CASES = [
    _c("softmax_last", "softmax", [((3, 5), "f")], lambda x: O.softmax(x, -1)),
    _c("softmax_axis0", "softmax", [((3, 5), "f")], lambda x: O.softmax(x, 0)),
    _c("softmax_3d_axis1", "softmax", [((2, 3, 4), "f")], lambda x: O.softmax(x, 1)),
    _c("log_softmax_last", "log_softmax", [((3, 5), "f")], lambda x: O.log_softmax(x, -1)),
    _c("log_softmax_axis0", "log_softmax", [((3, 5), "f")], lambda x: O.log_softmax(x, 0)),
    _c("log_softmax_3d_axis1", "log_softmax", [((2, 3, 4), "f")], lambda x: O.log_softmax(x, 1)),
    _c("cross_entropy", "cross_entropy", [((5, 7), "f"), ((5,), "cls7")], O.cross_entropy),
    _c("cross_entropy_n1", "cross_entropy", [((1, 3), "f"), ((1,), "cls3")], O.cross_entropy),
    _c("mse_loss", "mse_loss", [((3, 4), "f"), ((3, 4), "f")], O.mse_loss),
    _c("mse_loss_3d", "mse_loss", [((2, 3, 4), "f"), ((2, 3, 4), "f")], O.mse_loss),
]


def _conv(**attrs):
    return lambda x, w, b=None: O.conv2d(x, w, b, **attrs)


CONV_CASES = [
    _c(
        "conv_basic_bias",
        "conv2d",
        [((2, 3, 6, 5), "f"), ((4, 3, 3, 2), "f"), ((4,), "f")],
        _conv(),
    ),
    _c("conv_basic_nobias", "conv2d", [((2, 3, 6, 5), "f"), ((4, 3, 3, 2), "f")], _conv()),
    _c("conv_1x1", "conv2d", [((2, 3, 4, 4), "f"), ((5, 3, 1, 1), "f"), ((5,), "f")], _conv()),
    _c(
        "conv_stride2_pad1",
        "conv2d",
        [((1, 2, 7, 6), "f"), ((3, 2, 3, 3), "f"), ((3,), "f")],
        _conv(stride=2, padding=1),
    ),
    _c(
        "conv_dilation2",
        "conv2d",
        [((1, 2, 7, 8), "f"), ((2, 2, 2, 3), "f")],
        _conv(dilation=2),
    ),
    _c(
        "conv_groups2_bias",
        "conv2d",
        [((2, 4, 5, 5), "f"), ((6, 2, 3, 3), "f"), ((6,), "f")],
        _conv(padding=(1, 0), groups=2),
    ),
    _c(
        "conv_groups2_nobias_stride2",
        "conv2d",
        [((1, 4, 7, 6), "f"), ((4, 2, 2, 3), "f")],
        _conv(stride=2, groups=2),
    ),
    _c(
        "conv_depthwise",
        "conv2d",
        [((1, 3, 5, 5), "f"), ((3, 1, 3, 3), "f"), ((3,), "f")],
        _conv(padding=1, groups=3),
    ),
    _c(
        "conv_nonsquare_all",
        "conv2d",
        [((1, 3, 8, 6), "f"), ((2, 3, 3, 2), "f"), ((2,), "f")],
        _conv(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    ),
    _c(
        "conv_s2_p2_d2",
        "conv2d",
        [((2, 2, 6, 7), "f"), ((2, 2, 3, 2), "f")],
        _conv(stride=2, padding=2, dilation=2),
    ),
]

POOL_CASES = [
    _c("max_2s2", "max_pool2d", [((2, 3, 6, 6), "distinct")], lambda x: O.max_pool2d(x, 2)),
    _c(
        "max_3s2_overlap",
        "max_pool2d",
        [((1, 2, 7, 7), "distinct")],
        lambda x: O.max_pool2d(x, 3, 2),
    ),
    _c(
        "max_3s2_pad1",
        "max_pool2d",
        [((1, 2, 6, 7), "distinct")],
        lambda x: O.max_pool2d(x, 3, 2, 1),
    ),
    _c(
        "max_3s1_pad1_dil2",
        "max_pool2d",
        [((1, 2, 7, 7), "distinct")],
        lambda x: O.max_pool2d(x, 3, 1, 1, dilation=2),
    ),
    _c(
        "max_nonsquare",
        "max_pool2d",
        [((2, 2, 5, 7), "distinct")],
        lambda x: O.max_pool2d(x, (2, 3), (1, 2), (1, 0), dilation=(2, 1)),
    ),
    _c("avg_2s2", "avg_pool2d", [((2, 3, 6, 6), "f")], lambda x: O.avg_pool2d(x, 2)),
    _c("avg_3s2_overlap", "avg_pool2d", [((1, 2, 7, 7), "f")], lambda x: O.avg_pool2d(x, 3, 2)),
    _c(
        "avg_3s2_pad1_include",
        "avg_pool2d",
        [((1, 2, 6, 7), "f")],
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=True),
    ),
    _c(
        "avg_3s2_pad1_exclude",
        "avg_pool2d",
        [((1, 2, 6, 7), "f")],
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    ),
    _c(
        "avg_nonsquare_exclude",
        "avg_pool2d",
        [((2, 2, 5, 6), "f")],
        lambda x: O.avg_pool2d(x, (3, 2), (2, 1), (1, 0), count_include_pad=False),
    ),
]

# The epilogue ops (graph/passes/epilogue.py) that have a VJP: a producer and its body.
EPILOGUE_CASES = [
    _c(
        "conv2d_epilogue_mul_tanh",
        "conv2d_epilogue",
        [((1, 2, 5, 5), "f"), ((2, 2, 3, 3), "f"), ((2,), "f"), ((1, 2, 5, 5), "f")],
        lambda x, w, b, r: x.builder.emit(
            "conv2d_epilogue",
            [x, w, b, r],
            padding=1,
            n_main=3,
            body=(("mul", (0, 1), ()), ("tanh", (-1,), ())),
        ),
    ),
    _c(
        "matmul_epilogue_view_sigmoid",
        "matmul_epilogue",
        [((3, 4), "f"), ((5, 4), "f"), ((3, 5, 1), "f")],
        lambda a, b, m: a.builder.emit(
            "matmul_epilogue",
            [a, b, m],
            trans_b=True,
            n_main=2,
            view=(3, 5, 1),
            body=(("mul", (0, 1), ()), ("sigmoid", (-1,), ())),
        ),
    ),
]


def _step(x, value=3.0):
    return x.builder.const(value, "float64")


# Activations, comparisons, losses and dropout (issue 4); torch comparisons of all of them are
# in tests/engine/test_activations.py, test_losses.py and test_dropout.py.
ACTIVATION_LOSS_CASES = [
    _c("maximum_bcast", "maximum", [((3, 1, 4), "f"), ((2, 1), "f")], O.maximum),
    _c("maximum_scalar", "maximum", [((2, 3), "f")], lambda a: O.maximum(a, 0.1)),
    _c("minimum_bcast", "minimum", [((4,), "f"), ((3, 4), "f")], O.minimum),
    _c(
        "select_bcast",
        "select",
        [((3, 1), "away"), ((3, 4), "f"), ((4,), "f")],
        O.select,
    ),
    _c("equal_float", "equal", [((2, 3), "f"), ((3,), "f")], O.equal),
    _c("pow_3", "pow", [(X4, "f")], lambda x: O.pow(x, 3)),
    _c("pow_2", "pow", [((2, 3), "f")], lambda x: O.pow(x, 2.0)),
    _c("pow_frac", "pow", [((2, 3), "pos")], lambda x: O.pow(x, -1.5)),
    _c("pow_0", "pow", [((2, 3), "f")], lambda x: O.pow(x, 0)),
    _c("xlogy", "xlogy", [((2, 3), "f"), ((2, 3), "pos")], O.xlogy),
    _c("xlogy_bcast", "xlogy", [((3,), "pos"), ((2, 3), "pos")], O.xlogy),
    _c("leaky_relu", "leaky_relu", [(X4, "away")], lambda x: O.leaky_relu(x, 0.2)),
    _c("prelu_channels", "prelu", [(X4, "away"), ((3, 1, 1), "f")], O.prelu),
    _c("prelu_single", "prelu", [((2, 5), "away"), ((1,), "f")], O.prelu),
    _c("elu", "elu", [(X4, "away")], lambda x: O.elu(x, 1.3)),
    _c("silu", "silu", [(X4, "f")], O.silu),
    _c("softplus", "softplus", [(X4, "f")], O.softplus),
    _c(
        "softplus_threshold",
        "softplus",
        [(X4, "f")],
        lambda x: O.softplus(x, beta=2.0, threshold=1.0),
    ),
    _c("scaled_tanh", "scaled_tanh", [(X4, "f")], O.scaled_tanh),
    _c("scaled_tanh_attrs", "scaled_tanh", [((2, 3), "f")], lambda x: O.scaled_tanh(x, 2.0, 0.5)),
    _c(
        "bce",
        "binary_cross_entropy",
        [((3, 4), "prob"), ((3, 4), "prob")],
        lambda p, y: O.binary_cross_entropy(p, y, reduction="none"),
    ),
    _c(
        "bce_with_logits",
        "binary_cross_entropy_with_logits",
        [((3, 4), "f"), ((3, 4), "prob")],
        lambda x, y: O.binary_cross_entropy_with_logits(x, y, reduction="none"),
    ),
    _c("dropout", "dropout", [(X4, "f")], lambda x: O.dropout(x, _step(x), p=0.4, seed=5)),
    _c("dropout_p0", "dropout", [((3, 4), "f")], lambda x: O.dropout(x, _step(x), p=0.0)),
]


# Concat, slice (each other's VJP) and batch_norm (graph/ops/join.py, graph/ops/norm.py).
JOIN_NORM_CASES = [
    _c(
        "concat_axis1",
        "concat",
        [(X4, "f"), ((2, 2, 5, 4), "f")],
        lambda a, b: O.concat([a, b], 1),
    ),
    _c(
        "concat_axis0_three",
        "concat",
        [((2, 3), "f"), ((1, 3), "f"), ((3, 3), "f")],
        lambda a, b, c: O.concat([a, b, c], 0),
    ),
    _c("concat_self_last", "concat", [((2, 3), "f")], lambda a: O.concat([a, a], -1)),
    _c("slice_middle", "slice", [(X4, "f")], lambda a: O.slice_(a, 1, 2, 1)),
    _c("slice_start", "slice", [(X4, "f")], lambda a: O.slice_(a, 0, 3, 2)),
    _c("slice_end", "slice", [((4, 3), "f")], lambda a: O.slice_(a, 2, 4, 0)),
    _c(
        "batch_norm_4d",
        "batch_norm",
        [(X4, "f"), ((1, 3, 1, 1), "f"), ((1, 3, 1, 1), "pos")] + [((1, 3, 1, 1), "f")] * 2,
        O.batch_norm,
    ),
    _c(
        "batch_norm_2d_scalars",
        "batch_norm",
        [((4, 3), "f"), ((1, 3), "f"), ((), "pos"), ((3,), "f")],
        lambda x, m, s, g: O.batch_norm(x, m, s, g, 0.25),
    ),
]

# Transposed conv, unpooling, upsampling, LRN (graph/ops/spatial.py, graph/ops/lrn.py); their
# PyTorch comparisons are in tests/engine/test_spatial_layers.py. The unpooling indices
# (seed 0) hold no repeats, where torch's gather-gradient and the assigning scatter differ.
SPATIAL_CASES = [
    _c(
        "conv_transpose2d",
        "conv_transpose2d",
        [((2, 3, 3, 2), "f"), ((3, 2, 2, 3), "f")],
        O.conv_transpose2d,
    ),
    _c(
        "conv_transpose2d_s2_p1_op1_d2_groups",
        "conv_transpose2d",
        [((1, 4, 3, 2), "f"), ((4, 1, 2, 3), "f")],
        lambda x, w: O.conv_transpose2d(
            x, w, stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2)
        ),
    ),
    _c(
        "max_unpool2d",
        "max_unpool2d",
        [((1, 2, 2, 2), "f"), ((1, 2, 2, 2), "cls29")],
        lambda y, i: O.max_unpool2d(y, i, 3, 2, output_size=(5, 6)),
    ),
    _c("upsample_nearest", "upsample2d", [((1, 2, 2, 3), "f")], lambda x: O.upsample2d(x, (2, 3))),
    _c(
        "upsample_bilinear",
        "upsample2d",
        [((1, 2, 3, 2), "f")],
        lambda x: O.upsample2d(x, (3, 2), "bilinear"),
    ),
    _c(
        "local_response_norm",
        "local_response_norm",
        [((2, 6, 2, 2), "f")],
        lambda x: O.local_response_norm(x, 5, alpha=0.5, beta=0.75, k=1.0),
    ),
    _c(
        "local_response_norm_even_3d",
        "local_response_norm",
        [((2, 5, 3), "f")],
        lambda x: O.local_response_norm(x, 4, alpha=0.8, beta=0.6, k=2.0),
    ),
]

CASES = (
    ELEMENTWISE_CASES
    + REDUCE_SHAPE_CASES
    + _matmul_cases()
    + SOFTMAX_LOSS_CASES
    + CONV_CASES
    + POOL_CASES
    + ACTIVATION_LOSS_CASES
    + EPILOGUE_CASES
    + JOIN_NORM_CASES
    + SPATIAL_CASES
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vjp_matches_finite_differences(case):
    check_vjp(case.operands, case.build, case.op)


def test_sign_has_zero_gradient():
    # sign is flat away from 0: its VJP gives no gradient, so the param gets an explicit zero.
    fwd, leaves, _, r = build_case([((2, 3), "away")], O.sign)
    rng = np.random.default_rng(0)
    feeds = {leaves[0].id: make_array((2, 3), "away", rng), r.id: rng.standard_normal((2, 3))}
    bwd = backward(fwd)
    (g,) = interp.evaluate(bwd, backward_feeds(fwd, bwd, forward_values(fwd, feeds)))
    np.testing.assert_array_equal(g, np.zeros((2, 3)))


def test_fan_out_within_one_op_accumulates():
    # mul(x, x): both operand gradients land on x and are summed with an `add`.
    bwd = check_vjp([((2, 3), "f")], lambda a: a * a, "mul")
    assert "add" in {n.op for n in bwd.ops()}


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


@SWEEP
@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_vjp_sweep(config, seed):
    operands, attrs = config
    check_vjp(operands, _conv(**attrs), "conv2d", seed)


@st.composite
def pool_configs(draw, kind):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    attrs = {"kernel_size": (kh, kw), "stride": stride, "padding": padding}
    dilation = (1, 1)
    if kind == "max":
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        attrs["dilation"] = dilation
    else:
        attrs["count_include_pad"] = draw(st.booleans())
    h = _window_size(draw, dilation[0] * (kh - 1) + 1, padding[0])
    w = _window_size(draw, dilation[1] * (kw - 1) + 1, padding[1])
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w)
    return shape, attrs


@SWEEP
@given(pool_configs("max"), st.integers(0, 2**16))
def test_max_pool2d_vjp_sweep(config, seed):
    shape, attrs = config
    x = make_array(shape, "distinct", np.random.default_rng(seed))
    # With dilation a window can hold padding only (its max is -inf); PyTorch allows that too,
    # but it has no finite gradient to check.
    assume(np.isfinite(get_op("max_pool2d").reference(x, **_pool_attrs("max_pool2d", attrs))).all())
    check_vjp([(shape, "distinct")], lambda v: O.max_pool2d(v, **attrs), "max_pool2d", seed)


@SWEEP
@given(pool_configs("avg"), st.integers(0, 2**16))
def test_avg_pool2d_vjp_sweep(config, seed):
    shape, attrs = config
    check_vjp([(shape, "f")], lambda v: O.avg_pool2d(v, **attrs), "avg_pool2d", seed)


def _pool_attrs(op: str, attrs: dict) -> dict:
    """The op API's keyword names -> the registry's normalized attributes."""
    given_ = {("kernel" if k == "kernel_size" else k): v for k, v in attrs.items()}
    return get_op(op).make_attrs(given_)


# --- coverage: a newly registered op must get a case here -----------------------------------

SWEPT_OPS = {"conv2d", "max_pool2d", "avg_pool2d"}


def test_every_registered_op_is_covered():
    # Epilogues of backward ops come from a pass, not a VJP rule; tests/graph/
    # test_pass_epilogue.py checks them against their parts.
    registry = {
        k: v for k, v in all_ops().items() if not (k in EPILOGUE_OPS.values() and v.vjp is None)
    }
    # No gradient to check: sign is flat, the others are integer-valued.
    covered = {c.op for c in CASES} | SWEPT_OPS | {"sign", "max_pool2d_indices", "class_indices"}
    differentiable = {name for name, op in registry.items() if op.vjp is not None}
    backward_only = {name for name, op in registry.items() if op.vjp is None}
    assert backward_only == set(BACKWARD_ONLY), (
        "a backward op was added or removed: list it in BACKWARD_ONLY with the forward op "
        "whose VJP emits it"
    )
    assert covered == differentiable, (
        f"ops with no gradient case: {sorted(differentiable - covered)}; "
        f"cases for unknown ops: {sorted(covered - differentiable)}"
    )
    assert covered | backward_only == set(registry)


def test_backward_only_ops_appear_in_backward_graphs():
    emitted: dict[str, set[str]] = {}
    for case in CASES:
        fwd, _, _, _ = build_case(case.operands, case.build)
        for n in backward(fwd).ops():
            emitted.setdefault(n.op, set()).add(case.op)
    for grad_op, forward_op in BACKWARD_ONLY.items():
        assert forward_op in emitted.get(grad_op, set()), (
            f"no {forward_op} case emits {grad_op} in its backward graph"
        )


# --- references against PyTorch -------------------------------------------------------------


def ref(op: str, *arrays, **attrs):
    opdef = get_op(op)
    return opdef.reference(*arrays, **opdef.make_attrs(attrs))


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _torch():
    return pytest.importorskip("torch")


def _close(ours, theirs, rtol=1e-10, atol=1e-10):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


CONV_TORCH_CONFIGS = [
    # (x shape, w shape, bias, stride, padding, dilation, groups)
    ((2, 3, 7, 6), (4, 3, 3, 2), True, (1, 1), (0, 0), (1, 1), 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), False, (2, 2), (1, 1), (1, 1), 1),
    ((1, 2, 9, 8), (2, 2, 3, 3), True, (1, 2), (2, 1), (2, 2), 1),
    ((2, 4, 6, 5), (6, 2, 3, 3), True, (1, 1), (1, 0), (1, 1), 2),
    ((1, 4, 8, 7), (4, 1, 2, 3), False, (2, 1), (1, 1), (2, 1), 4),
    ((2, 3, 5, 5), (5, 3, 1, 1), True, (1, 1), (0, 0), (1, 1), 1),
]


@pytest.mark.torch
@pytest.mark.parametrize("config", CONV_TORCH_CONFIGS, ids=lambda c: f"x{c[0]}w{c[1]}")
def test_conv2d_and_its_grads_match_torch(config):
    torch = _torch()
    F = torch.nn.functional
    x_shape, w_shape, has_bias, stride, padding, dilation, groups = config
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    x, w, b = _rand(*x_shape, seed=1), _rand(*w_shape, seed=2), _rand(w_shape[0], seed=3)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b) if has_bias else None
    ty = F.conv2d(tx, tw, tb, **attrs)
    y = ref("conv2d", x, w, *([b] if has_bias else []), **attrs)
    _close(y, ty)
    g = _rand(*y.shape, seed=4)
    gx, gw = torch.autograd.grad(ty, (tx, tw), torch.tensor(g))
    _close(ref("conv2d_grad_input", g, w, input_shape=x_shape, **attrs), gx)
    _close(ref("conv2d_grad_weight", x, g, weight_shape=w_shape, **attrs), gw)


@pytest.mark.torch
@SWEEP
@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_sweep_matches_torch(config, seed):
    """Stride, padding, dilation and groups drawn together: the op and both gradient ops
    against torch.nn.functional.conv2d and its autograd."""
    torch = _torch()
    operands, attrs = config
    x_shape, w_shape = operands[0][0], operands[1][0]
    bias = [_rand(w_shape[0], seed=seed + 2)] if len(operands) == 3 else []
    x, w = _rand(*x_shape, seed=seed), _rand(*w_shape, seed=seed + 1)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, *map(torch.tensor, bias), **attrs)
    y = ref("conv2d", x, w, *bias, **attrs)
    _close(y, ty)
    g = _rand(*y.shape, seed=seed + 3)
    gx, gw = torch.autograd.grad(ty, (tx, tw), torch.tensor(g))
    _close(ref("conv2d_grad_input", g, w, input_shape=x_shape, **attrs), gx)
    _close(ref("conv2d_grad_weight", x, g, weight_shape=w_shape, **attrs), gw)


POOL_TORCH_CONFIGS = [
    # (x shape, kernel, stride, padding, dilation (max) / count_include_pad (avg))
    ((2, 3, 6, 6), (2, 2), (2, 2), (0, 0), 1, True),
    ((1, 2, 7, 7), (3, 3), (2, 2), (0, 0), 1, True),
    ((1, 2, 6, 7), (3, 3), (2, 2), (1, 1), 1, False),
    ((1, 2, 7, 7), (3, 3), (1, 1), (1, 1), 2, True),
    ((2, 2, 5, 7), (2, 3), (1, 2), (1, 0), (2, 1), False),
    ((1, 1, 5, 6), (3, 2), (2, 1), (1, 1), 1, False),
]


@pytest.mark.torch
@pytest.mark.parametrize("config", POOL_TORCH_CONFIGS, ids=lambda c: f"x{c[0]}k{c[1]}s{c[2]}")
def test_pooling_and_its_grads_match_torch(config):
    torch = _torch()
    F = torch.nn.functional
    x_shape, kernel, stride, padding, dilation, include_pad = config
    x = _rand(*x_shape, seed=5)  # continuous values: no ties
    tx = torch.tensor(x, requires_grad=True)

    tmax = F.max_pool2d(tx, kernel, stride, padding, dilation)
    ymax = ref("max_pool2d", x, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    _close(ymax, tmax)
    g = _rand(*ymax.shape, seed=6)
    (gx,) = torch.autograd.grad(tmax, tx, torch.tensor(g))
    mattrs = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation}
    _close(ref("max_pool2d_grad", g, x, **mattrs), gx)

    tavg = F.avg_pool2d(tx, kernel, stride, padding, count_include_pad=include_pad)
    aattrs = {"kernel": kernel, "stride": stride, "padding": padding}
    yavg = ref("avg_pool2d", x, count_include_pad=include_pad, **aattrs)
    _close(yavg, tavg)
    g = _rand(*yavg.shape, seed=7)
    (gx,) = torch.autograd.grad(tavg, tx, torch.tensor(g))
    grad = ref("avg_pool2d_grad", g, input_shape=x_shape, count_include_pad=include_pad, **aattrs)
    _close(grad, gx)


@pytest.mark.torch
@pytest.mark.parametrize("shape_axis", [((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1)])
def test_softmax_family_matches_torch(shape_axis):
    torch = _torch()
    F = torch.nn.functional
    shape, axis = shape_axis
    x = _rand(*shape, seed=8) * 3
    tx = torch.tensor(x, requires_grad=True)
    g = _rand(*shape, seed=9)
    for op, fn in (("softmax", F.softmax), ("log_softmax", F.log_softmax)):
        ty = fn(tx, dim=axis)
        y = ref(op, x, axis=axis)
        _close(y, ty)
        (gx,) = torch.autograd.grad(ty, tx, torch.tensor(g))
        _close(ref(f"{op}_grad", g, y, axis=axis % len(shape)), gx)


@pytest.mark.torch
@pytest.mark.parametrize("n_classes", [(5, 7), (1, 3), (4, 2)])
def test_losses_match_torch(n_classes):
    torch = _torch()
    F = torch.nn.functional
    n, c = n_classes
    logits = _rand(n, c, seed=10) * 2
    targets = np.random.default_rng(11).integers(0, c, n).astype(np.int64)
    tl = torch.tensor(logits, requires_grad=True)
    tloss = F.cross_entropy(tl, torch.tensor(targets))
    _close(ref("cross_entropy", logits, targets), tloss)
    (gl,) = torch.autograd.grad(tloss, tl, torch.tensor(0.7, dtype=torch.float64))
    _close(ref("cross_entropy_grad", logits, targets, np.asarray(0.7)), gl)

    a, b = _rand(n, c, seed=12), _rand(n, c, seed=13)
    _close(ref("mse_loss", a, b), F.mse_loss(torch.tensor(a), torch.tensor(b)))


@pytest.mark.torch
def test_relu_grad_matches_torch():
    torch = _torch()
    x = make_array((3, 4), "away", np.random.default_rng(14))
    g = _rand(3, 4, seed=15)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    (gx,) = torch.autograd.grad(ty, tx, torch.tensor(g))
    _close(ref("relu_grad", g, ref("relu", x)), gx)


def _torch_equivalents(torch):
    """op name -> (operands, op attrs, the torch computation of the same thing)."""
    a, b, pos = _rand(3, 1, 4, seed=16), _rand(2, 1, seed=17), np.abs(_rand(2, 1, seed=18)) + 0.5
    x, m1, m2 = _rand(2, 3, 4, seed=19), _rand(2, 3, 4, seed=20), _rand(2, 5, 3, seed=21)
    t = torch.tensor
    return {
        "add": ((a, b), {}, lambda: t(a) + t(b)),
        "sub": ((a, b), {}, lambda: t(a) - t(b)),
        "mul": ((a, b), {}, lambda: t(a) * t(b)),
        "div": ((a, pos), {}, lambda: t(a) / t(pos)),
        "neg": ((x,), {}, lambda: -t(x)),
        "exp": ((x,), {}, lambda: torch.exp(t(x))),
        "log": ((np.abs(x) + 0.1,), {}, lambda: torch.log(t(np.abs(x) + 0.1))),
        "sqrt": ((np.abs(x),), {}, lambda: torch.sqrt(t(np.abs(x)))),
        "abs": ((x,), {}, lambda: torch.abs(t(x))),
        "sign": ((x,), {}, lambda: torch.sign(t(x))),
        "relu": ((x,), {}, lambda: torch.relu(t(x))),
        "tanh": ((x,), {}, lambda: torch.tanh(t(x))),
        "sigmoid": ((x,), {}, lambda: torch.sigmoid(t(x))),
        "sum": ((x,), {"axes": (0, 2), "keepdims": True}, lambda: t(x).sum((0, 2), True)),
        "mean": ((x,), {"axes": (1,), "keepdims": False}, lambda: t(x).mean(1)),
        "broadcast_to": ((b,), {"shape": (3, 2, 4)}, lambda: t(b).expand(3, 2, 4)),
        "reshape": ((x,), {"shape": (4, 6)}, lambda: t(x).reshape(4, 6)),
        "transpose": ((x,), {"perm": (2, 0, 1)}, lambda: t(x).permute(2, 0, 1)),
        "matmul": (
            (m1, m2),
            {"trans_a": True, "trans_b": True},
            lambda: t(m1).transpose(1, 2) @ t(m2).transpose(1, 2),
        ),
    }


@pytest.mark.torch
def test_elementwise_reduce_shape_and_matmul_references_match_torch():
    torch = _torch()
    table = _torch_equivalents(torch)
    for op, (operands, attrs, expected) in table.items():
        _close(ref(op, *operands, **attrs), expected())
    # Every forward op has a torch comparison somewhere in this file.
    elsewhere = {"conv2d", "max_pool2d", "avg_pool2d", "softmax", "log_softmax"}
    elsewhere |= {"cross_entropy", "mse_loss"}
    elsewhere |= {c.op for c in ACTIVATION_LOSS_CASES}  # test_activations, _losses, _dropout
    # tests/engine/test_spatial_layers.py
    elsewhere |= {c.op for c in SPATIAL_CASES} | {"max_pool2d_indices"}
    elsewhere |= {c.op for c in JOIN_NORM_CASES}  # tests/engine/test_norm_concat.py
    elsewhere.add("class_indices")  # identity on targets; refusals: test_errors_inputs
    elsewhere.add("fused_elementwise")  # composed of the ops above (tests/graph/test_pass_fuse)
    elsewhere |= {"conv2d_epilogue", "matmul_epilogue"}  # likewise (test_pass_epilogue)
    differentiable = {name for name, op in all_ops().items() if op.vjp is not None}
    assert differentiable == set(table) | elsewhere
