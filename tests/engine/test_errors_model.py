"""Models that do not fit are refused when traced or built, with a message that names the
layer, the op and the shapes: layer operands, op attributes, unknown ops and backends, modules
called outside a trace, state dicts, non-scalar losses, optimizer hyperparameters and
unregistered parameters. Bad arrays passed to compiled steps are in test_errors_inputs.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import nn, optim
from numbagrad.errors import (
    BackendError,
    DTypeError,
    NumbagradError,
    OpError,
    ShapeError,
)
from numbagrad.models import lenet5, mlp

# --- layers refuse operands that do not fit, naming the layer path and the sizes -----------


class Features(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


def test_conv_kernel_larger_than_input_names_layer_and_sizes():
    with pytest.raises(
        ShapeError,
        match=r"conv2d in layer '0': kernel 5x5 .* larger than the input 3x4 .*f32\[1,1,3,4\]",
    ):
        ng.compile(nn.Sequential(nn.Conv2d(1, 2, 5)), ng.Spec((1, 1, 3, 4)), backend="interp")


def test_conv_kernel_larger_than_input_in_nested_layer():
    # LeNet needs 32x32: on 16x16 inputs the third conv (features.6) meets a 1x1 map.
    model = Features(*lenet5().children()[:8])
    with pytest.raises(
        ShapeError, match=r"conv2d in layer 'features\.6': kernel 5x5 .* larger than the input 1x1"
    ):
        ng.compile(model, ng.Spec((2, 1, 16, 16)), backend="interp")


def test_conv_dilated_kernel_larger_than_padded_input():
    model = Features(nn.Conv2d(1, 1, 3, padding=1, dilation=3))
    with pytest.raises(
        ShapeError,
        match=r"layer 'features\.0': kernel 3x3 \(dilation 3x3\) is larger than the input 4x4 "
        r"padded by 1x1",
    ):
        ng.compile(model, ng.Spec((1, 1, 4, 4)), backend="interp")


def test_pooling_window_larger_than_input():
    with pytest.raises(
        ShapeError,
        match=r"max_pool2d in layer '1': pooling window 5x5 .* larger than the input 3x8",
    ):
        ng.compile(
            nn.Sequential(nn.ReLU(), nn.MaxPool2d(5)), ng.Spec((1, 1, 3, 8)), backend="interp"
        )


def test_conv_channel_mismatch_names_layer_and_shape():
    with pytest.raises(
        ShapeError,
        match=re.escape(
            "Conv2d layer 'features.1' expects input (N, 3, H, W), got shape (1, 2, 8, 8)"
        ),
    ):
        ng.compile(
            Features(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(3, 4, 3)),
            ng.Spec((1, 1, 8, 8)),
            backend="interp",
        )


def test_mismatched_linear_sizes_name_layer_and_shape():
    with pytest.raises(
        ShapeError, match=re.escape("Linear layer '2' expects input (N, 7), got shape (2, 8)")
    ):
        ng.compile(
            nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(7, 3)),
            ng.Spec((2, 4)),
            backend="interp",
        )
    with pytest.raises(
        ShapeError, match=re.escape("Linear layer '0' expects input (N, 4), got shape (2, 5)")
    ):
        ng.compile(mlp([4, 8, 3]), ng.Spec((2, 5)), backend="interp")


def test_op_shape_error_names_op_layer_and_input_types():
    class Head(nn.Module):
        def forward(self, x):
            return x @ x  # (2, 3) @ (2, 3)

    with pytest.raises(
        ShapeError,
        match=re.escape("matmul in layer 'head': cannot multiply (2, 3) by (2, 3)")
        + r".*\(inputs: f32\[2,3\], f32\[2,3\]\)",
    ):
        ng.compile(_Wrap(head=Head()), ng.Spec((2, 3)), backend="interp")


class _Wrap(nn.Module):
    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, x):
        for child in self.children():
            x = child(x)
        return x


def test_loss_operands_that_do_not_fit():
    model = mlp([4, 3])
    with pytest.raises(
        DTypeError, match=r"cross_entropy in layer 'CrossEntropyLoss': targets must be int64"
    ):
        ng.compile_grad(
            model, nn.CrossEntropyLoss(), ng.Spec((5, 4)), ng.Spec((5,), "float32"), "interp"
        )
    with pytest.raises(
        ShapeError,
        match=r"mse_loss in layer 'MSELoss': prediction \(5, 3\) and target \(5, 4\) differ",
    ):
        ng.compile_grad(model, nn.MSELoss(), ng.Spec((5, 4)), ng.Spec((5, 4)), "interp")


# --- op attributes -----------------------------------------------------------------------


class _EmitRelu(nn.Module):
    """A custom layer that passes an attribute relu does not have."""

    def forward(self, x):
        return x.builder.emit("relu", [x], inplace=True)


def test_unknown_op_attribute_is_refused_naming_op_and_layer():
    with pytest.raises(
        OpError,
        match=re.escape(
            "relu in layer '1': op 'relu' has no attribute(s) ['inplace']; it takes none"
        ),
    ):
        ng.compile(nn.Sequential(nn.Linear(4, 4), _EmitRelu()), ng.Spec((2, 4)), backend="interp")


def test_unknown_attribute_lists_the_accepted_ones():
    from numbagrad.graph import Builder

    b = Builder()
    x = b.leaf("input", (1, 1, 4, 4), "float32", "x")
    w = b.leaf("param", (1, 1, 3, 3), "float32", "w")
    with pytest.raises(
        OpError,
        match=r"has no attribute\(s\) \['strides'\]; "
        r"it takes \['dilation', 'groups', 'padding', 'stride'\]",
    ):
        b.emit("conv2d", [x, w], strides=2)


def test_bad_attribute_values_are_refused():
    with pytest.raises(OpError, match=r"conv2d in layer '0': stride must be >= 1, got 0"):
        ng.compile(
            nn.Sequential(nn.Conv2d(1, 2, 3, stride=0)), ng.Spec((1, 1, 8, 8)), backend="interp"
        )
    with pytest.raises(OpError, match=r"padding must be an int or a pair of ints"):
        ng.compile(
            nn.Sequential(nn.MaxPool2d(2, padding=(1, 1, 1))),
            ng.Spec((1, 1, 8, 8)),
            backend="interp",
        )
    with pytest.raises(ShapeError, match=r"divisible by groups=2"):
        nn.Conv2d(3, 4, 3, groups=2)


def test_unknown_op_and_backend():
    from numbagrad.graph import Builder

    b = Builder()
    x = b.leaf("input", (2,), "float32", "x")
    with pytest.raises(OpError, match=r"unknown op 'gelu'; did you mean .*relu"):
        b.emit("gelu", [x])
    with pytest.raises(OpError, match=r"'demo::x'; custom ops are registered when the module"):
        b.emit("demo::x", [x])
    with pytest.raises(
        BackendError, match=r"unknown backend 'tpu'; choose one of interp, cpu, cuda"
    ):
        ng.compile(mlp([2, 2]), ng.Spec((1, 2)), backend="tpu")


# --- modules and state ---------------------------------------------------------------------


def test_module_called_outside_a_trace():
    with pytest.raises(NumbagradError, match=r"Linear is called outside a trace; compile it first"):
        nn.Linear(2, 3)(np.zeros((1, 2), np.float32))
    with pytest.raises(NumbagradError, match=r"Sequential is called outside a trace"):
        mlp([2, 3])(np.zeros((1, 2), np.float32))


def test_functional_op_outside_a_trace():
    with pytest.raises(NumbagradError, match=r"needs at least one traced tensor"):
        F.add(np.ones(2), np.ones(2))


def test_load_state_dict_wrong_keys():
    model = mlp([4, 8, 3])
    with pytest.raises(
        NumbagradError,
        match=re.escape("missing keys ['0.bias', '2.weight', '2.bias'], unexpected []"),
    ):
        model.load_state_dict({"0.weight": np.zeros((8, 4))})
    state = model.state_dict()
    state["head.weight"] = np.zeros((3, 8))
    with pytest.raises(
        NumbagradError, match=re.escape("missing keys [], unexpected ['head.weight']")
    ):
        model.load_state_dict(state)
    # strict=False skips unknown keys and loads the rest.
    state["0.bias"] = np.full(8, 0.5)
    model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model.state_dict()["0.bias"], np.full(8, 0.5, np.float32))


def test_load_state_dict_wrong_shape_names_key_and_both_shapes():
    model = mlp([4, 8, 3])
    state = model.state_dict()
    state["2.weight"] = np.zeros((8, 3))
    with pytest.raises(ShapeError, match=re.escape("2.weight has shape (3, 8), got (8, 3)")):
        model.load_state_dict(state)


def test_non_scalar_loss_is_refused():
    model = mlp([4, 3])
    with pytest.raises(ShapeError, match=re.escape("the loss must be a scalar, got shape (5, 3)")):
        ng.compile_grad(model, lambda p, t: p - t, ng.Spec((5, 4)), ng.Spec((5, 3)), "interp")
    with pytest.raises(ShapeError, match=re.escape("the loss must be a scalar, got shape (5,)")):
        ng.compile_training(
            model,
            lambda p, t: F.sum(p * t, 1),
            optim.SGD(lr=0.1),
            ng.Spec((5, 4)),
            ng.Spec((5, 3)),
            "interp",
        )


def test_scalar_loss_times_a_python_number_is_still_scalar():
    fn = ng.compile_grad(
        mlp([4, 3]),
        lambda p, t: F.mse_loss(p, t) * 0.5,
        ng.Spec((5, 4)),
        ng.Spec((5, 3)),
        "interp",
    )
    loss, _ = fn(np.ones((5, 4), np.float32), np.zeros((5, 3), np.float32))
    assert np.isfinite(loss)


def test_optimizer_hyperparameters_are_checked():
    with pytest.raises(NumbagradError, match=r"SGD: lr must be >= 0, got -0.1"):
        optim.SGD(lr=-0.1)
    with pytest.raises(NumbagradError, match=r"SGD: nesterov needs a positive momentum"):
        optim.SGD(lr=0.1, nesterov=True)
    with pytest.raises(NumbagradError, match=r"SGD: momentum must be >= 0"):
        optim.SGD(lr=0.1, momentum=-0.9)


def test_unregistered_parameter_is_reported():
    stray = nn.Parameter(np.ones((3, 3), np.float32))

    class Leaky(nn.Module):
        def forward(self, x):
            return x @ stray

    with pytest.raises(NumbagradError, match=r"Parameter of shape \(3, 3\) .* not registered"):
        ng.compile(Leaky(), ng.Spec((2, 3)), backend="interp")
