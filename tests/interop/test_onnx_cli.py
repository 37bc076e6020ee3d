"""The command line with ONNX files: ``compile`` (ahead of time, loaded back by ng.load),
``summary``, and ``train`` of an .onnx model whose input fits the data (refused otherwise)."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx_cases import export, lenet5  # noqa: E402
from onnx_oracle import rel_err, run_ort, sample  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad import cli  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli") / "lenet.onnx"
    return export(lenet5(), (1, 1, 32, 32), path, "legacy", dynamic_axes={"input.1": {0: "N"}},
                  input_names=["input.1"])  # fmt: skip


def test_compile_saves_a_model_ng_load_runs(lenet_file, tmp_path, capsys):
    saved = tmp_path / "lenet.npz"
    argv = ["compile", str(lenet_file), "--input-shape", "2,1,32,32", "--save", str(saved)]
    assert cli.main(argv) == 0
    assert "saved the compiled model" in capsys.readouterr().out
    x = sample((2, 1, 32, 32))
    loaded = ng.load(saved)
    assert rel_err(loaded(x), run_ort(lenet_file, x)[0]) < 1e-4
    exported = ng.to_onnx(loaded).SerializeToString()  # and a loaded model exports again
    assert rel_err(run_ort(exported, x)[0], loaded(x)) < 1e-5


def test_summary_of_an_onnx_file(lenet_file, capsys):
    assert cli.main(["summary", str(lenet_file)]) == 0
    out = capsys.readouterr().out
    assert "OnnxConv" in out and "OnnxGemm" in out
    assert f"{sum(p.numel() for p in lenet5().parameters()):,}" in out


def test_train_takes_an_onnx_model(lenet_file, tmp_path, capsys):
    argv = ["train", str(lenet_file), "--backend", "interp", "--bundled", "--limit", "64",
            "--batch-size", "32", "--eval-batch-size", "100", "--epochs", "1",
            "--save", str(tmp_path / "trained.npz")]  # fmt: skip
    assert cli.main(argv) == 0
    assert f"model: {lenet_file}" in capsys.readouterr().out
    x = sample((100, 1, 32, 32))
    assert ng.load(tmp_path / "trained.npz")(x).shape == (100, 10)


def test_onnx_model_whose_input_does_not_fit_the_data(tmp_path, capsys):
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    path = export(linear, (1, 1, 28, 28), tmp_path / "small.onnx", "legacy")
    assert cli.main(["train", str(path), "--bundled", "--limit", "64"]) == 2
    assert "batches of 1x32x32 images" in capsys.readouterr().err


def test_compile_refuses_a_corrupt_file(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert cli.main(["compile", str(tmp_path / "bad.onnx"), "--save", str(tmp_path / "x")]) == 1
    assert "bad.onnx" in capsys.readouterr().err
