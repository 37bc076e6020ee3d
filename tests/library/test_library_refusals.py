"""What used to pass silently with a custom op now raises or warns (issue 13): opcheck fails on
a wrong kernel, shape rule, VJP or template; definitions are validated when registered and
attributes when called; a VJP that returns an array, None for a needed input or a wrong shape
is refused naming the op and the layer; an op with no kernel warns once (an error with
strict=True); a second kernel is refused; re-running a definition works; a saved model whose
op definition changed is refused unless allowed, fused or not; anomaly mode names custom ops."""

from __future__ import annotations

import json
import warnings

import cuda_setup  # noqa: F401  (first: the CUDA simulator, as the other tests here)
import numba
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import aot_file, library, nn, optim
from numbagrad.errors import (
    BackendError,
    KernelWarning,
    NonFiniteError,
    NotDifferentiableError,
    OpCheckError,
    OpError,
    SavedModelError,
)
from numbagrad.graph import Builder

X = np.random.default_rng(0).standard_normal((3, 4))


def _op(name, reference=lambda x: x * 2.0, **options):
    return library.custom_op(name, replace=True, **options)(reference)


# --- opcheck -------------------------------------------------------------------------------


def test_opcheck_fails_on_a_kernel_that_disagrees():
    op = _op("refuse::double_kernel")

    @op.register_kernel("cpu")
    @numba.njit
    def _(x, out):
        out[:] = x * 3.0

    with pytest.raises(
        OpCheckError,
        match=r"refuse::double_kernel: the cpu kernel differs from the reference by up to",
    ):
        library.opcheck(op, X)


def test_opcheck_fails_on_a_wrong_shape_rule():
    op = _op("refuse::transpose", lambda x: x.T.copy())
    op.register_shape(lambda x: library.TensorType(x.shape, x.dtype))
    with pytest.raises(
        OpCheckError, match=r"the shape rule gives f64\[3,4\], but the reference returns f64\[4,3\]"
    ):
        library.opcheck(op, X)


def test_opcheck_fails_on_a_wrong_vjp():
    op = _op("refuse::square", lambda x: x * x, elementwise="{0} * {0}")
    op.register_vjp(lambda ctx, g: [g * ctx.input(0)])  # misses the factor 2
    with pytest.raises(
        OpCheckError,
        match=r"refuse::square: the VJP rule is wrong: the gradient of x0 differs from central "
        r"finite differences by up to",
    ):
        library.opcheck(op, X)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{0} * 2.5", r"the template differs from the reference by up to"),
        (
            "({0} if {0} > 0.0 else 0.0)",
            r"the template on NaN/Inf inputs differs .* where the reference gives nan",
        ),
    ],
    ids=["values", "nan"],
)
def test_opcheck_fails_on_a_template_that_disagrees(template, problem):
    op = _op("refuse::relu", lambda x: np.maximum(x, 0.0), elementwise=template)
    with pytest.raises(OpCheckError, match=problem):
        library.opcheck(op, X)


# --- registration and calls ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{0} * {alpha}", r"field \{alpha\} is neither an input"),
        ("{0} * {mode}", r"field \{mode\} is neither an input .* nor a number attribute"),
        ("max({0}, 0.0)", r"uses 'max'; templates use their operands"),
        ("{0} +", r"does not compile as an expression"),
        ("math.nope({0})", r"uses .nope, which is not a math function"),
    ],
)
def test_templates_are_checked_when_registered(template, problem):
    with pytest.raises(OpError, match=problem):
        library.custom_op("refuse::template", elementwise=template)(lambda x, *, mode="a": x)


def test_definitions_and_attributes_are_checked():
    with pytest.raises(OpError, match=r"named 'namespace::name'"):
        library.custom_op("softsign")(lambda x: x)
    with pytest.raises(OpError, match=r"keyword-only ones with defaults"):
        library.custom_op("refuse::args")(lambda x, *rest: x)
    op = _op("refuse::attrs", lambda x, *, k=1, scale=1.0: x * k * scale)
    with pytest.raises(
        OpError, match=r"refuse::attrs: attribute k=1.5 must be of the type of its default 1"
    ):
        op(X, k=1.5)
    with pytest.raises(OpError, match=r"has no attribute\(s\) \['size'\]"):
        op(X, size=2)
    with pytest.raises(OpError, match=r"refuse::attrs takes 1 inputs, got 2"):
        op(X, X)
    op.register_shape(lambda x, **attrs: (x.shape, "complex64"))
    b = Builder()
    with pytest.raises(
        OpError, match=r"refuse::attrs: its shape rule returned .* return TensorType"
    ):
        op(b.leaf("input", (2,), "float32", "x"))
    with pytest.raises(OpError, match=r"register_kernel\('cpu'\) takes a @numba.njit function"):
        op.register_kernel("cpu")(lambda x, out, k, scale: None)
    with pytest.raises(
        OpError, match=r"its cpu kernel takes 2 parameters, not \(in0, out, k, scale\)"
    ):
        op.register_kernel("cpu")(numba.njit(lambda x, out: None))
    with pytest.raises(OpError, match=r"refuse::square is elementwise"):
        _op("refuse::square", lambda x: x * x, elementwise="{0} * {0}").register_kernel("cpu")(
            numba.njit(lambda x, out: None)
        )


def _define():
    @library.custom_op("refuse::rerun")
    def rerun(x):
        return x + 1.0

    return rerun


def test_rerunning_a_definition_replaces_it_and_another_needs_replace():
    first, second = _define(), _define()  # as a re-run notebook cell does
    assert second is not first and second(np.zeros(1))[0] == 1.0
    with pytest.raises(
        OpError,
        match=r"'refuse::rerun' is already registered \(defined in module .*\); pass replace=True",
    ):
        library.custom_op("refuse::rerun")(lambda x: x + 2.0)
    assert (
        library.custom_op("refuse::rerun", replace=True)(lambda x: x + 2.0)(np.zeros(1))[0] == 2.0
    )


def test_a_second_kernel_is_refused_unless_replaced():
    op = _op("refuse::twice")
    op.register_kernel("cpu")(numba.njit(lambda x, out: None))
    with pytest.raises(OpError, match=r"refuse::twice already has a cpu kernel; pass replace=True"):
        op.register_kernel("cpu")(numba.njit(lambda x, out: out.fill(0.0)))
    op.register_kernel("cpu", replace=True)(numba.njit(lambda x, out: out.fill(0.0)))


# --- VJP results -----------------------------------------------------------------------------


class Layer(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.op, self.fc = op, nn.Linear(4, 4)

    def forward(self, x):
        return self.op(self.fc(x), x)


class Net(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.block = Layer(op)

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (
            lambda ctx, g: [np.ones(ctx.shape(0)), None],
            r"returned a NumPy array f64\[3,4\] for input 0",
        ),
        (lambda ctx, g: [None, None], r"returned None for input 0, which needs a gradient"),
        (lambda ctx, g: [g[0], None], r"gave input 0 a gradient f32\[4\], expected f32\[3,4\]"),
        (lambda ctx, g: g, r"must return a list of 2 gradients"),
    ],
    ids=["array", "none", "shape", "not_a_list"],
)
def test_bad_vjp_results_name_the_op_and_the_layer(rule, problem):
    op = _op("refuse::vjp", lambda a, b: a * b, elementwise="{0} * {1}")
    op.register_vjp(rule, replace=True)
    with pytest.raises(
        NotDifferentiableError, match=rf"op 'refuse::vjp' in layer 'block': .*{problem}"
    ):
        ng.compile_grad(Net(op), nn.MSELoss(), ng.Spec((3, 4)), ng.Spec((3, 4)))


def test_custom_vjp_must_take_what_it_reads_as_inputs():
    outer = nn.Parameter(np.ones(4, np.float32))

    @library.custom_vjp(name="refuse::closes_over", replace=True)
    def scaled(x):
        return x * outer

    scaled.register_vjp(lambda ctx, g: [g])

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = outer

        def forward(self, x):
            return scaled(x)

    with pytest.raises(
        NotDifferentiableError, match=r"reads a traced value .* pass it as an input"
    ):
        ng.compile_grad(Model(), nn.MSELoss(), ng.Spec((3, 4)), ng.Spec((3, 4)))


# --- kernels on backends ---------------------------------------------------------------------


def _model(op, after=lambda y: y):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return op(after(self.fc(x)))

    return Model()


def test_no_kernel_warns_once_and_strict_refuses():
    op = _op("refuse::no_kernel")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ng.compile(_model(op), ng.Spec((2, 4)))
        ng.compile(_model(op), ng.Spec((2, 4)))
    messages = [str(w.message) for w in caught if issubclass(w.category, KernelWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("custom op 'refuse::no_kernel' (module ")
    assert messages[0].endswith(
        "test_library_refusals) has no cpu kernel, so it runs its NumPy reference on cpu; "
        "register one with @<op>.register_kernel('cpu')"
    )
    with pytest.raises(
        BackendError, match=r"'refuse::no_kernel' .* has no cpu kernel and strict=True"
    ):
        ng.compile(_model(op), ng.Spec((2, 4)), strict=True)


def test_anomaly_mode_names_a_custom_op():
    op = _op("refuse::log", lambda x: np.log(x))

    @op.register_kernel("cpu")
    @numba.njit
    def _(x, out):
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = np.log(x[i, j])

    predict = ng.compile(_model(op), ng.Spec((2, 4)), check_finite=True)
    with pytest.raises(NonFiniteError, match=r"%\d+ refuse::log"), np.errstate(all="ignore"):
        predict(-np.ones((2, 4), np.float32) * 100)


# --- saved models ----------------------------------------------------------------------------


def _scale(factor: float):
    source = f"lambda x, *, k=1.0: x * {factor}"  # a new source: a changed definition
    op = library.custom_op("refuse::scale", elementwise=f"{{0}} * {factor}", replace=True)
    op = op(eval(source))
    op.register_vjp(lambda ctx, g: [g * factor])
    return op


@pytest.mark.parametrize("fused", [True, False])
def test_a_changed_definition_is_refused_unless_allowed(tmp_path, fused):
    op = _scale(2.0)
    ng.manual_seed(0)
    disable = () if fused else ("fuse_elementwise", "fuse_epilogue")
    model = _model(op, after=lambda y: y.tanh())
    predict = ng.compile(model, ng.Spec((2, 4)), disable=disable)
    assert ("refuse::scale" in [n.op for n in predict.forward_graph.ops()]) != fused
    path = predict.save(tmp_path / "m.npz")
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(ng.load(path)(x), predict(x))
    _scale(3.0)
    with pytest.raises(
        SavedModelError,
        match=r"custom op 'refuse::scale': its definition .* has changed since the model was "
        r"saved .* allow_changed_ops=True",
    ):
        ng.load(path)
    changed = ng.load(path, allow_changed_ops=True)(x)
    np.testing.assert_allclose(changed, predict(x) * 1.5, rtol=1e-6)


def test_a_file_without_the_record_of_its_custom_op_is_refused(tmp_path):
    op = _scale(2.0)
    predict = ng.compile(_model(op), ng.Spec((2, 4)), backend="interp")
    path = predict.save(tmp_path / "m.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop(aot_file.META)))
    del meta["custom_ops"]
    meta["digest"] = aot_file.digest(meta, arrays)
    np.savez(path, **arrays, **{aot_file.META: np.array(json.dumps(meta))})
    with pytest.raises(
        SavedModelError,
        match=r"custom op 'refuse::scale': the graphs use it, but the file has no record of it",
    ):
        ng.load(path)


def test_a_file_naming_an_op_that_is_not_registered_says_which_module(tmp_path):
    op = _scale(2.0)
    step = ng.compile_training(
        _model(op), nn.MSELoss(), optim.SGD(0.1), ng.Spec((2, 4)), ng.Spec((2, 4)), backend="interp"
    )
    path = step.save(tmp_path / "s.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop(aot_file.META)))
    meta["custom_ops"]["refuse::elsewhere"] = {"module": "mylib.ops", "fingerprint": "sha256:0"}
    meta["digest"] = aot_file.digest(meta, arrays)
    np.savez(path, **arrays, **{aot_file.META: np.array(json.dumps(meta))})
    with pytest.raises(
        SavedModelError,
        match=r"custom op 'refuse::elsewhere': the saved model uses it, and it is defined in "
        r"module mylib.ops, which this process has not imported: import mylib.ops before "
        r"numbagrad.load",
    ):
        ng.load(path)
