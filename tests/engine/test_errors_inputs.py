"""Bad input to a compiled step is refused: arrays that differ from their Spec (shape, rank,
dtype, number) before anything runs, with a message that names the input and both types; class
indices outside [0, C) by the losses and one_hot, on each backend. Models and layers that do
not fit are in test_errors_model.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.backends import get_backend
from numbagrad.errors import (
    ClassIndexError,
    DTypeError,
    NumbagradError,
    ShapeError,
)
from numbagrad.graph import Builder
from numbagrad.models import lenet5, mlp

BATCH = 64


@pytest.fixture(scope="module")
def lenet_compiled():
    return ng.compile(lenet5(), ng.Spec((BATCH, 1, 32, 32)), backend="interp")


@pytest.fixture(scope="module")
def lenet_grad():
    return ng.compile_grad(
        lenet5(),
        loss=nn.CrossEntropyLoss(),
        inputs=ng.Spec((BATCH, 1, 32, 32)),
        targets=ng.Spec((BATCH,), "int64"),
        backend="interp",
    )


@pytest.fixture(scope="module")
def lenet_training():
    return ng.compile_training(
        lenet5(),
        loss=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(lr=0.1),
        inputs=ng.Spec((BATCH, 1, 32, 32)),
        targets=ng.Spec((BATCH,), "int64"),
        backend="interp",
    )


X_OK = np.zeros((BATCH, 1, 32, 32), np.float32)
Y_OK = np.zeros(BATCH, np.int64)


# --- compiled steps refuse arrays that differ from their Spec ------------------------------


def test_compiled_model_refuses_wrong_shape(lenet_compiled):
    bad = np.zeros((32, 1, 32, 32), np.float32)
    with pytest.raises(ShapeError, match=re.escape("expects f32[64,1,32,32], got f32[32,1,32,32]")):
        lenet_compiled(bad)


def test_compiled_model_refuses_wrong_dtype(lenet_compiled):
    bad = np.zeros((BATCH, 1, 32, 32), np.float64)
    with pytest.raises(
        NumbagradError, match=re.escape("expects f32[64,1,32,32], got f64[64,1,32,32]")
    ):
        lenet_compiled(bad)


def test_compiled_model_refuses_wrong_rank_and_says_how_to_fix(lenet_compiled):
    with pytest.raises(
        ShapeError, match=r"input 'input' expects f32\[64,1,32,32\], got f32\[64,32,32\]"
    ):
        lenet_compiled(np.zeros((BATCH, 32, 32), np.float32))
    with pytest.raises(ShapeError, match=r"compile again with a new ng\.Spec"):
        lenet_compiled(np.zeros((1, 1, 32, 32), np.float32))


def test_compiled_model_refuses_wrong_number_of_arrays(lenet_compiled):
    with pytest.raises(NumbagradError, match=r"takes 1 arrays \(input\), got 2"):
        lenet_compiled(X_OK, X_OK)


def test_compiled_model_dtype_mismatch_is_a_dtype_error(lenet_compiled):
    with pytest.raises(DTypeError):
        lenet_compiled(np.zeros((BATCH, 1, 32, 32), np.float64))


def test_compile_grad_refuses_wrong_input_and_target(lenet_grad):
    with pytest.raises(
        ShapeError,
        match=re.escape("compiled grad input 'input' expects f32[64,1,32,32], got f32[64,1,28,28]"),
    ):
        lenet_grad(np.zeros((BATCH, 1, 28, 28), np.float32), Y_OK)
    with pytest.raises(NumbagradError, match=re.escape("'target' expects i64[64], got f32[64]")):
        lenet_grad(X_OK, Y_OK.astype(np.float32))
    with pytest.raises(NumbagradError, match=re.escape("'target' expects i64[64], got i64[32]")):
        lenet_grad(X_OK, Y_OK[:32])


def test_compile_training_refuses_wrong_input_and_leaves_params_alone():
    model = mlp([4, 8, 3])
    before = model.state_dict()
    step = ng.compile_training(
        model,
        loss=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(lr=0.1),
        inputs=ng.Spec((5, 4)),
        targets=ng.Spec((5,), "int64"),
        backend="interp",
    )
    with pytest.raises(
        NumbagradError,
        match=re.escape("training step input 'input' expects f32[5,4], got f64[5,4]"),
    ):
        step(np.zeros((5, 4)), np.zeros(5, np.int64))
    with pytest.raises(ShapeError, match=re.escape("expects f32[5,4], got f32[5,6]")):
        step(np.zeros((5, 6), np.float32), np.zeros(5, np.int64))
    with pytest.raises(NumbagradError, match=re.escape("'target' expects i64[5], got int32[5]")):
        step(np.zeros((5, 4), np.float32), np.zeros(5, np.int32))
    # Nothing ran: the refused calls did not update the parameters.
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_lenet_training_step_refuses_batch_mismatch(lenet_training):
    with pytest.raises(ShapeError, match=re.escape("expects f32[64,1,32,32], got f32[16,1,32,32]")):
        lenet_training(np.zeros((16, 1, 32, 32), np.float32), Y_OK)


def test_cross_entropy_refuses_out_of_range_class_index():
    fn = ng.compile_grad(
        mlp([4, 3]),
        loss=nn.CrossEntropyLoss(),
        inputs=ng.Spec((2, 4)),
        targets=ng.Spec((2,), "int64"),
        backend="interp",
    )
    with pytest.raises(ValueError, match=re.escape("target 3 is not a class index in [0, 3)")):
        fn(np.zeros((2, 4), np.float32), np.array([0, 3]))


@pytest.mark.parametrize("backend", ["interp", "cpu"])
@pytest.mark.parametrize(
    "loss, name",
    [
        (nn.NLLLoss(), "nll_loss"),
        (nn.CrossEntropyLoss(label_smoothing=0.1), "cross_entropy"),
        (nn.CrossEntropyLoss(reduction="sum"), "cross_entropy"),
        (nn.CrossEntropyLoss(), "cross_entropy"),  # the fused op
    ],
    ids=["nll", "ce_smooth", "ce_sum", "ce_fused"],
)
def test_class_target_losses_refuse_out_of_range_indices(backend, loss, name):
    # A one-hot of an index outside [0, C) matches no class: a silently wrong loss, unless
    # refused. Refused with the loss, the bad value and the number of classes, on each backend.
    fn = ng.compile_grad(
        mlp([4, 3]),
        loss=loss,
        inputs=ng.Spec((2, 4)),
        targets=ng.Spec((2,), "int64"),
        backend=backend,
    )
    x = np.zeros((2, 4), np.float32)
    for bad in (3, -1):
        message = f"{name}" + r".*" + re.escape(f"target {bad} is not a class index in [0, 3)")
        with pytest.raises(ClassIndexError, match=message):
            fn(x, np.array([0, bad]))
    fn(x, np.array([0, 2]))  # good targets still run


def test_one_hot_refuses_out_of_range_indices():
    b = Builder()
    t = b.leaf("input", (3,), "int64", "t")
    graph = b.build([F.one_hot(t, 4)])
    for backend in ("interp", "cpu"):
        exe = get_backend(backend).compile(graph)
        exe.set_input(t.id, np.array([0, 4, 1]))
        with pytest.raises(ClassIndexError, match=re.escape("one_hot: target 4 is not")):
            exe.run()
