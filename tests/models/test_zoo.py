"""The model zoo: parameter counts (no compilation), forward shapes and one training step
through the compiled CPU path, agreement with PyTorch from copied weights, LeNet-5's
connection table, and the tied autoencoder's one shared parameter."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import models, nn, optim

BATCH = 2


def _torch_zoo():
    """The inline torchvision-style definitions (tests/models/torch_zoo.py)."""
    pytest.importorskip("torch")
    import torch_zoo  # a sibling helper (tests/conftest.py); it imports torch

    return torch_zoo


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameter counts at 3 channels and 1000 classes ---------------------------------------


@pytest.mark.parametrize(
    "build, expected",
    [
        (models.vgg16, 138_357_544),
        (models.vgg11, 132_863_336),
        (models.resnet18, 11_689_512),
        (models.resnet34, 21_797_672),
        (models.resnet50, 25_557_032),
        (models.alexnet, 61_100_840),
        (models.googlenet, 6_624_904),
    ],
)
def test_parameter_counts_of_the_published_models(build, expected):
    assert build(num_classes=1000, in_channels=3).num_parameters() == expected


@pytest.mark.torch
def test_alexnet_and_googlenet_counts_equal_the_torchvision_definitions():
    tz = _torch_zoo()
    assert models.alexnet().num_parameters() == _count(tz.AlexNet(lrn=False))
    assert models.googlenet().num_parameters() == _count(tz.GoogLeNet())
    with_aux = models.googlenet(aux_logits=True).num_parameters()
    assert with_aux == _count(tz.GoogLeNet(aux_logits=True)) == 13_004_888
    assert models.resnet50().num_parameters() == _count(tz.resnet50())


def test_lenet5_classic_counts_60000_up_to_f6_plus_a_linear_output():
    m = models.lenet5_classic()
    per_layer = {n: getattr(m, n).num_parameters() for n in ("C1", "S2", "C3", "S4", "C5", "F6")}
    assert per_layer == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert sum(per_layer.values()) == 60_000
    assert m.output.num_parameters() == 850 and m.num_parameters() == 60_850


def test_lenet5_c3_connection_table_is_table_one_of_the_paper():
    table = nn.LENET5_C3_CONNECTIONS  # (16 C3 maps, 6 S2 maps)
    # Table I, one row per S2 map: the C3 maps it feeds
    rows = [
        [0, 4, 5, 6, 9, 10, 11, 12, 14, 15],
        [0, 1, 5, 6, 7, 10, 11, 12, 13, 15],
        [0, 1, 2, 6, 7, 8, 11, 13, 14, 15],
        [1, 2, 3, 6, 7, 8, 9, 12, 14, 15],
        [2, 3, 4, 7, 8, 9, 10, 12, 13, 15],
        [3, 4, 5, 8, 9, 10, 11, 13, 14, 15],
    ]
    for s2_map, c3_maps in enumerate(rows):
        assert np.flatnonzero(table[:, s2_map]).tolist() == c3_maps
    assert table.sum() == 60


# --- every zoo model: forward shape and one training step on the CPU backend --------------

CLASSIFIERS = {
    "lenet5_classic": (lambda: models.lenet5_classic(), (1, 32, 32)),
    "alexnet": (lambda: models.alexnet(10, 1, 32, hidden=64), (1, 32, 32)),
    "vgg11": (lambda: models.vgg11(10, 3, 32, hidden=64), (3, 32, 32)),
    "vgg16": (lambda: models.vgg16(10, 1, 32, hidden=64), (1, 32, 32)),
    "googlenet": (lambda: models.googlenet(10, 3), (3, 32, 32)),
    "resnet18": (lambda: models.resnet18(10, 1), (1, 32, 32)),
    "resnet34": (lambda: models.resnet34(10, 3), (3, 32, 32)),
    "resnet50": (lambda: models.resnet50(10, 1), (1, 32, 32)),
}


def _batch(shape, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    return x, rng.integers(0, classes, BATCH).astype(np.int64)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_zoo_classifier_forward_shape(name):
    build, shape = CLASSIFIERS[name]
    ng.manual_seed(0)
    x, _ = _batch(shape)
    logits = ng.compile(build(), ng.Spec(x.shape))(x)
    assert logits.shape == (BATCH, 10) and np.isfinite(logits).all()


def _losses_of_steps(model, loss, x, y, lr=0.01):
    """The loss before and after one plain SGD step on the batch (x, y)."""
    step = ng.compile_training(
        model, loss, optim.SGD(lr), inputs=ng.Spec(x.shape), targets=ng.Spec(y.shape, str(y.dtype))
    )
    return [step(x, y) for _ in range(2)]


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_zoo_classifier_training_step_lowers_the_loss(name):
    build, shape = CLASSIFIERS[name]
    ng.manual_seed(0)
    x, y = _batch(shape)
    losses = _losses_of_steps(build(), nn.CrossEntropyLoss(), x, y)
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


@pytest.mark.parametrize(
    "build, shape, out_shape",
    [
        (lambda: models.autoencoder((64, 16, 4)), (64,), (64,)),
        (lambda: models.autoencoder((64, 16, 4), tied=True), (64,), (64,)),
        (lambda: models.conv_autoencoder(1, (4, 8)), (1, 8, 8), (1, 8, 8)),
        (lambda: models.fcn(3, 1, width=4), (1, 8, 8), (3, 8, 8)),
        (lambda: models.lstm_classifier(8, 16, 10), (6, 8), (10,)),
        (lambda: models.transformer_encoder(8, 6, 16, 4, 2, 32, 10), (6, 8), (10,)),
    ],
    ids=["autoencoder", "tied-autoencoder", "conv-autoencoder", "fcn", "lstm", "transformer"],
)
def test_other_zoo_models_forward_and_train(build, shape, out_shape):
    ng.manual_seed(0)
    model = build()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (BATCH, *shape)).astype(np.float32)
    out = ng.compile(model, ng.Spec(x.shape))(x)
    assert out.shape == (BATCH, *out_shape)
    if out_shape == shape:  # autoencoders reconstruct their input
        losses = _losses_of_steps(model, nn.MSELoss(), x, x, lr=0.1)
    else:  # per-pixel classes
        labels = rng.integers(0, out_shape[0], (BATCH, *out_shape[1:])).astype(np.int64)
        losses = _losses_of_steps(model, nn.CrossEntropyLoss(), x, labels, lr=0.1)
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


# --- the tied autoencoder shares one parameter --------------------------------------------


def test_tied_autoencoder_shares_one_parameter():
    ng.manual_seed(0)
    model = models.autoencoder((12, 6, 3), tied=True)
    enc0, dec_last = model.encoder[0], model.decoder[2]
    assert dec_last.weight is enc0.weight
    names = [n for n, _ in model.named_parameters()]
    assert "encoder.0.weight" in names and not any(n.endswith("decoder.2.weight") for n in names)
    assert model.num_parameters() == 12 * 6 + 6 + 6 * 3 + 3 + 6 + 12  # W1, b1, W2, b2, b2', b1'
    assert "decoder.2.weight" not in model.state_dict()

    graph = ng.trace(model, ng.Spec((BATCH, 12)))
    leaves = [n for n in graph.leaves("param") if n.name == "encoder.0.weight"]
    assert len(leaves) == 1  # one leaf ...
    users = [graph[u] for u in graph.users()[leaves[0].id]]
    assert sorted(u.op for u in users) == ["matmul", "transpose"]  # ... used twice, transposed

    x = np.random.default_rng(0).uniform(0, 1, (BATCH, 12)).astype(np.float32)
    spec = ng.Spec(x.shape)
    loss, grads = ng.compile_grad(model, nn.MSELoss(), spec, spec)(x, x)
    assert set(grads) == set(names)  # one gradient per parameter, none for the decoder copy
    before = {k: v.copy() for k, v in model.state_dict().items()}
    step = ng.compile_training(model, nn.MSELoss(), optim.SGD(0.5), inputs=spec, targets=spec)
    step(x, x)
    after = model.state_dict()
    for name in names:  # one plain SGD update per parameter, with the summed gradient
        np.testing.assert_allclose(after[name], before[name] - 0.5 * grads[name], atol=1e-6)


@pytest.mark.torch
def test_tied_autoencoder_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    ng.manual_seed(1)
    model = models.autoencoder((10, 4), tied=True)
    x = np.random.default_rng(2).uniform(0, 1, (BATCH, 10)).astype(np.float32)
    spec = ng.Spec(x.shape)
    loss, grads = ng.compile_grad(model, nn.MSELoss(), spec, spec)(x, x)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    xt = torch.from_numpy(x)
    h = torch.relu(xt @ p["encoder.0.weight"].T + p["encoder.0.bias"])
    out = torch.sigmoid(h @ p["encoder.0.weight"] + p["decoder.0.bias"])
    expected = torch.nn.functional.mse_loss(out, xt)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    for k, v in p.items():
        np.testing.assert_allclose(grads[k], v.grad.numpy(), rtol=1e-4, atol=1e-7)
