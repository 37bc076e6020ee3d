"""A small LeNet-like network end to end on backend="cuda" (the CUDA simulator unless
NUMBAGRAD_TEST_REAL_GPU=1): inference, gradients and five SGD-momentum steps agree with the
interp and cpu backends, and ``state_dict()``/``load_state_dict()`` read and write the device
copies."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_setup import REAL_GPU, require_cuda_backend  # first: it chooses the simulator

import numbagrad as ng
from numbagrad import nn, optim

require_cuda_backend()

pytestmark = [pytest.mark.cuda] + ([pytest.mark.gpu] if REAL_GPU else [])
BATCH, SIDE, CLASSES, STEPS = 2, 10, 5, 5
X_SPEC, Y_SPEC = ng.Spec((BATCH, 1, SIDE, SIDE)), ng.Spec((BATCH,), "int64")


def small_lenet() -> nn.Sequential:
    """LeNet's layer types at simulator scale: conv-relu-maxpool, conv(pad)-tanh-avgpool,
    then two linear layers."""
    ng.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 8),
        nn.ReLU(),
        nn.Linear(8, CLASSES),
    )


def _batches():
    rng = np.random.default_rng(0)
    return [
        (
            rng.standard_normal((BATCH, 1, SIDE, SIDE)).astype(np.float32),
            rng.integers(0, CLASSES, BATCH).astype(np.int64),
        )
        for _ in range(STEPS)
    ]


def _close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


REFERENCES = ("interp", "cpu")  # the NumPy references, and the cpu backend's kernels


def test_inference_and_gradients_match_interp_and_cpu():
    (x, y), *_ = _batches()
    results = {}
    for backend in (*REFERENCES, "cuda"):
        model = small_lenet()
        logits = ng.compile(model, X_SPEC, backend=backend)(x)
        grad_fn = ng.compile_grad(model, nn.CrossEntropyLoss(), X_SPEC, Y_SPEC, backend=backend)
        loss, grads = grad_fn(x, y)
        results[backend] = logits, loss, grads
        if backend == "cuda":
            assert grad_fn.backward.impl_counts() == {"cuda": len(grad_fn.backward.kernels)}
    logits_c, loss_c, grads_c = results["cuda"]
    for reference in REFERENCES:
        logits, loss, grads = results[reference]
        _close(logits_c, logits)
        assert loss_c == pytest.approx(loss, rel=1e-5)
        assert set(grads_c) == set(grads)
        for key in grads:
            _close(grads_c[key], grads[key])


def test_training_steps_match_interp_and_cpu_and_state_dict_reads_the_device():
    batches = _batches()
    runs = {}
    for backend in (*REFERENCES, "cuda"):
        model = small_lenet()
        step = ng.compile_training(
            model, nn.CrossEntropyLoss(), optim.SGD(0.1, momentum=0.9), X_SPEC, Y_SPEC, backend
        )
        initial = model.state_dict()
        losses = []
        for k, (x, y) in enumerate(batches):
            losses.append(step(x, y, lr=0.1 if k < 3 else 0.05))
        trained = model.state_dict()  # on cuda: copied back from the device on demand
        assert not any(np.array_equal(trained[k], initial[k]) for k in initial)
        assert step.lr == pytest.approx(0.05)
        runs[backend] = losses, model.state_dict(), step.optimizer_state
    losses_c, params_c, state_c = runs["cuda"]
    for reference in REFERENCES:
        losses, params, state = runs[reference]
        np.testing.assert_allclose(losses_c, losses, rtol=1e-5)
        for key in params:
            _close(params_c[key], params[key])
        assert set(state_c) == set(state) and state
        for key in state:
            _close(state_c[key], state[key])


def test_inference_compiled_after_training_sees_the_trained_parameters(tmp_path):
    """Executables binding the same Parameter arrays share one device copy; a saved model
    holds the device's (trained) values, not the stale host arrays."""
    (x, y), *_ = _batches()
    model = small_lenet()
    step = ng.compile_training(
        model, nn.CrossEntropyLoss(), optim.SGD(0.5), X_SPEC, Y_SPEC, backend="cuda"
    )
    infer = ng.compile(model, X_SPEC, backend="cuda")
    before = infer(x).copy()
    step(x, y)
    after = infer(x)
    assert not np.allclose(before, after)
    path = infer.save(tmp_path / "trained")  # before anything copies the device values back
    _close(after, ng.compile(model, X_SPEC, backend="interp")(x))
    _close(ng.load(path, backend="cpu")(x), after)
    loaded = ng.load(path)
    assert loaded.backend == "cuda"
    _close(loaded(x), after)


def test_a_training_step_saved_on_the_device_resumes_on_the_cpu_and_the_device(tmp_path):
    """Saving reads the parameters and the momentum buffers from the device (an MLP: the
    simulator is slow)."""
    ng.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, CLASSES))
    rng = np.random.default_rng(1)
    batches = [
        (rng.standard_normal((BATCH, 6)).astype(np.float32), rng.integers(0, CLASSES, BATCH))
        for _ in range(4)
    ]
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, momentum=0.9),
        ng.Spec((BATCH, 6)),
        Y_SPEC,
        "cuda",
    )
    for x, y in batches[:2]:
        step(x, y)
    path = step.save(tmp_path / "step")
    losses = [step(x, y) for x, y in batches[2:]]
    for backend in ("cpu", "cuda"):
        loaded = ng.load(path, backend=backend)
        assert loaded.step_count == 2
        _close([loaded(x, y) for x, y in batches[2:]], losses)
        for key, value in model.state_dict().items():
            _close(loaded.state_dict()[key], value)


def test_load_state_dict_reaches_the_device_copies():
    (x, y), *_ = _batches()
    model = small_lenet()
    initial = model.state_dict()
    step = ng.compile_training(
        model, nn.CrossEntropyLoss(), optim.SGD(0.5), X_SPEC, Y_SPEC, backend="cuda"
    )
    infer = ng.compile(model, X_SPEC, backend="cuda")
    before = infer(x).copy()
    step(x, y)
    assert not np.allclose(infer(x), before)
    model.load_state_dict(initial)
    _close(infer(x), before)


@pytest.mark.slow
def test_lenet5_inference_matches_interp():
    """The real LeNet-5 at batch 1 (~10 s on the simulator): its C1 layer runs the wide tile,
    C5 a split-K implicit GEMM."""
    from numbagrad.models.lenet import lenet5

    ng.manual_seed(0)
    model = lenet5()
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
    spec = ng.Spec(x.shape)
    _close(ng.compile(model, spec, backend="cuda")(x), ng.compile(model, spec, backend="interp")(x))


def test_training_step_intermediates_live_in_one_device_arena():
    step = ng.compile_training(
        small_lenet(), nn.CrossEntropyLoss(), optim.SGD(lr=0.1), X_SPEC, Y_SPEC, backend="cuda"
    )
    exe = step.backward
    plan = exe.plan
    assert plan is not None and plan.arena_bytes < plan.naive_bytes
    by_offset: dict[int, list[int]] = {}
    for i, offset in plan.offsets.items():
        if exe.graph[i].shape != ():
            by_offset.setdefault(offset, []).append(i)
    a, b = next(ids for ids in by_offset.values() if len(ids) > 1)[:2]
    value = np.full(exe.graph[a].shape, 7, exe.graph[a].dtype)
    exe.buffers[a].copy_to_device(value)
    shared = exe.buffers[b].copy_to_host().reshape(-1).view(np.uint8)
    assert shared[:4].tolist() == value.reshape(-1).view(np.uint8)[:4].tolist()


def test_optimizer_updates_are_computed_into_the_state_buffers():
    """Adam (moments, weight decay, host-fed bias corrections) on a small MLP: the device
    executable writes each update straight into its state's buffer, as the memory plan says,
    copies none after the run, and three steps match the cpu backend's."""
    ng.manual_seed(5)
    spec_x, spec_y = ng.Spec((4, 6)), ng.Spec((4,), "int64")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)
    runs = {}
    for backend in ("cpu", "cuda"):
        ng.manual_seed(5)
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        adam = optim.Adam(0.01, weight_decay=0.1)
        step = ng.compile_training(model, nn.CrossEntropyLoss(), adam, spec_x, spec_y, backend)
        losses = [step(x, y) for _ in range(3)]
        runs[backend] = losses, model.state_dict(), step
    step = runs["cuda"][2]
    exe = step.backward
    into_state = exe.plan.updates_inplace
    assert len(into_state) >= 3 * 4  # each weight and bias, its two moments
    for value, state in into_state.items():
        assert exe.buffers[value] is exe.buffers[state]
    assert len(exe._updates) == len(exe.graph.updates) - len(into_state)
    np.testing.assert_allclose(runs["cuda"][0], runs["cpu"][0], rtol=1e-5)
    for key, value in runs["cpu"][1].items():
        _close(runs["cuda"][1][key], value)
