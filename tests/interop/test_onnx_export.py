"""ng.to_onnx: zoo models exported (traced, or compiled with fused kernels expanded back) pass
onnx.checker and run in onnxruntime with numbagrad's outputs; export -> from_onnx gives the
same outputs and the same state_dict keys back."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_oracle import rel_err, run_ort, sample  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad import models  # noqa: E402
from numbagrad.errors import OnnxError  # noqa: E402


def _with_running_stats(model):
    """Running statistics away from 0 and 1, so eval-mode BatchNorm does something."""
    rng = np.random.default_rng(3)
    for _, b in model.named_buffers():
        if b.data.dtype == np.float32:
            b.data[...] = rng.uniform(0.5, 1.5, b.data.shape)
    return model


CASES = {
    "lenet5": (models.lenet5, (2, 1, 32, 32)),
    "lenet5_classic": (models.lenet5_classic, (1, 1, 32, 32)),
    "resnet18": (lambda: _with_running_stats(models.resnet18(num_classes=10, in_channels=3)),
                 (1, 3, 32, 32)),
    "alexnet": (lambda: models.alexnet(num_classes=10, in_channels=1, input_size=32),
                (1, 1, 32, 32)),
    "transformer": (lambda: models.transformer_encoder(input_size=8, seq_len=6), (2, 6, 8)),
    "fcn": (models.fcn, (1, 1, 16, 16)),
    "conv_autoencoder": (models.conv_autoencoder, (1, 1, 28, 28)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_export_runs_in_onnxruntime_and_imports_back(tmp_path, name):
    ng.manual_seed(0)
    build, shape = CASES[name]
    model, x = build(), sample(shape)
    compiled = ng.compile(model, ng.Spec(shape), backend="interp")
    fused = {n.op for n in compiled.forward_graph.nodes} & {
        "fused_elementwise", "conv2d_epilogue", "matmul_epilogue"}  # fmt: skip
    assert fused  # the compiled graph really has fused kernels to expand
    expected = compiled(x)
    for k, source in enumerate((model, model, compiled)):  # traced, optimized, compiled
        path = tmp_path / f"{k}.onnx"
        proto = ng.to_onnx(source, ng.Spec(shape), path, optimized=k == 1)
        onnx.checker.check_model(onnx.load(path))
        assert all(n.domain == "" for n in proto.graph.node)
        assert rel_err(run_ort(path, x)[0], expected) < 1e-5
        back = ng.from_onnx(path)
        assert rel_err(ng.compile(back, ng.Spec(shape), backend="interp")(x), expected) < 1e-5
    trained = [k for k, _ in model.named_parameters()] + [
        k for k, b in model.named_buffers() if "running" in k]  # fmt: skip
    assert set(trained) <= set(back.state_dict())


def test_export_on_the_cpu_backend_matches(tmp_path):
    model, shape = models.lenet5(), (2, 1, 32, 32)
    compiled = ng.compile(model, ng.Spec(shape))
    x, path = sample(shape), tmp_path / "m.onnx"
    ng.to_onnx(compiled, path=path)
    assert rel_err(run_ort(path, x)[0], compiled(x)) < 1e-5


def test_an_op_without_an_onnx_equivalent_is_refused():
    class Cumulative(ng.nn.Module):
        def forward(self, x):
            return ng.functional.cumsum(x, 1)

    with pytest.raises(OnnxError, match="cumsum"):
        ng.to_onnx(Cumulative(), ng.Spec((2, 3)))


def test_an_exported_model_imports_at_another_batch_size(tmp_path):
    ng.manual_seed(0)
    model, path = models.lenet5(), tmp_path / "lenet.onnx"
    ng.to_onnx(model, ng.Spec((1, 1, 32, 32)), path)  # the flatten keeps the batch axis free
    x = sample((3, 1, 32, 32))
    expected = ng.compile(model, ng.Spec(x.shape), backend="interp")(x)
    got = ng.compile(ng.from_onnx(path), ng.Spec(x.shape), backend="interp")(x)
    assert rel_err(got, expected) < 1e-6


def test_a_training_step_is_refused():
    model, shape = models.mlp([4, 3]), (2, 4)
    loss, sgd, y = ng.nn.CrossEntropyLoss(), ng.optim.SGD(lr=0.1), ng.Spec((2,), "int64")
    step = ng.compile_training(model, loss, sgd, ng.Spec(shape), y, backend="interp")
    with pytest.raises(OnnxError, match="inference models.*TrainingStep"):
        ng.to_onnx(step)
