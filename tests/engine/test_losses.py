"""Losses (issue 4) against PyTorch: op values and gradients for every reduction on the
interp and (optimized, fused) CPU backends, target gradients, the clamped BCE log, argument
checks, and the loss modules through compile_grad (torch weights copied)."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.errors import OpError, ShapeError
from numbagrad.graph import Builder

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch

# The torch-comparison harness, shared by the activation, loss and dropout tests.
import _op_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

_rng, forward_backward, check_against_torch = _h._rng, _h.forward_backward, _h.check_against_torch
_check_model = _h._check_model


# --- loss ops ---------------------------------------------------------------------------------

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


# --- loss modules through the compiled path (float64, torch weights copied) -------------------


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
