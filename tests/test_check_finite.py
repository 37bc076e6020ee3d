"""Anomaly mode (``check_finite``) on the interp and cpu backends: the first NaN or infinity
raises a ``NonFiniteError`` naming the graph, op, layer, node and index; a refused training
step leaves the model as it was; off (the default), nothing changes. The CUDA simulator's
cases are in tests/backends/test_cuda_check_finite.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
from finite_cases import (
    X_SPEC,
    Y_SPEC,
    Reciprocal,
    Sqrt,
    Y,
    batch,
    made_here,
    node_id,
    training_step,
    two_layers,
)

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.errors import NonFiniteError, NumbagradError

# The interp backend's NumPy references warn on the overflows these tests make on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
BACKENDS = ["interp", "cpu"]


def raised(fn, *args) -> str:
    with pytest.raises(NonFiniteError) as info:
        fn(*args)
    return str(info.value)


def test_non_finite_error_is_a_numbagrad_error():
    assert issubclass(NonFiniteError, NumbagradError)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_division_by_zero_is_named_by_op_layer_node_and_index(backend):
    predict = ng.compile(
        two_layers(Reciprocal()), X_SPEC, backend=backend, passes=[], check_finite=True
    )
    div = node_id(predict.forward_graph, "div", "1")
    assert raised(predict, batch()) == made_here("forward", f"%{div} div '1'", "inf", "(1, 2)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_division_by_sqrt_of_zero_is_named_in_the_backward_graph(backend):
    step = training_step(Sqrt(), backend, passes=[], check_finite=True)
    div = node_id(step.backward_graph, "div", "1")  # sqrt's VJP: g * 0.5 / sqrt(x)
    assert raised(step, batch(), Y) == made_here("backward", f"%{div} div '1'", "inf", "(1, 2)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fused_kernel_is_named_with_the_ops_it_fuses(backend):
    predict = ng.compile(two_layers(Reciprocal()), X_SPEC, backend=backend, check_finite=True)
    (fused,) = [
        n for n in predict.forward_graph.ops() if n.op == "matmul_epilogue" and n.name == "0"
    ]
    message = raised(predict, batch())
    assert message.startswith(
        f"non-finite value in the forward graph: %{fused.id} matmul_epilogue (add, div) '0' "
        "has inf at index (1, 2); the inputs were finite, so this op made it (fused: "
    )


def test_compile_grad_checks_its_backward_graph():
    grad = ng.compile_grad(
        two_layers(Sqrt()),
        nn.CrossEntropyLoss(),
        X_SPEC,
        Y_SPEC,
        backend="interp",
        passes=[],
        check_finite=True,
    )
    div = node_id(grad.backward_graph, "div", "1")
    assert raised(grad, batch(), Y) == made_here("backward", f"%{div} div '1'", "inf", "(1, 2)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_fed_in_is_named_before_any_op_runs(backend):
    x = batch()
    x[1, 3] = np.nan
    predict = ng.compile(two_layers(nn.Tanh()), X_SPEC, backend=backend, check_finite=True)
    assert raised(predict, x) == (
        "non-finite value in the forward graph: %0 input 'input' has nan at index (1, 3) "
        "before any op ran"
    )


def test_an_infinite_parameter_is_named_before_any_op_runs():
    model = two_layers(nn.Tanh())
    model[2].bias.data[1] = -np.inf
    predict = ng.compile(model, X_SPEC, backend="interp", check_finite=True)
    (bias,) = [n for n in predict.forward_graph.leaves("param") if n.name == "2.bias"]
    assert raised(predict, batch()) == (
        f"non-finite value in the forward graph: %{bias.id} param '2.bias' has -inf at index (1,) "
        "before any op ran"
    )


class MaskedAttention(nn.Module):
    """Self-attention over the 3 rows of a (3, 2) input with a boolean mask (True: may
    attend), which becomes a constant holding -inf."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.proj = nn.Linear(2, 2)
        self.mask = mask

    def forward(self, x):
        h = self.proj(x)
        return F.scaled_dot_product_attention(h, h, h, attn_mask=self.mask)


def test_a_minus_inf_mask_constant_passes_forward_and_backward():
    causal = np.tril(np.ones((3, 3), dtype=bool))
    ng.manual_seed(0)
    model = MaskedAttention(causal)
    spec = ng.Spec((3, 2))
    step = ng.compile_training(
        model, nn.MSELoss(), optim.SGD(0.1), spec, spec, backend="interp", check_finite=True
    )
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 2)).astype(np.float32)
    assert np.isfinite(step(x, y))
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_nan_from_an_inherited_infinity_blames_the_input_that_carried_it():
    blocked_row = np.tril(np.ones((3, 3), dtype=bool))
    blocked_row[1] = False  # position 1 may attend nothing: its softmax row is all -inf
    ng.manual_seed(0)
    predict = ng.compile(
        nn.Sequential(MaskedAttention(blocked_row)),
        ng.Spec((3, 2)),
        backend="interp",
        passes=[],
        check_finite=True,
    )
    softmax = next(n for n in predict.forward_graph.ops() if n.op == "softmax")
    scores = predict.forward_graph[softmax.inputs[0]]
    x = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    message = raised(predict, x)
    assert message.startswith(
        f"non-finite value in the forward graph: %{softmax.id} softmax '0' has nan "
        f"at index (1, 0); the inputs were not finite: %{scores.id} {scores.op} "
    )
    assert message.endswith("holds -inf at index (0, 1)")  # the first masked score


def diverging_linear(backend: str, check_finite: bool | None):
    """An SGD-momentum step of Linear(4, 2) whose bias update overflows float32 at lr=1e38
    (bias 3.3e38 + 0.5e38) after the weight's update (finite: +5) has been made in place."""
    model = nn.Linear(4, 2)
    model.weight.data[...] = 1.0
    model.bias.data[...] = 3.3e38
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, momentum=0.9),
        X_SPEC,
        Y_SPEC,
        backend=backend,
        check_finite=check_finite,
    )
    return model, step, np.full((2, 4), 1e-37, np.float32), np.array([0, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_step_leaves_parameters_optimizer_state_and_step_count_untouched(backend):
    model, step, x, y = diverging_linear(backend, check_finite=True)
    step(x * 0, y, lr=0.1)  # one good step, so the momentum buffers are not zero
    before = {k: v.copy() for k, v in model.state_dict().items()}
    momentum = {k: v.copy() for k, v in step.optimizer_state.items()}
    message = raised(step, x, y, 1e38)
    assert "(the update of 'bias') has inf at index (0,)" in message
    assert step.step_count == 1
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for name, value in step.optimizer_state.items():
        np.testing.assert_array_equal(value, momentum[name], err_msg=name)
    assert np.isfinite(step(x * 0, y, lr=0.1))  # and the step goes on from there


def test_without_anomaly_mode_the_same_step_overwrites_the_parameters():
    model, step, x, y = diverging_linear("interp", check_finite=False)
    step(x, y, lr=1e38)
    assert np.isinf(model.bias.data[0])
    np.testing.assert_array_equal(model.weight.data[0], np.full(4, 6.0, np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_off_by_default_runs_the_lowered_kernels_unwrapped_with_the_same_outputs(backend):
    plain = ng.compile(two_layers(Reciprocal()), X_SPEC, backend=backend)
    assert not plain.check_finite and "run" not in vars(plain.executable)
    assert not any("FiniteChecker" in k.launch.__qualname__ for k in plain.executable.kernels)
    x = batch()
    out = plain(x)
    assert np.isinf(out[1]).all() and np.isfinite(out[0]).all()  # 1/0 in row 1 only
    x[1, 0] = 2.0  # finite everywhere: anomaly mode gives the very same outputs
    checked = ng.compile(two_layers(Reciprocal()), X_SPEC, backend=backend, check_finite=True)
    assert type(checked.executable).run is type(plain.executable).run  # only the kernels differ
    assert all("FiniteChecker" in k.launch.__qualname__ for k in checked.executable.kernels)
    np.testing.assert_array_equal(checked(x), plain(x))


@pytest.mark.parametrize(
    "env, argument, checks",
    [("1", None, True), ("0", None, False), ("", None, False), ("1", False, False)],
)
def test_the_environment_variable_switches_it_on_unless_the_argument_says(
    monkeypatch, env, argument, checks
):
    monkeypatch.setenv("NUMBAGRAD_CHECK_FINITE", env)
    predict = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="interp", check_finite=argument)
    assert predict.check_finite is checks
    if checks:
        raised(predict, batch())
    else:
        assert np.isinf(predict(batch())).any()


def test_a_loaded_model_and_step_check_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBAGRAD_CHECK_FINITE", raising=False)
    predict = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="interp", passes=[])
    path = predict.save(tmp_path / "model")
    assert np.isinf(ng.load(path)(batch())).any()
    div = node_id(predict.forward_graph, "div", "1")
    message = raised(ng.load(path, check_finite=True), batch())
    assert message == made_here("forward", f"%{div} div '1'", "inf", "(1, 2)")

    step = training_step(Sqrt(), "interp", passes=[])
    path = step.save(tmp_path / "step")
    monkeypatch.setenv("NUMBAGRAD_CHECK_FINITE", "1")
    loaded = ng.load(path)
    before = loaded.state_dict()
    assert re.fullmatch(
        r".*backward graph: %\d+ div '1' has inf at index \(1, 2\);.*", raised(loaded, batch(), Y)
    )
    assert loaded.step_count == 0
    for name, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
