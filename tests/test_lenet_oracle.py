"""LeNet-5 against PyTorch (the outside oracle): logits, every gradient, 20 SGD steps; and a
short training run on the bundled Fashion-MNIST subset."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import data, nn, optim
from numbagrad.models import lenet5

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

BATCH = 8


def _torch_lenet(model) -> torch.nn.Module:
    """The same architecture in PyTorch with numbagrad's weights copied in."""
    t = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 120, 5),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(120, 84),
        torch.nn.ReLU(),
        torch.nn.Linear(84, 10),
    )
    t.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    return t


def _batch(seed: int, n: int = BATCH):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y


def _rel_close(got: np.ndarray, expected: np.ndarray, rtol: float, what: str) -> None:
    scale = np.abs(expected).max() or 1.0
    err = np.abs(got - expected).max() / scale
    assert err <= rtol, f"{what}: max error {err:.2e} of the largest magnitude {scale:.3g}"


SPECS = dict(inputs=ng.Spec((BATCH, 1, 32, 32)), targets=ng.Spec((BATCH,), "int64"))
CONFIGS = [
    pytest.param("cpu", None, id="cpu"),
    pytest.param("cpu", [], id="cpu-no-passes"),
    pytest.param("interp", None, id="interp"),
]


@pytest.mark.parametrize(("backend", "passes"), CONFIGS)
def test_logits_and_every_gradient_match_torch(backend, passes):
    ng.manual_seed(0)
    model = lenet5()
    reference = _torch_lenet(model)
    x, y = _batch(1)

    logits = ng.compile(model, SPECS["inputs"], backend=backend, passes=passes)(x)
    grad_fn = ng.compile_grad(model, nn.CrossEntropyLoss(), **SPECS, backend=backend, passes=passes)
    loss, grads = grad_fn(x, y)

    t_logits = reference(torch.from_numpy(x))
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(y))
    t_loss.backward()
    _rel_close(logits, t_logits.detach().numpy(), 1e-4, "logits")
    assert loss == pytest.approx(t_loss.item(), rel=1e-4)
    t_grads = {k: p.grad.numpy() for k, p in reference.named_parameters()}
    assert set(grads) == set(t_grads)
    for key, expected in t_grads.items():
        _rel_close(grads[key], expected, 1e-4, f"gradient of {key}")


@pytest.mark.parametrize(("backend", "passes"), CONFIGS[:2])
def test_twenty_sgd_steps_match_torch(backend, passes):
    ng.manual_seed(3)
    model = lenet5()
    reference = _torch_lenet(model)
    hyper = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
    step = ng.compile_training(
        model, nn.CrossEntropyLoss(), optim.SGD(**hyper), **SPECS, backend=backend, passes=passes
    )
    t_opt = torch.optim.SGD(reference.parameters(), **hyper)
    for i in range(20):
        x, y = _batch(100 + i)
        loss = step(x, y)
        t_opt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(
            reference(torch.from_numpy(x)), torch.from_numpy(y)
        )
        t_loss.backward()
        t_opt.step()
        assert loss == pytest.approx(t_loss.item(), rel=1e-3), f"step {i}"
    for key, value in reference.state_dict().items():
        _rel_close(model.state_dict()[key], value.numpy(), 1e-3, f"trained {key}")


def test_short_training_run_on_the_bundled_subset_learns():
    x_train, y_train = data.load_fashion_mnist("train", bundled=True)
    x_test, y_test = data.load_fashion_mnist("test", bundled=True)
    ng.manual_seed(0)
    model = lenet5()
    batch = 64
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(lr=0.05, momentum=0.9),
        inputs=ng.Spec((batch, 1, 32, 32)),
        targets=ng.Spec((batch,), "int64"),
    )
    batches = data.iterate_minibatches(x_train[:3200], y_train[:3200], batch, rng=0)
    losses = [step(x, y) for x, y in batches]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    predict = ng.compile(model, ng.Spec((500, 1, 32, 32)))
    accuracy = np.mean(predict(x_test[:500]).argmax(1) == y_test[:500])
    assert accuracy > 0.5, f"accuracy {accuracy:.3f} (chance is 0.1)"
