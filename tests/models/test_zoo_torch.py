"""Zoo models against inline PyTorch equivalents from copied weights (batch 2, 32x32):
eval-mode logits through ``ng.compile`` and train-mode loss and every parameter gradient
through ``ng.compile_grad``, both on the CPU backend."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import models, nn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

BATCH = 2


def _torch_zoo():
    import torch_zoo  # a sibling helper (tests/conftest.py); it imports torch

    return torch_zoo


tz = _torch_zoo()


def _rel_err(got, expected) -> float:
    expected = np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-12)
    return float(np.abs(np.asarray(got) - expected).max()) / scale


def _copy_weights(model, tmodel, rename=None) -> None:
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    if rename:
        state = rename(state)
    tmodel.load_state_dict(state)


def _as_float64(model, tmodel):
    """Copies of both models in float64 (BatchNorm's int step counter stays int64)."""
    model, tmodel = copy.deepcopy(model), copy.deepcopy(tmodel).double()
    for _, p in [*model.named_parameters(), *model.named_buffers()]:
        if p.data.dtype == np.float32:
            p.data = p.data.astype(np.float64)
    return model, tmodel


def check_agreement(
    model,
    tmodel,
    x_shape,
    rename=None,
    grad_of=None,
    rtol=1e-4,
    grad_dtype="float32",
    gradients=True,
):
    """Logits in eval mode and loss + gradients in train mode agree with PyTorch.
    ``grad_of(name, torch_grads)`` maps a numbagrad parameter name to the torch gradient.
    ``grad_dtype="float64"`` checks gradients in float64: train-mode BatchNorm over 2 values
    per channel (a 1x1 map at batch 2) makes them too ill-conditioned for float32."""
    _copy_weights(model, tmodel, rename)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *x_shape)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)

    logits = ng.compile(model, ng.Spec(x.shape))(x)
    tmodel.eval()
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x)).numpy()
    assert _rel_err(logits, expected) <= rtol, f"logits: {_rel_err(logits, expected):.2e}"
    if not gradients:
        return
    if grad_dtype == "float64":
        model, tmodel = _as_float64(model, tmodel)
        x, rtol = x.astype(np.float64), 1e-8
    spec_x, spec_y = ng.Spec(x.shape, grad_dtype), ng.Spec(y.shape, "int64")
    loss, grads = ng.compile_grad(model, nn.CrossEntropyLoss(), spec_x, spec_y)(x, y)
    tmodel.train()
    tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=rtol)
    tgrads = {k: p.grad.numpy() for k, p in tmodel.named_parameters()}
    assert len(grads) == len(dict(model.named_parameters()))
    worst = max(
        (_rel_err(g, grad_of(k, tgrads) if grad_of else tgrads[k]), k) for k, g in grads.items()
    )
    assert worst[0] <= 10 * rtol, f"worst gradient {worst[1]}: relative error {worst[0]:.2e}"


def test_vgg11_agrees_with_pytorch():
    ng.manual_seed(0)
    model = models.vgg11(10, 3, input_size=32, dropout=0.0, hidden=64)
    tmodel = tz.VGG(tz.VGG_CFGS["vgg11"], 10, 3, dropout=0.0, hidden=64, side=1)
    check_agreement(model, tmodel, (3, 32, 32))


def test_resnet18_logits_agree_with_pytorch():
    ng.manual_seed(0)
    model = models.resnet18(10, 3)
    tmodel = tz.resnet18(num_classes=10, in_channels=3)
    check_agreement(model, tmodel, (3, 32, 32), gradients=False)


@pytest.mark.slow  # compiling the float64 kernels takes ~30 s on a cold cache
def test_resnet18_logits_and_gradients_agree_with_pytorch():
    ng.manual_seed(0)
    model = models.resnet18(10, 3)
    tmodel = tz.resnet18(num_classes=10, in_channels=3)
    check_agreement(model, tmodel, (3, 32, 32), grad_dtype="float64")


def test_alexnet_with_lrn_agrees_with_pytorch():
    ng.manual_seed(0)
    model = models.alexnet(10, 3, input_size=32, dropout=0.0, hidden=64)
    tmodel = tz.AlexNet(10, 3, small=True, dropout=0.0, hidden=64, side=1)
    check_agreement(model, tmodel, (3, 32, 32))


def _googlenet():
    ng.manual_seed(0)
    model = models.googlenet(10, 3, dropout=0.0)
    for _, m in model.named_modules():  # larger weights than torchvision's std 0.01, so
        if isinstance(m, nn.Conv2d):  # the logits are not all ~0
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model, tz.GoogLeNet(10, 3, dropout=0.0)


def test_googlenet_logits_agree_with_pytorch():
    check_agreement(*_googlenet(), (3, 32, 32), gradients=False)


@pytest.mark.slow  # float64 kernels: ~30 s on a cold cache
def test_googlenet_logits_and_gradients_agree_with_pytorch():
    check_agreement(*_googlenet(), (3, 32, 32), grad_dtype="float64")


def test_lenet5_classic_agrees_with_masked_pytorch_lenet():
    ng.manual_seed(0)
    model = models.lenet5_classic()
    table = nn.LENET5_C3_CONNECTIONS
    tmodel = tz.LeNet5Classic(table)

    def rename(state):  # numbagrad keeps C3's 60 connected kernels packed
        full = torch.zeros(16, 6, 5, 5)
        full[torch.from_numpy(table)] = state["C3.weight"]
        return {**state, "C3.weight": full, "mask": tmodel.mask}

    def grad_of(name, tgrads):
        return tgrads[name][table] if name == "C3.weight" else tgrads[name]

    check_agreement(model, tmodel, (1, 32, 32), rename, grad_of)


def test_lstm_classifier_agrees_with_pytorch():
    ng.manual_seed(0)
    model = models.lstm_classifier(8, 16, 10, num_layers=2)
    check_agreement(model, tz.LSTMClassifier(8, 16, 10, num_layers=2), (6, 8))


def test_transformer_encoder_agrees_with_pytorch():
    ng.manual_seed(0)
    model = models.transformer_encoder(8, 6, 16, 4, 2, 32, 10, dropout=0.0)
    tmodel = tz.TransformerClassifier(8, 6, 16, 4, 2, 32, 10)
    check_agreement(model, tmodel, (6, 8))
