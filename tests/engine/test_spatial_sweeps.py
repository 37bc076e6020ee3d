"""Hypothesis sweeps over the spatial ops (conv_transpose2d, max_pool2d_indices + max_unpool2d,
upsample2d, local_response_norm): the NumPy references and the VJP rules (interp backend,
float64) against PyTorch's forward and autograd, over shapes, strides, padding, dilation,
groups and the ops' parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import numbagrad as ng
from numbagrad.backends import get_backend, interp
from numbagrad.engine import backward
from numbagrad.graph import Builder
from numbagrad.graph import ops as O

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
TF = torch.nn.functional

# --- hypothesis sweeps: the ops' references and VJPs (interp, float64) against PyTorch ------

SWEEP = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _vs_torch(ours, theirs, arrays, seed=0):
    """Output and gradients of sum(op(...) * r) for float64 ``arrays``: ours through the
    graph (interp backend, the VJP rules), theirs through torch.autograd."""
    b = Builder()
    leaves = [b.leaf("param", a.shape, "float64", f"p{i}") for i, a in enumerate(arrays)]
    out = ours(*leaves)
    r = b.leaf("input", out.shape, "float64", "r")
    fwd = b.build([O.sum(out * r), out])
    r_value = np.random.default_rng(seed).standard_normal(out.shape)
    bwd = backward(fwd)
    everything = ng.Graph(fwd.nodes, fwd.inputs, [n.id for n in fwd.nodes])
    values = dict(zip(everything.outputs, interp.evaluate(everything, {
        **{v.id: a for v, a in zip(leaves, arrays)}, r.id: r_value})))  # fmt: skip
    feeds = {}
    for leaf in bwd.leaves():
        if "saved_from" in leaf.attrs:
            feeds[leaf.id] = values[leaf.attrs["saved_from"]]
        elif leaf.role == "param":
            feeds[leaf.id] = values[fwd.by_name(leaf.name, role="param").id]
        elif leaf.role == "input":
            feeds[leaf.id] = np.ones(leaf.shape)
    grads = interp.evaluate(bwd, feeds)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_out = theirs(*tensors)
    (t_out * torch.tensor(r_value)).sum().backward()
    np.testing.assert_allclose(values[out.id], t_out.detach().numpy(), rtol=1e-10, atol=1e-10)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)


def _rand(rng, *shape):
    return rng.standard_normal(shape)


@st.composite
def deconv_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    output_padding = tuple(draw(st.integers(0, s - 1)) for s in stride)
    hw = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    for i in range(2):
        size = (hw[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1)
        assume(size + output_padding[i] + 1 > 0)
    attrs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                 dilation=dilation)  # fmt: skip
    return (draw(st.integers(1, 2)), cin, *hw), (cin, cout // groups, *k), attrs


@SWEEP
@given(deconv_configs(), st.integers(0, 2**16))
def test_conv_transpose2d_sweep_matches_torch(config, seed):
    x_shape, w_shape, attrs = config
    rng = np.random.default_rng(seed)
    _vs_torch(
        lambda x, w: O.conv_transpose2d(x, w, **attrs),
        lambda x, w: TF.conv_transpose2d(x, w, **attrs),
        [_rand(rng, *x_shape), _rand(rng, *w_shape)],
        seed,
    )


@st.composite
def unpool_configs(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = tuple(
        max(1, dilation[i] * (k[i] - 1) + 1 - 2 * padding[i]) + draw(st.integers(0, 3))
        for i in range(2)
    )
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *hw), k, stride, padding, dilation


@SWEEP
@given(unpool_configs(), st.integers(0, 2**16))
def test_pool_indices_and_unpool_sweep_match_torch(config, seed):
    """Indices as torch's (distinct values: no ties); unpooling them back into the input
    plane (without dilation, as torch's max_unpool2d expects), output and gradients."""
    shape, k, s, p, d = config
    x = np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape) * 1.0
    b = Builder()
    leaf = b.leaf("input", shape, "float64")
    graph = b.build([O.max_pool2d_indices(leaf, k, s, p, d)])
    (idx,) = interp.evaluate(graph, {leaf.id: x})
    _, t_idx = TF.max_pool2d(torch.tensor(x), k, s, p, d, return_indices=True)
    np.testing.assert_array_equal(idx, t_idx.numpy())
    (got,) = _run_cpu(graph, {leaf.id: x})
    np.testing.assert_array_equal(got, idx)
    _vs_torch(
        lambda v: O.max_unpool2d(
            O.max_pool2d(v, k, s, p),
            O.max_pool2d_indices(v, k, s, p),
            k,
            s,
            p,
            output_size=shape[2:],
        ),  # fmt: skip
        lambda v: TF.max_unpool2d(
            *TF.max_pool2d(v, k, s, p, return_indices=True), k, s, p, output_size=shape[2:]
        ),
        [x],
        seed,
    )


def _run_cpu(graph, feeds):
    exe = get_backend("cpu").compile(graph)
    for node_id, array in feeds.items():
        exe.set_input(node_id, array)
    exe.run()
    return [a.copy() for a in exe.output_arrays()]


@SWEEP
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.sampled_from(["nearest", "bilinear"]),
    st.integers(0, 2**16),
)
def test_upsample_sweep_matches_torch(shape, scale, mode, seed):
    kw = {} if mode == "nearest" else {"align_corners": False}
    _vs_torch(
        lambda x: O.upsample2d(x, scale, mode),
        lambda x: TF.interpolate(x, scale_factor=scale, mode=mode, **kw),
        [_rand(np.random.default_rng(seed), *shape)],
        seed,
    )


@SWEEP
@given(
    st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 3)),
    st.integers(1, 6),
    st.floats(1e-4, 2.0),
    st.floats(0.1, 1.5),
    st.floats(0.5, 3.0),
    st.integers(0, 2**16),
)
def test_local_response_norm_sweep_matches_torch(shape, size, alpha, beta, k, seed):
    _vs_torch(
        lambda x: O.local_response_norm(x, size, alpha, beta, k),
        lambda x: TF.local_response_norm(x, size, alpha, beta, k),
        [_rand(np.random.default_rng(seed), *shape)],
        seed,
    )
