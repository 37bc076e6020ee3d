"""Class weights and ignored targets of nll_loss and cross_entropy, against PyTorch: values and
gradients for every reduction on the interp and (optimized) CPU backends, with the ignored
index outside the classes (torch's -100) and inside them (a padding class), label smoothing
on top, the loss modules through compile_grad, and the argument checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn
from numbagrad.errors import ClassIndexError, OpError, ShapeError
from numbagrad.graph import Builder

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = pytest.mark.torch

import _op_harness as _h  # noqa: E402  (a sibling helper: tests/conftest.py)

N, C = 6, 4
LOGITS = _h._rng(31).standard_normal((N, C)) * 2
LOGITS3 = _h._rng(32).standard_normal((N, C, 3))
LOG_P = TF.log_softmax(torch.tensor(LOGITS), 1).numpy()
TARGETS = np.array([0, 3, -100, 2, 3, 1])  # -100: torch's default ignored index
TARGETS_IN = np.array([0, 3, 1, 2, 3, 1])  # 3 ignored as a padding class
TARGETS3 = _h._rng(33).integers(0, C, (N, 3))
TARGETS3[1, 2] = TARGETS3[4, 0] = -1
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25])

# (id, numbagrad loss, torch loss name, options, arrays)
CASES = []
for red in ("none", "mean", "sum"):
    CASES += [
        (f"nll_weight_{red}", "nll_loss", red, {"weight": WEIGHT}, [LOG_P, TARGETS_IN]),
        (f"nll_ignore_{red}", "nll_loss", red, {"ignore_index": -100}, [LOG_P, TARGETS]),
        (
            f"nll_weight_ignore_inside_{red}",
            "nll_loss",
            red,
            {"weight": WEIGHT, "ignore_index": 3},
            [LOG_P, TARGETS_IN],
        ),
        (
            f"ce_weight_ignore_smooth_{red}",
            "cross_entropy",
            red,
            {"weight": WEIGHT, "ignore_index": -100, "label_smoothing": 0.2},
            [LOGITS, TARGETS],
        ),
        (
            f"ce_3d_ignore_smooth_{red}",
            "cross_entropy",
            red,
            {"ignore_index": -1, "label_smoothing": 0.1},
            [LOGITS3, TARGETS3],
        ),
    ]
CASES += [
    ("ce_weight_mean", "cross_entropy", "mean", {"weight": WEIGHT}, [LOGITS, TARGETS_IN]),
    ("ce_ignore_inside_mean", "cross_entropy", "mean", {"ignore_index": 3}, [LOGITS, TARGETS_IN]),
]


def _torch_options(options: dict) -> dict:
    weight = options.get("weight")
    return {**options, **({} if weight is None else {"weight": torch.tensor(weight)})}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_weighted_and_ignored_targets_match_torch(case):
    _, name, reduction, options, arrays = case
    ours = getattr(F, name)
    theirs = getattr(TF, name)

    def fn(x, t):
        return ours(x, t, reduction, **options)

    def torch_fn(x, t):
        return theirs(x, t, reduction=reduction, **_torch_options(options))

    _h.check_against_torch(fn, torch_fn, arrays, rtol=1e-8)


def test_plain_cross_entropy_stays_fused_and_options_compose():
    b = Builder()
    x, t = b.leaf("param", (N, C), "float32", "x"), b.leaf("input", (N,), "int64", "t")
    assert F.cross_entropy(x, t).node.op == "cross_entropy"
    assert F.cross_entropy(x, t, weight=WEIGHT).node.op != "cross_entropy"
    assert F.cross_entropy(x, t, ignore_index=-100).node.op != "cross_entropy"


@pytest.mark.parametrize(
    "loss, tloss",
    [
        (
            nn.CrossEntropyLoss(weight=[1.0, 0.5, 2.0], ignore_index=-100),
            torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)),
        ),
        (
            nn.NLLLoss("sum", weight=[1.0, 0.5, 2.0], ignore_index=0),
            torch.nn.NLLLoss(
                weight=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64),
                ignore_index=0,
                reduction="sum",
            ),
        ),
    ],
    ids=["ce", "nll"],
)
def test_loss_modules_with_weight_and_ignore_index_train_like_torch(loss, tloss):
    ng.manual_seed(3)
    layers, tlayers = [nn.Linear(4, 3, dtype="float64")], [torch.nn.Linear(4, 3).double()]
    if isinstance(loss, nn.NLLLoss):
        layers.append(nn.LogSoftmax())
        tlayers.append(torch.nn.LogSoftmax(-1))
    x = _h._rng(34).standard_normal((5, 4))
    y = np.array([2, -100, 0, 1, 0]) if loss.ignore_index == -100 else np.array([2, 1, 0, 1, 0])
    _h._check_model(nn.Sequential(*layers), torch.nn.Sequential(*tlayers), loss, tloss, x, y)
    assert "ignore_index" in repr(loss) and "weight" in repr(loss)


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_targets_outside_the_classes_other_than_the_ignored_one_are_refused(backend):
    loss = nn.CrossEntropyLoss(ignore_index=-100)
    fn = ng.compile_grad(
        nn.Linear(4, 3), loss, ng.Spec((3, 4)), ng.Spec((3,), "int64"), backend=backend
    )
    x = np.ones((3, 4), np.float32)
    value, _ = fn(x, np.array([0, -100, 2]))
    assert np.isfinite(value)
    message = "cross_entropy in layer 'CrossEntropyLoss': target -1 is not a class index in "
    message += "[0, 3) (3 classes) nor the ignore_index -100"
    with pytest.raises(ClassIndexError, match=re.escape(message)):
        fn(x, np.array([0, -1, 2]))


def test_weight_and_ignore_index_arguments_are_checked():
    b = Builder()
    x, t = b.leaf("param", (N, C), "float32", "x"), b.leaf("input", (N,), "int64", "t")
    with pytest.raises(ShapeError, match=re.escape("nll_loss: weight must have shape (4,)")):
        F.nll_loss(x, t, weight=[1.0, 2.0])
    with pytest.raises(OpError, match="cross_entropy: weight must be finite"):
        F.cross_entropy(x, t, weight=[1.0, np.nan, 1.0, 1.0])
    with pytest.raises(OpError, match="ignore_index must be an integer or None, got 1.5"):
        F.cross_entropy(x, t, ignore_index=1.5)
    with pytest.raises(OpError, match="nll_loss: reduction must be one of"):
        F.nll_loss(x, t, "avg", ignore_index=0)
