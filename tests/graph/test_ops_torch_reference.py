"""Every op's NumPy reference (and its gradient ops) against PyTorch. The VJP rules against
finite differences are in test_ops_vjp_cases.py and test_ops_vjp_sweeps.py."""

from __future__ import annotations

import _vjp_cases  # a sibling helper (tests/conftest.py puts tests/graph on sys.path)
import _vjp_harness as _h  # a sibling helper (tests/conftest.py)
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numbagrad.graph.ops import all_ops, get_op

SWEEP, conv_configs, make_array = _h.SWEEP, _h.conv_configs, _h.make_array
_cases = _vjp_cases
ACTIVATION_LOSS_CASES, JOIN_NORM_CASES = _cases.ACTIVATION_LOSS_CASES, _cases.JOIN_NORM_CASES
SPATIAL_CASES = _cases.SPATIAL_CASES

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
        "greater": ((a, b), {}, lambda: t(a) > t(b)),
        "greater_equal": ((a.round(), b.round()), {}, lambda: t(a.round()) >= t(b.round())),
        "cast": ((x * 3,), {"dtype": "int64"}, lambda: t(x * 3).to(torch.int64)),
        "stop_gradient": ((x,), {}, lambda: t(x).detach()),
        "erf": ((x,), {}, lambda: torch.erf(t(x))),
        "cumsum": ((x,), {"axis": 1, "reverse": False}, lambda: t(x).cumsum(1)),
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
