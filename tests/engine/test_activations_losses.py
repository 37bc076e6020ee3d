"""Activations, losses and dropout (issue 4) against PyTorch: op values and gradients on the
interp and (optimized, fused) CPU backends, layers and loss modules through compile_grad, and
dropout's train/eval behaviour and counter-based masks."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.backends import get_backend
from numbagrad.engine import backward
from numbagrad.errors import NumbagradError, OpError, ShapeError
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.ops.random import dropout_mask, keep_scale
from numbagrad.graph.passes import fuse_elementwise
from numbagrad.graph.pipeline import optimize_training

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch


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


def _away(shape, seed):
    r = _rng(seed)
    return r.uniform(0.2, 1.5, shape) * r.choice([-1.0, 1.0], shape)


# --- activation ops ---------------------------------------------------------------------------

X = _away((2, 3, 4, 3), 1)
ACTIVATIONS = [
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), [X]),
    ("leaky_relu_default", F.leaky_relu, TF.leaky_relu, [X]),
    ("elu", lambda x: F.elu(x, 1.3), lambda x: TF.elu(x, 1.3), [X]),
    ("silu", F.silu, TF.silu, [X * 3]),
    ("softplus", F.softplus, TF.softplus, [X * 3]),
    (
        "softplus_beta_threshold",
        lambda x: F.softplus(x, 2.0, 1.5),
        lambda x: TF.softplus(x, 2.0, 1.5),
        [X * 3],
    ),
    (
        "scaled_tanh",
        F.scaled_tanh,
        lambda x: 1.7159 * torch.tanh(2.0 * x / 3.0),
        [X * 2],
    ),
    ("prelu_channels", F.prelu, TF.prelu, [X, np.array([0.1, -0.3, 0.7])]),
    ("prelu_single", F.prelu, TF.prelu, [X, np.array([0.25])]),
    ("prelu_2d", F.prelu, TF.prelu, [_away((4, 3), 2), np.array([0.1, 0.2, 0.3])]),
]


@pytest.mark.parametrize("case", ACTIVATIONS, ids=[c[0] for c in ACTIVATIONS])
def test_activation_matches_torch(case):
    _, fn, torch_fn, arrays = case
    check_against_torch(fn, torch_fn, arrays)


A = _rng(3).standard_normal((3, 1, 4))
B = _rng(4).standard_normal((2, 1))
TIE_A, TIE_B = np.array([1.0, 2.0, -3.0, 0.5]), np.array([1.0, 0.0, 5.0, 0.5])
POS = _rng(5).uniform(0.3, 2.0, (3, 4))
WITH_ZEROS = np.array([[0.0, 0.5, 1.2, 0.0], [2.0, 0.0, 0.1, 0.7], [0.3, 0.3, 0.0, 1.0]])
ELEMENTWISE = [
    ("maximum", F.maximum, torch.maximum, [A, B]),
    ("minimum", F.minimum, torch.minimum, [A, B]),
    ("maximum_ties", F.maximum, torch.maximum, [TIE_A, TIE_B]),
    ("minimum_ties", F.minimum, torch.minimum, [TIE_A, TIE_B]),
    ("select", F.select, lambda c, a, b: torch.where(c > 0, a, b), [B, A, A[0, 0] * 2]),
    ("equal", F.equal, lambda a, b: (a == b).double(), [TIE_A, TIE_B]),
    ("pow_3", lambda x: F.pow(x, 3), lambda x: x**3, [A]),
    ("pow_2", lambda x: F.pow(x, 2), lambda x: x**2, [A]),
    ("pow_frac", lambda x: F.pow(x, -1.5), lambda x: x**-1.5, [POS]),
    ("pow_0", lambda x: F.pow(x, 0), lambda x: x**0, [A]),
    ("xlogy", F.xlogy, torch.xlogy, [WITH_ZEROS, POS]),
]


@pytest.mark.parametrize("case", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_op_matches_torch(case):
    _, fn, torch_fn, arrays = case
    check_against_torch(fn, torch_fn, arrays)


def test_attribute_templates_fuse_into_one_kernel():
    b = Builder()
    x = b.leaf("input", (3, 4), "float32", "x")
    y = F.softplus(F.leaky_relu(x * 2.0 + 1.0, 0.125), beta=0.5, threshold=3.0)
    graph = fuse_elementwise(b.build([F.scaled_tanh(y)]))
    (node,) = graph.ops()
    assert node.op == "fused_elementwise"
    assert "0.125" in node.attrs["scalar"] and "1.7159" in node.attrs["scalar"]
    exe = get_backend("cpu").compile(graph)
    xs = _rng(6).standard_normal((3, 4)).astype(np.float32)
    np.copyto(exe.buffers[x.id], xs)
    exe.run()
    tx = torch.tensor(xs)
    expected = 1.7159 * torch.tanh(TF.softplus(TF.leaky_relu(tx * 2 + 1, 0.125), 0.5, 3.0) / 1.5)
    np.testing.assert_allclose(exe.output_arrays()[0], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_attributes_must_be_finite_numbers():
    b = Builder()
    x = b.leaf("input", (3,), "float32", "x")
    with pytest.raises(OpError, match="finite"):
        F.softplus(x, threshold=float("inf"))
    with pytest.raises(OpError, match="number"):
        F.leaky_relu(x, "steep")


# --- losses -----------------------------------------------------------------------------------

N, C = 4, 5
LOGITS = _rng(7).standard_normal((N, C)) * 2
LOGITS3 = _rng(8).standard_normal((N, C, 3))
CLASSES = np.array([0, 3, 4, 3])
CLASSES3 = _rng(9).integers(0, C, (N, 3))
PRED, TARGET = _rng(10).standard_normal((N, 3)), _rng(11).standard_normal((N, 3))
TARGET[0, 0] = PRED[0, 0]  # a tie: |d| has gradient 0 there, in both
PROBS = np.array([[0.0, 0.3, 1.0], [0.9, 0.5, 0.02], [0.2, 1e-50, 0.7], [0.6, 0.4, 0.99]])
LABELS = np.array([[0.0, 1.0, 0.0], [1.0, 0.5, 0.0], [0.3, 1.0, 1.0], [0.0, 1.0, 0.2]])
SAT_LOGITS = np.array([[0.0, -30.0, 30.0], [1.5, -0.2, 0.0], [4.0, -4.0, 0.3], [0.0, 2.0, -1.0]])
X1, X2 = _rng(12).standard_normal(6), _rng(13).standard_normal(6)
SIGNS = np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
LOG_P = TF.log_softmax(torch.tensor(LOGITS), 1).numpy()
Q = np.array(
    [[0.2, 0.0, 0.3, 0.5, 0.0], [0.1] * 5, [0.0, 0.0, 1.0, 0.0, 0.0], [0.3, 0.3, 0.1, 0.2, 0.1]]
)
Q[1] = 0.2

LOSSES = []
for red in ("none", "mean", "sum"):
    LOSSES += [
        (f"mse_{red}", lambda a, b, r=red: F.mse_loss(a, b, r), "mse_loss", red, [PRED, TARGET]),
        (f"l1_{red}", lambda a, b, r=red: F.l1_loss(a, b, r), "l1_loss", red, [PRED, TARGET]),
        (
            f"bce_{red}",
            lambda p, y, r=red: F.binary_cross_entropy(p, y, r),
            "binary_cross_entropy",
            red,
            [PROBS, LABELS],
        ),
        (
            f"bce_logits_{red}",
            lambda x, y, r=red: F.binary_cross_entropy_with_logits(x, y, r),
            "binary_cross_entropy_with_logits",
            red,
            [SAT_LOGITS, LABELS],
        ),
        (f"nll_{red}", lambda x, t, r=red: F.nll_loss(x, t, r), "nll_loss", red, [LOG_P, CLASSES]),
        (
            f"nll_3d_{red}",
            lambda x, t, r=red: F.nll_loss(x, t, r),
            "nll_loss",
            red,
            [LOGITS3, CLASSES3],
        ),
        (
            f"ce_{red}",
            lambda x, t, r=red: F.cross_entropy(x, t, r),
            "cross_entropy",
            red,
            [LOGITS, CLASSES],
        ),
        (
            f"ce_smooth_{red}",
            lambda x, t, r=red: F.cross_entropy(x, t, r, label_smoothing=0.1),
            ("cross_entropy", {"label_smoothing": 0.1}),
            red,
            [LOGITS, CLASSES],
        ),
        (
            f"ce_3d_smooth_{red}",
            lambda x, t, r=red: F.cross_entropy(x, t, r, label_smoothing=0.25),
            ("cross_entropy", {"label_smoothing": 0.25}),
            red,
            [LOGITS3, CLASSES3],
        ),
        (
            f"margin_ranking_{red}",
            lambda a, b, y, r=red: F.margin_ranking_loss(a, b, y, 0.3, r),
            ("margin_ranking_loss", {"margin": 0.3}),
            red,
            [X1, X2, SIGNS],
        ),
    ]
for red in ("none", "mean", "sum", "batchmean"):
    LOSSES += [
        (
            f"kl_div_{red}",
            lambda x, t, r=red: F.kl_div(x, t, r),
            "kl_div",
            red,
            [LOG_P, Q],
        ),
        (
            f"kl_div_log_target_{red}",
            lambda x, t, r=red: F.kl_div(x, t, r, log_target=True),
            ("kl_div", {"log_target": True}),
            red,
            [LOG_P, np.log(Q + 0.05)],
        ),
    ]


def _torch_loss(spec, reduction):
    name, kwargs = spec if isinstance(spec, tuple) else (spec, {})
    return lambda *ts: getattr(TF, name)(*ts, reduction=reduction, **kwargs)


@pytest.mark.parametrize("case", LOSSES, ids=[c[0] for c in LOSSES])
def test_loss_matches_torch(case):
    case_id, fn, spec, reduction, arrays = case
    # Target gradients checked in the tests below: KL's where the target is 0 (not finite),
    # BCE's where log p is clamped (torch differentiates the unclamped log there).
    skip = (1,) if case_id.startswith("kl_div_") and "log_target" not in case_id else ()
    skip = (1,) if case_id.startswith("bce_") and "logits" not in case_id else skip
    check_against_torch(fn, _torch_loss(spec, reduction), arrays, rtol=1e-8, skip_grads=skip)


def test_kl_div_target_gradient_where_positive():
    q = Q + 0.01
    check_against_torch(
        lambda x, t: F.kl_div(x, t, "batchmean"), _torch_loss("kl_div", "batchmean"), [LOG_P, q]
    )


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_bce_target_gradient_away_from_the_clamp(reduction):
    p = _rng(14).uniform(0.05, 0.95, (3, 4))
    y = _rng(15).uniform(0, 1, (3, 4))
    fn = lambda a, b: F.binary_cross_entropy(a, b, reduction)  # noqa: E731
    check_against_torch(fn, _torch_loss("binary_cross_entropy", reduction), [p, y])


def test_bce_is_finite_where_torch_clamps_the_log():
    # Where p is 0 or 1 the loss is clamped at 100 per element (as torch); the gradient with
    # respect to p is torch's (p - y) / max(p (1 - p), 1e-12), and with respect to y the
    # derivative of the clamped loss (torch: +-inf).
    p, y = np.array([0.0, 1.0, 0.5]), np.array([0.5, 0.5, 0.5])
    out, (gp, gy) = forward_backward(
        lambda a, b: F.binary_cross_entropy(a, b, "none"), [p, y], np.ones(3)
    )
    np.testing.assert_allclose(out, [50.0, 50.0, np.log(2)])
    np.testing.assert_allclose(gp, [-0.5e12, 0.5e12, 0.0])
    np.testing.assert_allclose(gy, [100.0, -100.0, 0.0])


def test_default_cross_entropy_stays_the_fused_op():
    b = Builder()
    x, t = b.leaf("param", (N, C), "float32", "x"), b.leaf("input", (N,), "int64", "t")
    assert F.cross_entropy(x, t).node.op == "cross_entropy"
    assert F.cross_entropy(x, t, label_smoothing=0.1).node.op != "cross_entropy"
    assert F.mse_loss(x, x).node.op == "mse_loss"


def test_loss_arguments_are_checked():
    b = Builder()
    x, t = b.leaf("param", (N, C), "float32", "x"), b.leaf("input", (N,), "int64", "t")
    with pytest.raises(OpError, match="reduction"):
        F.cross_entropy(x, t, reduction="avg")
    with pytest.raises(OpError, match="batchmean"):
        F.kl_div(x, x, reduction="bogus")
    with pytest.raises(OpError, match="reduction"):
        F.mse_loss(x, x, reduction="batchmean")
    with pytest.raises(ShapeError, match="targets"):
        F.nll_loss(x, b.leaf("input", (N, 2), "int64", "t2"))
    with pytest.raises(ShapeError, match="differ"):
        F.binary_cross_entropy(x, b.leaf("input", (N,), "float32", "y"))


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


def test_activation_layers_train_like_torch():
    ng.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, dtype="float64"),
        nn.PReLU(3, dtype="float64"),
        nn.ELU(0.8),
        nn.Flatten(),
        nn.Linear(12, 6, dtype="float64"),
        nn.SiLU(),
        nn.Linear(6, 5, dtype="float64"),
        nn.Softplus(2.0, 1.0),
        nn.LeakyReLU(0.3),
        nn.PReLU(dtype="float64"),
        nn.LogSoftmax(1),
    )
    tn = torch.nn
    tmodel = tn.Sequential(
        tn.Conv2d(2, 3, 3),
        tn.PReLU(3),
        tn.ELU(0.8),
        tn.Flatten(),
        tn.Linear(12, 6),
        tn.SiLU(),
        tn.Linear(6, 5),
        tn.Softplus(2.0, 1.0),
        tn.LeakyReLU(0.3),
        tn.PReLU(),
        tn.LogSoftmax(1),
    ).double()
    x = _rng(20).standard_normal((3, 2, 4, 4))
    y = np.array([1, 4, 0])
    _check_model(model, tmodel, nn.NLLLoss(), tn.NLLLoss(), x, y)


class _Scaled(torch.nn.Module):
    def forward(self, x):
        return 1.7159 * torch.tanh(2.0 * x / 3.0)


LOSS_MODULES = [
    (
        "ce_smooth_sum",
        nn.CrossEntropyLoss("sum", 0.2),
        torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.2),
        "cls",
    ),
    ("mse_sum", nn.MSELoss("sum"), torch.nn.MSELoss(reduction="sum"), "real"),
    ("l1", nn.L1Loss(), torch.nn.L1Loss(), "real"),
    ("bce_logits", nn.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss(), "prob"),
    ("bce_sum", nn.BCELoss("sum"), torch.nn.BCELoss(reduction="sum"), "prob_sigmoid"),
    ("kl_batchmean", nn.KLDivLoss("batchmean"), torch.nn.KLDivLoss(reduction="batchmean"), "dist"),
]


@pytest.mark.parametrize("case", LOSS_MODULES, ids=[c[0] for c in LOSS_MODULES])
def test_loss_modules_train_like_torch(case):
    _, loss, tloss, kind = case
    ng.manual_seed(2)
    layers = [nn.Linear(4, 3, dtype="float64"), nn.ScaledTanh()]
    tlayers = [torch.nn.Linear(4, 3).double(), _Scaled()]
    if kind == "prob_sigmoid":
        layers.append(nn.Sigmoid())
        tlayers.append(torch.nn.Sigmoid())
    if kind == "dist":
        layers.append(nn.LogSoftmax())
        tlayers.append(torch.nn.LogSoftmax(-1))
    x = _rng(21).standard_normal((5, 4))
    r = _rng(22)
    y = {
        "cls": r.integers(0, 3, 5),
        "real": r.standard_normal((5, 3)),
        "prob": r.uniform(0, 1, (5, 3)),
        "prob_sigmoid": r.uniform(0, 1, (5, 3)),
        "dist": r.dirichlet(np.ones(3), 5),
    }[kind]
    _check_model(nn.Sequential(*layers), torch.nn.Sequential(*tlayers), loss, tloss, x, y)


def test_softmax_layer_and_aliases():
    assert nn.LeCunTanh is nn.ScaledTanh and nn.MAELoss is nn.L1Loss
    assert "slope=0.666667" in repr(nn.ScaledTanh()) and "p=0.3" in repr(nn.Dropout(0.3))
    graph = ng.trace(nn.Softmax(0), ng.Spec((2, 3)))
    assert [n.op for n in graph.ops()] == ["softmax"] and graph.ops()[0].attrs["axis"] == 0


# --- dropout ----------------------------------------------------------------------------------


class _DropNet(nn.Module):
    def __init__(self, p=0.5, seed=7, n=8):
        super().__init__()
        self.fc1 = nn.Linear(4, n, dtype="float64")
        self.drop = nn.Dropout(p, seed=seed)
        self.fc2 = nn.Linear(n, 2, dtype="float64")

    def forward(self, x):
        return self.fc2(self.drop(self.fc1(x)))


def _dropout_graph(shape, p, seed, dtype="float32"):
    """identity -> dropout, as a model (no parameters: trace it directly)."""
    model = nn.Dropout(p, seed=seed)
    return ng.trace(model.train(), ng.Spec(shape, dtype)), model


def test_eval_graph_has_no_dropout_and_train_graph_counts_steps():
    model = _DropNet()
    eval_graph = ng.trace(model.eval(), ng.Spec((2, 4), "float64"))
    assert "dropout" not in {n.op for n in eval_graph.ops()}
    assert not eval_graph.leaves("state") and not eval_graph.updates
    compiled = ng.compile(model.train(), ng.Spec((2, 4), "float64"))  # compile traces in eval
    assert "dropout" not in {n.op for n in compiled.forward_graph.ops()}
    x = _rng(30).standard_normal((2, 4))
    np.testing.assert_array_equal(compiled(x), compiled(x))

    train_graph = ng.trace(model.train(), ng.Spec((2, 4), "float64"))
    (drop,) = [n for n in train_graph.ops() if n.op == "dropout"]
    (counter,) = train_graph.leaves("state")
    assert counter.name == "rng.step" and counter.dtype == "float64"
    assert [(s, train_graph[v].inputs[0]) for s, v in train_graph.updates] == [
        (counter.id, counter.id)
    ]
    assert drop.inputs[1] == train_graph.updates[0][1]  # this run's step: counter + 1
    assert drop.attrs["seed"] == 7 and drop.attrs["p"] == 0.5


def test_each_dropout_of_a_trace_draws_its_own_mask():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5, seed=1)
            self.other = nn.Dropout(0.5, seed=1)

        def forward(self, x):
            return self.other(self.drop(self.drop(x)))

    graph = ng.trace(Twice(), ng.Spec((4, 4)))
    seeds = [n.attrs["seed"] for n in graph.ops() if n.op == "dropout"]
    assert seeds[0] == 1 and len(set(seeds)) == 3
    assert len(graph.leaves("state")) == 1  # one step counter per trace


def test_dropout_masks_change_every_step_and_replay_with_the_seed():
    graph, _ = _dropout_graph((50, 40), 0.3, seed=123)
    x = np.ones((50, 40), np.float32)

    def outputs(exe, steps):
        result = []
        for _ in range(steps):
            np.copyto(exe.buffers[graph.inputs[0]], x)
            exe.run()
            result.append(exe.output_arrays()[0].copy())
        return result

    cpu = get_backend("cpu")
    first, second = outputs(cpu.compile(graph), 3), outputs(cpu.compile(graph), 3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # same seed, fresh counter: same masks
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    for step, out in enumerate(first, start=1):
        keep = dropout_mask(x.shape, 0.3, 123, step)
        np.testing.assert_array_equal(out != 0, keep)
        np.testing.assert_array_equal(out[keep], np.float32(1 / 0.7))
    other, _ = _dropout_graph((50, 40), 0.3, seed=124)
    exe = cpu.compile(other)
    np.copyto(exe.buffers[other.inputs[0]], x)
    exe.run()
    assert not np.array_equal(exe.output_arrays()[0], first[0])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_p(p):
    masks = np.stack([dropout_mask((20000,), p, seed=5, step=s) for s in (1, 2)])
    assert abs((~masks).mean() - p) < 0.01
    # Neighbouring elements and consecutive steps are uncorrelated.
    a, b = masks.astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.03


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 7), (40000,)])  # the second runs the parallel kernel
def test_dropout_kernel_is_bit_exact_with_the_reference(shape, dtype):
    graph, _ = _dropout_graph(shape, 0.25, seed=2**62 + 12345, dtype=dtype)
    x = _rng(31).standard_normal(shape).astype(dtype)
    results = []
    for backend in ("interp", "cpu"):
        exe = get_backend(backend).compile(graph)
        for _ in range(2):  # step 2
            np.copyto(exe.buffers[graph.inputs[0]], x)
            exe.run()
        results.append(exe.output_arrays()[0].copy())
    np.testing.assert_array_equal(results[0], results[1])
    keep = dropout_mask(shape, 0.25, 2**62 + 12345, 2)
    scale = np.asarray(keep_scale(0.25), dtype)
    np.testing.assert_array_equal(results[1], np.where(keep, x * scale, 0))


def test_dropout_gradient_reuses_the_step_mask():
    ng.manual_seed(3)
    model = _DropNet(p=0.4, seed=99)
    tfc1, tfc2 = torch.nn.Linear(4, 8).double(), torch.nn.Linear(8, 2).double()
    with torch.no_grad():
        for t, ours in ((tfc1, model.fc1), (tfc2, model.fc2)):
            t.weight.copy_(torch.tensor(ours.weight.data))
            t.bias.copy_(torch.tensor(ours.bias.data))
    fn = ng.compile_grad(
        model, nn.MSELoss(), ng.Spec((3, 4), "float64"), ng.Spec((3, 2), "float64")
    )
    x, y = _rng(32).standard_normal((3, 4)), _rng(33).standard_normal((3, 2))
    for step in (1, 2, 3):
        loss, grads = fn(x, y)
        mask = torch.tensor(dropout_mask((3, 8), 0.4, 99, step) / 0.6)
        for t in (tfc1, tfc2):
            t.zero_grad()
        tloss = TF.mse_loss(tfc2(tfc1(torch.tensor(x)) * mask), torch.tensor(y))
        tloss.backward()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
        np.testing.assert_allclose(grads["fc1.weight"], tfc1.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(grads["fc2.weight"], tfc2.weight.grad.numpy(), rtol=1e-10)


def test_dropout_edge_probabilities_and_checks():
    b = Builder()
    x = b.leaf("input", (4, 5), "float32", "x")
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.5, training=False) is x
    step = b.const(1.0, "float64")
    exe = get_backend("cpu").compile(b.build([O.dropout(x, step, p=1.0)]))
    np.copyto(exe.buffers[x.id], np.ones((4, 5)))
    exe.run()
    np.testing.assert_array_equal(exe.output_arrays()[0], 0.0)
    with pytest.raises(OpError, match="probability"):
        O.dropout(x, step, p=1.5)
    with pytest.raises(OpError, match="seed"):
        O.dropout(x, step, seed=-1)
    with pytest.raises(NumbagradError, match="float64"):
        O.dropout(x, b.const(1.0, "float32"))
    with pytest.raises(NumbagradError, match="p must be"):
        nn.Dropout(2.0)
