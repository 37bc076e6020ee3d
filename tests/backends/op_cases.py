"""The op cases that every compiled backend runs against the NumPy references (the interp
backend), with the checks that run them: test_backend_ops.py runs them on cpu, test_cuda_ops.py
on cuda. Those files import it by name (tests/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np

from numbagrad.backends import get_backend, interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops import all_ops


def _epilogue_cases():
    """The epilogue ops (graph/passes/epilogue.py): a producer, then elementwise steps in place."""
    return [
        (
            "conv2d_epilogue_residual_relu",
            [((1, 2, 6, 6), "f"), ((3, 2, 3, 3), "f"), ((3,), "f"), ((1, 3, 6, 6), "f")],
            lambda x, w, b, r: x.builder.emit(
                "conv2d_epilogue",
                [x, w, b, r],
                padding=1,
                n_main=3,
                body=(("add", (0, 1), ()), ("relu", (-1,), ())),
            ),
        ),
        (
            "matmul_epilogue_view_tanh",
            [((5, 4), "f"), ((3, 4), "f"), ((5, 3, 1), "f")],
            lambda a, b, m: a.builder.emit(
                "matmul_epilogue",
                [a, b, m],
                trans_b=True,
                n_main=2,
                view=(5, 3, 1),
                body=(("mul", (0, 1), ()), ("tanh", (-1,), ())),
            ),
        ),
        (
            "conv2d_grad_input_epilogue_mask",
            [((2, 3, 4, 4), "f"), ((3, 2, 3, 3), "f"), ((2, 2, 6, 6), "f")],
            lambda g, w, y: g.builder.emit(
                "conv2d_grad_input_epilogue",
                [g, w, y],
                input_shape=(2, 2, 6, 6),
                n_main=2,
                body=(("relu_grad", (0, 1), ()),),
            ),
        ),
        (
            "max_pool2d_grad_epilogue_mask",
            [((2, 3, 3, 2), "f"), ((2, 3, 6, 4), "f")],
            lambda g, x: g.builder.emit(
                "max_pool2d_grad_epilogue",
                [g, x, x],
                kernel=2,
                stride=2,
                n_main=2,
                body=(("relu_grad", (0, 1), ()),),
            ),
        ),
    ]


def _core_cases(x4):
    """Arithmetic, reductions, views, matmul, conv, pooling, softmax and the first losses."""
    return [
        ("add_bcast", [((2, 3, 4), "f"), ((3, 1), "f")], lambda a, b: a + b),
        ("sub_scalar", [((5, 4), "f")], lambda a: 1.5 - a),
        ("mul", [((2, 3, 4), "f"), ((4,), "f")], lambda a, b: a * b),
        ("div", [((3, 4), "f"), ((3, 4), "pos")], lambda a, b: a / b),
        ("neg", [((7,), "f")], lambda a: -a),
        ("exp", [((3, 5), "f")], O.exp),
        ("log", [((3, 5), "pos")], O.log),
        ("sqrt", [((3, 5), "pos")], O.sqrt),
        ("abs", [((3, 5), "f")], O.abs),
        ("sign", [((3, 5), "f")], O.sign),
        ("relu", [(x4, "f")], O.relu),
        ("relu_grad", [(x4, "f"), (x4, "f")], O.relu_grad),
        ("tanh", [(x4, "f")], O.tanh),
        ("sigmoid", [(x4, "f")], O.sigmoid),
        ("broadcast_to", [((3, 1), "f")], lambda a: O.broadcast_to(a, (2, 3, 4))),
        ("sum_all", [(x4, "f")], lambda a: O.sum(a)),
        ("sum_023", [(x4, "f")], lambda a: O.sum(a, (0, 2, 3))),
        ("sum_keep", [(x4, "f")], lambda a: O.sum(a, 1, keepdims=True)),
        ("sum_0", [((6, 5), "f")], lambda a: O.sum(a, 0)),
        ("mean_23", [(x4, "f")], lambda a: O.mean(a, (2, 3))),
        ("reshape", [(x4, "f")], lambda a: O.reshape(a, (6, -1))),
        ("transpose", [(x4, "f")], lambda a: O.transpose(a, (0, 2, 3, 1))),
        ("transpose_2d", [((5, 3), "f")], O.transpose),
        ("matmul", [((5, 4), "f"), ((4, 3), "f")], O.matmul),
        ("matmul_tt", [((4, 5), "f"), ((3, 4), "f")], lambda a, b: O.matmul(a, b, True, True)),
        (
            "matmul_3d",
            [((2, 5, 4), "f"), ((2, 3, 4), "f")],
            lambda a, b: O.matmul(a, b, False, True),
        ),
        ("conv2d", [(x4, "f"), ((4, 3, 3, 2), "f"), ((4,), "f")], O.conv2d),
        (
            "conv2d_s2_p1_d2",
            [((2, 3, 7, 6), "f"), ((4, 3, 2, 3), "f")],
            lambda x, w: O.conv2d(x, w, stride=2, padding=1, dilation=2),
        ),
        (
            "conv2d_groups",
            [((2, 4, 6, 5), "f"), ((6, 2, 3, 3), "f")],
            lambda x, w: O.conv2d(x, w, padding=(1, 0), groups=2),
        ),
        ("conv2d_1x1", [((2, 3, 4, 4), "f"), ((5, 3, 1, 1), "f"), ((5,), "f")], O.conv2d),
        ("max_pool", [(x4, "f")], lambda x: O.max_pool2d(x, 2)),
        ("max_pool_3s2p1", [(x4, "f")], lambda x: O.max_pool2d(x, 3, 2, 1)),
        ("avg_pool", [(x4, "f")], lambda x: O.avg_pool2d(x, 2)),
        (
            "avg_pool_pad_exclude",
            [(x4, "f")],
            lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        ),
        ("softmax", [((4, 6), "f")], O.softmax),
        ("softmax_long_rows", [((2, 40), "f")], O.softmax),
        ("softmax_axis1", [(x4, "f")], lambda x: O.softmax(x, 1)),
        ("log_softmax", [((4, 6), "f")], O.log_softmax),
        ("log_softmax_axis0", [((4, 6), "f")], lambda x: O.log_softmax(x, 0)),
        ("softmax_grad", [((4, 6), "f"), ((4, 6), "pos")], O.softmax_grad),
        ("cross_entropy", [((5, 7), "f"), ((5,), "cls7")], O.cross_entropy),
        ("cross_entropy_long_rows", [((2, 40), "f"), ((2,), "cls40")], O.cross_entropy),
        ("mse_loss", [((3, 4), "f"), ((3, 4), "f")], O.mse_loss),
        (
            "fused_mul_add_relu_bcast",
            [(x4, "f"), ((3, 1, 1), "f"), ((x4[3],), "f")],
            lambda x, w, b: x.builder.emit(
                "fused_elementwise",
                [x, w, b],
                body=(("mul", (0, 1), ()), ("add", (-1, 2), ()), ("relu", (-2,), ())),
            ),
        ),
    ]


def _activation_cases(x4):
    """Activations, comparisons, casts, scans, losses and dropout (issues 4, 13)."""
    return [
        ("maximum", [((2, 3, 4), "f"), ((3, 1), "f")], O.maximum),
        ("minimum", [((3, 4), "f"), ((4,), "f")], O.minimum),
        ("select", [((3, 1), "f"), ((3, 4), "f"), ((4,), "f")], O.select),
        ("equal_classes", [((5, 1), "cls4"), ((4,), "cls4")], O.equal),
        ("pow", [((3, 5), "pos")], lambda x: O.pow(x, -1.5)),
        ("xlogy", [((3, 5), "f"), ((3, 5), "pos")], O.xlogy),
        ("leaky_relu", [(x4, "f")], lambda x: O.leaky_relu(x, 0.2)),
        ("prelu", [(x4, "f"), ((3, 1, 1), "f")], O.prelu),
        ("elu", [(x4, "f")], lambda x: O.elu(x, 0.7)),
        ("silu", [(x4, "f")], O.silu),
        ("softplus", [(x4, "f")], lambda x: O.softplus(x, beta=2.0, threshold=1.5)),
        ("scaled_tanh", [(x4, "f")], O.scaled_tanh),
        (
            "bce",
            [((3, 4), "f"), ((3, 4), "f")],
            lambda p, y: O.binary_cross_entropy(O.sigmoid(p), O.sigmoid(y), "none"),
        ),
        (
            "bce_with_logits",
            [((3, 4), "f"), ((3, 4), "f")],
            lambda x, y: O.binary_cross_entropy_with_logits(x, O.sigmoid(y), "none"),
        ),
        ("nll_loss", [((5, 7), "f"), ((5,), "cls7")], lambda x, t: O.nll_loss(x, t, "none")),
        ("class_indices", [((2, 3, 4), "cls5")], lambda t: O.class_indices(t, 5, "nll_loss")),
        ("greater_bcast", [((2, 3, 4), "f"), ((3, 1), "f")], O.greater),
        ("greater_equal_classes", [((5, 1), "cls4"), ((4,), "cls4")], O.greater_equal),
        ("select_bool", [((3, 4), "f"), ((3, 4), "f")], lambda a, b: O.select(a > b, a, b)),
        ("cast_f_to_i64", [((3, 5), "f")], lambda a: O.cast(a, "int64")),
        ("cast_bool_to_f", [((3, 5), "f")], lambda a: O.cast(a > 0.0, a.dtype)),
        ("stop_gradient", [((3, 5), "f")], O.stop_gradient),
        ("erf", [(x4, "f")], O.erf),
        ("cumsum_axis1", [(x4, "f")], lambda a: O.cumsum(a, 1)),
        ("cumsum_last_reverse", [(x4, "f")], lambda a: O.cumsum(a, -1, reverse=True)),
        (
            "dropout",
            [(x4, "f")],
            lambda x: O.dropout(x, x.builder.const(5.0, "float64"), p=0.3, seed=11),
        ),
    ]


def _join_spatial_cases(x4):
    """Concat, slice, batch_norm and its statistics (graph/ops/join.py, norm.py,
    norm_stats.py); transposed conv, pooling indices, unpooling, upsampling, LRN
    (graph/ops/spatial.py, lrn.py)."""
    return [
        ("concat_axis1", [(x4, "f"), ((2, 2) + x4[2:], "f")], lambda a, b: O.concat([a, b], 1)),
        (
            "concat_axis0_three",
            [((2, 3), "f"), ((1, 3), "f"), ((4, 3), "f")],
            lambda a, b, c: O.concat([a, b, c], 0),
        ),
        ("slice_axis1", [(x4, "f")], lambda a: O.slice_(a, 1, 3, 1)),
        (  # a world of one here: the operands packed (tests/distributed: two processes)
            "allreduce_three",
            [((2, 3), "f"), ((4,), "f"), ((1,), "f")],
            lambda a, b, c: O.allreduce(a, b, c),
        ),
        ("slice_last_axis", [(x4, "f")], lambda a: O.slice_(a, 1, 3, 3)),
        (
            "batch_norm",
            [(x4, "f"), ((1, 3, 1, 1), "f"), ((1, 3, 1, 1), "pos"), ((1, 3, 1, 1), "f"), ((), "f")],
            O.batch_norm,
        ),
        ("batch_norm_stats", [(x4, "f")], O.batch_norm_stats),
        ("batch_norm_stats_2d", [((5, 3), "f")], O.batch_norm_stats),
        (
            "batch_norm_grad_stats",
            [(x4, "f"), (x4, "f"), ((1, x4[1], 1, 1), "f")],
            O.batch_norm_grad_stats,
        ),
        (
            "batch_norm_grad_stats_scalar_mean",
            [((4, 3, 5), "f"), ((4, 3, 5), "f"), ((), "f")],
            O.batch_norm_grad_stats,
        ),
        ("conv_transpose2d", [((2, 3, 3, 2), "f"), ((3, 2, 2, 3), "f")], O.conv_transpose2d),
        (
            "conv_transpose2d_s2_p1_op1_groups",
            [((1, 4, 3, 2), "f"), ((4, 1, 3, 2), "f")],
            lambda x, w: O.conv_transpose2d(
                x, w, stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2)
            ),
        ),
        ("max_pool2d_indices_3s2p1", [(x4, "f")], lambda x: O.max_pool2d_indices(x, 3, 2, 1)),
        ("max_pool2d_taps_3s2p1", [(x4, "f")], lambda x: O.max_pool2d_taps(x, 3, 2, 1)),
        (
            "max_pool2d_grad_taps_3s2p1",
            [(x4, "f")],
            lambda x: O.max_pool2d_grad_taps(
                O.max_pool2d(x, 3, 2, 1), O.max_pool2d_taps(x, 3, 2, 1), x.shape, 3, 2, 1
            ),
        ),
        (
            "max_pool2d_grad_taps_2x3_dilated",
            [(x4, "f")],
            lambda x: O.max_pool2d_grad_taps(
                O.max_pool2d(x, (2, 3), (1, 2), 0, (2, 1)),
                O.max_pool2d_taps(x, (2, 3), (1, 2), 0, (2, 1)),
                x.shape,
                (2, 3),
                (1, 2),
                0,
                (2, 1),
            ),
        ),
        (
            "max_unpool2d",
            [(x4, "f")],
            lambda x: O.max_unpool2d(
                O.max_pool2d(x, 2), O.max_pool2d_indices(x, 2), 2, output_size=x.shape[2:]
            ),
        ),
        ("upsample_nearest", [((1, 2, 2, 3), "f")], lambda x: O.upsample2d(x, (2, 3))),
        (
            "upsample_bilinear",
            [((1, 2, 3, 2), "f")],
            lambda x: O.upsample2d(x, (3, 2), "bilinear"),
        ),
        (
            "local_response_norm",
            [((2, 6, 2, 2), "f")],
            lambda x: O.local_response_norm(x, 5, alpha=0.5, beta=0.75, k=1.0),
        ),
    ]


def op_cases(x4, specs=None) -> list:
    """The forward cases, each (case id, input specs [(shape, kind)], fn building the op from
    input Values). ``x4`` is the NCHW shape most cases feed; ``specs`` maps a case id to input
    specs that replace its own (a backend that needs smaller shapes there). Input kinds: "f"
    random float, "pos" positive float, "cls<C>" class indices below C."""
    cases = _core_cases(x4) + _epilogue_cases() + _activation_cases(x4) + _join_spatial_cases(x4)
    specs = specs or {}
    assert set(specs) <= {c[0] for c in cases}, "spec override for an unknown case"
    return [(name, specs.get(name, spec), fn) for name, spec, fn in cases]


# Backward ops are built through their forward op's VJP: name -> (forward case, ops it emits).
GRAD_CASES = {
    "conv2d_grad": ("conv2d_s2_p1_d2", ("conv2d_grad_input", "conv2d_grad_weight")),
    "conv2d_groups_grad": ("conv2d_groups", ("conv2d_grad_input", "conv2d_grad_weight")),
    "conv2d_1x1_grad": ("conv2d_1x1", ("conv2d_grad_input", "conv2d_grad_weight")),
    "max_pool_grad": ("max_pool_3s2p1", ("max_pool2d_grad",)),
    "avg_pool_grad": ("avg_pool_pad_exclude", ("avg_pool2d_grad",)),
    "log_softmax_grad": ("log_softmax", ("log_softmax_grad",)),
    "softmax_grad_long_rows": ("softmax_long_rows", ("softmax_grad",)),
    "cross_entropy_grad": ("cross_entropy", ("cross_entropy_grad",)),
    "conv_transpose2d_grad": (
        "conv_transpose2d_s2_p1_op1_groups",
        ("conv2d", "conv2d_grad_weight"),
    ),
    "max_unpool2d_grad": ("max_unpool2d", ("max_unpool2d_grad",)),
    "upsample_nearest_grad": ("upsample_nearest", ("upsample2d_grad",)),
    "upsample_bilinear_grad": ("upsample_bilinear", ("upsample2d_grad",)),
    "local_response_norm_grad": ("local_response_norm", ("local_response_norm_grad",)),
    "matmul_grad": ("matmul_3d", ("matmul",)),
    "batch_norm_grad": ("batch_norm", ("batch_norm_grad_stats",)),
    "batch_norm_stats_grad": ("batch_norm_stats", ("slice",)),
}


def array(shape, kind, dtype, rng):
    """A test input of ``shape`` and ``kind`` (see ``op_cases``)."""
    if kind.startswith("cls"):
        return rng.integers(0, int(kind[3:]), shape).astype(np.int64)
    # Distinct values keep max-pool ties (where any argmax is right) out of the comparison.
    values = rng.permutation(int(np.prod(shape))).reshape(shape) / max(np.prod(shape), 1)
    values = (values - 0.5) * 4 if kind == "f" else values * 2 + 0.5
    return values.astype(dtype)


def _leaves(b, specs, dtype):
    """Float inputs are params (so they can be differentiated), class indices inputs."""
    return [
        b.leaf("input", s, "int64", f"in{i}")
        if k.startswith("cls")
        else b.leaf("param", s, dtype, f"in{i}")
        for i, (s, k) in enumerate(specs)
    ]


def build(case, dtype):
    """The one-op graph of ``case`` and its leaf Values."""
    _, specs, fn = case
    b = Builder()
    leaves = _leaves(b, specs, dtype)
    return b.build([fn(*leaves)]), leaves


def feeds(specs, leaves, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {v.id: array(shape, kind, dtype, rng) for v, (shape, kind) in zip(leaves, specs)}


def run(backend, graph, feeds, bindings=None):
    """Compile ``graph`` on ``backend``, feed it, run it: (output copies, executable)."""
    exe = get_backend(backend).compile(graph, bindings)
    for node_id, value in feeds.items():
        exe.set_input(node_id, value)
    exe.run()
    return [a.copy() for a in exe.output_arrays()], exe


def tolerance(dtype):
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-11}


def check_op(backend, case, dtype):
    """``case`` compiled on ``backend`` (no NumPy fallback) agrees with the interp backend."""
    graph, leaves = build(case, dtype)
    inputs = feeds(case[1], leaves, dtype)
    (expected,) = interp.evaluate(graph, inputs)
    (got,), exe = run(backend, graph, inputs)
    assert exe.impl_counts().get("reference", 0) == 0, "op fell back to its NumPy reference"
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **tolerance(dtype))


def backward_inputs(case, values=None):
    """The backward graph of sum(case(...) * r), r distinct weights per output element, and its
    feeds (saved values from an interp run of the forward graph), in float64. The forward
    inputs are ``values`` (float64 arrays, in operand order) if given, else drawn."""
    from numbagrad.engine.autodiff import build_backward

    _, specs, fn = case
    b = Builder()
    params = _leaves(b, specs, "float64")
    out = fn(*params)
    r = b.leaf("input", out.shape, out.dtype, "r")
    fwd = b.build([O.sum(out * r)])
    builder, _, grads = build_backward(fwd)
    bwd = builder.build(list(grads.values()))
    if values is None:
        fwd_feeds = feeds(specs, params, "float64")
    else:
        fwd_feeds = {v.id: np.asarray(a) for v, a in zip(params, values)}
    fwd_feeds[r.id] = np.random.default_rng(1).standard_normal(out.shape)
    fwd_exe = interp.compile(fwd)
    for k, v in fwd_feeds.items():
        np.copyto(fwd_exe.buffers[k], v)
    fwd_exe.run()
    bwd_feeds = {}
    for n in bwd.leaves():
        if "saved_from" in n.attrs:
            bwd_feeds[n.id] = fwd_exe.buffers[n.attrs["saved_from"]]
        elif n.role == "param":
            bwd_feeds[n.id] = fwd_exe.buffers[fwd.by_name(n.name, role="param").id]
        elif n.role == "input":
            bwd_feeds[n.id] = np.ones(n.shape)
    return bwd, bwd_feeds


def check_backward(backend, case, grad_ops):
    """The gradient graph of ``case`` holds ``grad_ops`` and, compiled on ``backend``, agrees
    with the interp backend in float64."""
    bwd, bwd_feeds = backward_inputs(case)
    assert {n.op for n in bwd.ops()} >= set(grad_ops)
    expected = interp.evaluate(bwd, bwd_feeds)
    got, exe = run(backend, bwd, bwd_feeds)
    assert exe.impl_counts().get("reference", 0) == 0
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


def uncovered_ops(cases, extra=()):
    """Registered ops that no case (nor a GRAD_CASES entry, nor ``extra``) emits."""
    covered = {n.op for case in cases for n in build(case, "float32")[0].ops()}
    covered |= {op for _, ops in GRAD_CASES.values() for op in ops}
    return set(all_ops()) - covered - set(extra)


def unlowered_ops(lowerings):
    """Ops that would run their NumPy reference on a backend with these ``lowerings``:
    elementwise ops (fused groups included) go through the code generator and reshape aliases
    its input, so everything else needs an entry."""
    return {
        name
        for name, op in all_ops().items()
        if name not in lowerings and op.category != "elementwise" and name != "reshape"
    }
