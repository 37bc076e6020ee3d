"""BatchNorm, Concat and the 1x1-conv folds on the CUDA backend (simulator, or a real GPU
with NUMBAGRAD_TEST_REAL_GPU=1): a training step's loss, parameters and running statistics
(updated on the device, synced back) and the folded eval graph match the interp backend."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from cuda_setup import require_cuda_backend  # first: it chooses the simulator

import numbagrad as ng
from numbagrad import nn, optim

require_cuda_backend()

pytestmark = pytest.mark.cuda


class Small(nn.Module):
    """1x1 conv -> BatchNorm -> two parallel 1x1 branches concatenated -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)
        self.cat = nn.Concat(
            nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()),
        )
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.cat(self.bn(self.conv(x)).relu()).mean((2, 3)))


def _step(model, backend, passes):
    spec, target = ng.Spec((2, 2, 3, 3)), ng.Spec((2,), "int64")
    return ng.compile_training(
        model, nn.CrossEntropyLoss(), optim.SGD(0.1), spec, target, backend, passes
    )


def test_training_step_and_folded_eval_match_interp():
    ng.manual_seed(0)
    model = Small()
    reference = copy.deepcopy(model)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 2, 3, 3)).astype(np.float32), rng.integers(0, 3, 2)
    step, expected_step = _step(model, "cuda", None), _step(reference, "interp", [])
    for _ in range(2):
        assert step(x, y) == pytest.approx(expected_step(x, y), rel=1e-5)
    assert "slice" in {n.op for n in step.forward_graph.ops()}  # the branches merged
    step.sync()
    state, expected = model.state_dict(), reference.state_dict()
    assert int(state["bn.num_batches_tracked"]) == 2
    for key, value in state.items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    got = ng.compile(model.eval(), ng.Spec(x.shape), backend="cuda")
    assert "batch_norm" not in str(got.forward_graph)
    want = ng.compile(reference.eval(), ng.Spec(x.shape), backend="interp", passes=[])
    np.testing.assert_allclose(got(x), want(x), rtol=1e-5, atol=1e-6)
