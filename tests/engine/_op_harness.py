"""The harness of the activation, loss and dropout tests (test_activations.py, test_losses.py,
test_dropout.py): one op-API call's forward and backward on a backend against PyTorch's
autograd, and a small model with a loss through compile_grad against its torch twin. Imported by
name (tests/conftest.py puts this folder on sys.path); import torch (pytest.importorskip) first."""

from __future__ import annotations

import numpy as np
import torch

import numbagrad as ng
from numbagrad.backends import get_backend
from numbagrad.engine import backward
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.pipeline import optimize_training


def _rng(seed):
    return np.random.default_rng(seed)


# --- the harness: forward + backward of one op-API call on a backend -----------------------


def forward_backward(fn, arrays, weights, backend="cpu", optimized=True):
    """``out = fn(*leaves)`` and the gradients of ``sum(out * weights)`` with respect to every
    float operand (float operands are params, int ones inputs), run on ``backend``: the
    forward and backward graphs optimized (fused) as a training step would be."""
    b = Builder("case")
    leaves = [
        b.leaf("param" if a.dtype.kind == "f" else "input", a.shape, str(a.dtype), f"a{i}")
        for i, a in enumerate(arrays)
    ]
    out = fn(*leaves)
    r = b.leaf("input", out.shape, out.dtype, "R")
    fwd = b.build([O.sum(out * r), out])
    names = [v.node.name for v in leaves if v.node.role == "param"]
    bwd = backward(fwd, wrt=names)
    if optimized:
        fwd, bwd, _ = optimize_training(fwd, bwd, plan=False)
    be = get_backend(backend)
    fexe = be.compile(fwd)
    for v, a in zip(leaves, arrays):
        np.copyto(fexe.buffers[v.id], a)
    np.copyto(fexe.buffers[r.id], weights)
    fexe.run()
    bindings = {}
    for n in bwd.leaves():
        if "saved_from" in n.attrs:
            bindings[n.id] = fexe.buffers[n.attrs["saved_from"]]
        elif n.role == "param":
            bindings[n.id] = fexe.buffers[fwd.by_name(n.name, role="param").id]
    bexe = be.compile(bwd, bindings)
    for n in bwd.leaves("input"):
        if n.name == "dloss":
            bexe.set_input(n.id, 1.0)
    bexe.run()
    grads = dict(zip(bwd.output_names, (g.copy() for g in bexe.output_arrays())))
    return fexe.output_arrays()[1].copy(), [grads.get(f"a{i}") for i in range(len(arrays))]


def torch_forward_backward(torch_fn, arrays, weights):
    ts = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = torch_fn(*ts)
    if out.requires_grad:  # (not for comparisons)
        out.backward(torch.tensor(weights))
    grads = [t.grad.numpy() if t.grad is not None else None for t in ts]
    return out.detach().numpy(), grads


def check_against_torch(fn, torch_fn, arrays, rtol=1e-9, atol=1e-10, skip_grads=()):
    arrays = [np.asarray(a) for a in arrays]
    expected, expected_grads = None, None
    for backend, optimized in (("interp", False), ("cpu", True)):
        # The weights are drawn once per shape, so both backends see the same ones.
        if expected is None:
            b = Builder()
            leaves = [b.leaf("input", a.shape, str(a.dtype), "x") for a in arrays]
            shape = fn(*leaves).shape
            weights = _rng(99).standard_normal(shape)
            expected, expected_grads = torch_forward_backward(torch_fn, arrays, weights)
        out, grads = forward_backward(fn, arrays, weights, backend, optimized)
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol, err_msg=backend)
        for i, (g, e) in enumerate(zip(grads, expected_grads)):
            if i in skip_grads or arrays[i].dtype.kind != "f":
                continue
            e = np.zeros_like(arrays[i]) if e is None else e
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{backend} grad {i}")


# --- layers and loss modules through the compiled path (float64, torch weights copied) --------


def _copy_to_torch(model, tmodel):
    ours = model.state_dict()
    with torch.no_grad():
        for key, value in tmodel.state_dict().items():
            value.copy_(torch.tensor(ours[key]))


def _check_model(model, tmodel, loss, tloss, x, y, rtol=1e-9):
    _copy_to_torch(model, tmodel)
    fn = ng.compile_grad(model, loss, ng.Spec(x.shape, "float64"), ng.Spec(y.shape, str(y.dtype)))
    value, grads = fn(x, y)
    tvalue = tloss(tmodel(torch.tensor(x)), torch.tensor(y))
    tvalue.backward()
    np.testing.assert_allclose(value, tvalue.item(), rtol=rtol)
    for name, p in tmodel.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=rtol, atol=1e-12)
