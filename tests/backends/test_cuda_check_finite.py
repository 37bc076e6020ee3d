"""Anomaly mode (``check_finite``) on backend="cuda" (the CUDA simulator unless
NUMBAGRAD_TEST_REAL_GPU=1): each kernel's output is synchronized and checked on the host, so the
same op, layer and index are named as on the CPU (tests/test_check_finite.py), and a refused
step leaves the device copies of the parameters untouched."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_setup import REAL_GPU, require_cuda_backend  # first: it chooses the simulator
from finite_cases import (
    X_SPEC,
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
from numbagrad.errors import NonFiniteError

require_cuda_backend()

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore::RuntimeWarning")] + (
    [pytest.mark.gpu] if REAL_GPU else []
)


def test_forward_division_by_zero_is_named_on_the_device():
    predict = ng.compile(
        two_layers(Reciprocal()), X_SPEC, backend="cuda", passes=[], check_finite=True
    )
    div = node_id(predict.forward_graph, "div", "1")
    with pytest.raises(NonFiniteError) as info:
        predict(batch())
    assert str(info.value) == made_here("forward", f"%{div} div '1'", "inf", "(1, 2)")


def test_backward_error_on_the_device_leaves_the_parameters_untouched():
    step = training_step(Sqrt(), "cuda", passes=[], check_finite=True)
    for _ in range(2):  # refused twice: the first refusal left a step that runs as before
        before = {k: v.copy() for k, v in step.model.state_dict().items()}
        with pytest.raises(NonFiniteError) as info:
            step(batch(), Y)
        div = node_id(step.backward_graph, "div", "1")
        assert str(info.value) == made_here("backward", f"%{div} div '1'", "inf", "(1, 2)")
        for name, value in step.model.state_dict().items():
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert step.step_count == 0


def test_a_nan_fed_in_is_named_before_any_kernel_runs():
    x = batch()
    x[0, 1] = np.nan
    predict = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="cuda", check_finite=True)
    with pytest.raises(NonFiniteError, match=r"%0 input 'input' has nan at index \(0, 1\) before"):
        predict(x)


def test_off_by_default_the_same_outputs_as_in_anomaly_mode():
    x = batch()
    x[1, 0] = 2.0  # finite everywhere
    plain = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="cuda")
    checked = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="cuda", check_finite=True)
    assert not plain.check_finite
    np.testing.assert_array_equal(checked(x), plain(x))


def test_a_checked_executable_is_never_captured_as_a_cuda_graph(monkeypatch):
    from numbagrad.backends.cuda import graphs

    monkeypatch.setattr(graphs, "enabled", lambda: True)  # as with NUMBAGRAD_CUDA_GRAPHS=1
    plain = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="cuda")
    checked = ng.compile(two_layers(Reciprocal()), X_SPEC, backend="cuda", check_finite=True)
    assert plain.executable._capturable() and not checked.executable._capturable()
