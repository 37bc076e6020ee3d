"""Fine-tuning an imported model: compile_training with SGD from the exported weights takes the
same steps as PyTorch from the same weights and batches (losses, weights, BatchNorm's running
statistics)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import torch_zoo as tz  # noqa: E402
from onnx_cases import export, lenet5, perturb_parameters, randomize_batchnorm  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad import nn, optim  # noqa: E402

pytestmark = pytest.mark.torch

STEPS, BATCH, LR, MOMENTUM = 5, 4, 0.05, 0.9


def small_bn_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3),
    )  # fmt: skip


CASES = {  # name -> (torch model, input shape, classes, export options)
    "lenet5": (lenet5, (BATCH, 1, 32, 32), 10, {}),
    # BatchNorm kept as BatchNormalization (the legacy exporter folds it into the conv unless
    # told not to), then trained as a BatchNorm layer.
    "batchnorm": (small_bn_net, (BATCH, 1, 8, 8), 3, {"do_constant_folding": False}),
    # Weights the exporters store transposed under their own names (onnx::MatMul_N, val_N):
    # the losses match, and the weights named as torch names them are compared.
    **{
        f"transformer_{exporter}": (
            lambda: tz.TransformerClassifier(6, 5, 8, 2, 1, 16, 3),
            (BATCH, 5, 6),
            3,
            {"exporter": exporter},
        )
        for exporter in ("legacy", "dynamo")
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_sgd_steps_match_pytorch(tmp_path, name):
    build, shape, classes, options = CASES[name]
    torch.manual_seed(0)
    tmodel = perturb_parameters(randomize_batchnorm(build()))
    options = dict(options)
    path = export(tmodel, shape, tmp_path / "model.onnx", options.pop("exporter", "legacy"),
                  **options)  # fmt: skip
    model = ng.from_onnx(path)
    shared = [k for k in tmodel.state_dict() if k in model.state_dict()]
    if not name.startswith("transformer"):
        assert set(shared) >= {k for k in tmodel.state_dict() if "num_batches" not in k}
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal(shape).astype(np.float32), rng.integers(0, classes, BATCH))
               for _ in range(STEPS)]  # fmt: skip

    step = ng.compile_training(
        model, nn.CrossEntropyLoss(), optim.SGD(lr=LR, momentum=MOMENTUM),
        ng.Spec(shape), ng.Spec((BATCH,), "int64"),
    )  # fmt: skip
    losses = [float(step(x, y)) for x, y in batches]

    tmodel.train()
    opt = torch.optim.SGD(tmodel.parameters(), lr=LR, momentum=MOMENTUM)
    expected = []
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        expected.append(loss.item())

    np.testing.assert_allclose(losses, expected, rtol=1e-4, atol=1e-5)
    state, expected_state = model.state_dict(), tmodel.state_dict()
    assert shared
    for key in shared:
        np.testing.assert_allclose(state[key], expected_state[key].numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=key)  # fmt: skip
