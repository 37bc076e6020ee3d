"""PyTorch-exported models of the zoo's families (both exporters) imported with ng.from_onnx
give onnxruntime's outputs, on the interp and cpu backends; GoogLeNet's parallel 1x1 convs
merge on the imported graph as on the zoo's."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx_cases import EXPORTERS, MODELS, export, export_zoo, randomize_batchnorm  # noqa: E402
from onnx_oracle import rel_err, run_ort, sample  # noqa: E402

import numbagrad as ng  # noqa: E402

pytestmark = pytest.mark.torch

# Every family from both exporters on cpu too (the two graphs differ: the legacy exporter
# folds BatchNorm into the convs, the dynamo one keeps it and names nodes otherwise).
CPU_CASES = {(name, exporter) for name in MODELS for exporter in EXPORTERS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder, cache = tmp_path_factory.mktemp("onnx_models"), {}

    def get(name: str, exporter: str):
        if (name, exporter) not in cache:
            cache[name, exporter] = export_zoo(name, folder, exporter)
        return cache[name, exporter]

    return get


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", list(MODELS))
def test_imported_model_matches_onnxruntime(exported, name, exporter):
    path, shape = exported(name, exporter)
    x = sample(shape)
    (expected,) = run_ort(path, x)
    model = ng.from_onnx(path)
    backends = ["interp"] + (["cpu"] if (name, exporter) in CPU_CASES else [])
    for backend in backends:
        got = ng.compile(model, ng.Spec(shape), backend=backend)(x)
        assert got.shape == expected.shape
        assert rel_err(got, expected) < 1e-4, backend


@pytest.mark.parametrize("exporter, opset", [("legacy", 20), ("dynamo", 21)])
def test_newer_opsets(tmp_path, exporter, opset):
    torch.manual_seed(0)
    build, shape = MODELS["transformer"]
    path = export(build(), shape, tmp_path / "m.onnx", exporter, opset=opset)
    x = sample(shape)
    got = ng.compile(ng.from_onnx(path), ng.Spec(shape), backend="interp")(x)
    assert rel_err(got, run_ort(path, x)[0]) < 1e-4


def test_state_dict_keys_are_pytorchs(exported):
    path, _ = exported("resnet18", "dynamo")
    keys = set(ng.from_onnx(path).state_dict())
    assert {"conv1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "fc.weight", "fc.bias"} <= keys  # fmt: skip
    path, _ = exported("lenet5", "legacy")
    assert list(ng.from_onnx(path).state_dict()) == list(MODELS["lenet5"][0]().state_dict())


def test_googlenet_parallel_1x1_convs_merge(exported):
    path, shape = exported("googlenet", "dynamo")
    passes = ["dce", "constant_folding", "simplify", "cse", "merge_parallel", "dce"]
    compiled = ng.compile(ng.from_onnx(path), ng.Spec(shape), backend="interp", passes=passes)
    record = next(r for r in compiled.report.passes if r.name == "merge_parallel")
    assert record.nodes_after != record.nodes_before  # the report shows the pass at work

    def convs(graph):
        return sum(n.op == "conv2d" for n in graph.nodes)

    # Each of the 9 Inception blocks reads its input with three 1x1 convs: they become one.
    assert convs(compiled.forward_graph) == convs(compiled.traced_graph) - 2 * 9
    x = sample(shape)
    assert rel_err(compiled(x), run_ort(path, x)[0]) < 1e-4


def test_batchnorm_of_an_import_folds_into_its_conv(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False),
                              torch.nn.BatchNorm2d(4), torch.nn.ReLU())  # fmt: skip
    shape = (2, 3, 6, 6)
    # The legacy exporter keeps BatchNormalization when it folds no constants.
    path = export(randomize_batchnorm(net), shape, tmp_path / "bn.onnx", "legacy",
                  do_constant_folding=False)  # fmt: skip
    passes = ["dce", "constant_folding", "simplify", "cse", "fold_conv_bn", "dce"]
    compiled = ng.compile(ng.from_onnx(path), ng.Spec(shape), backend="interp", passes=passes)
    assert "batch_norm" in {n.op for n in compiled.traced_graph.nodes}
    assert "batch_norm" not in {n.op for n in compiled.forward_graph.nodes}
    x = sample(shape)
    assert rel_err(compiled(x), run_ort(path, x)[0]) < 1e-5


def test_legacy_names_stay_keys_and_node_names_give_layer_paths(exported):
    """The legacy exporter folds BatchNorm into convs whose weights it names onnx::Conv_N:
    those names are the keys, and each conv's layer sits where its node's name says."""
    path, shape = exported("resnet18", "legacy")
    model = ng.from_onnx(path)
    keys = list(model.state_dict())
    assert all(k.startswith("onnx__Conv_") for k in keys if not k.startswith("fc."))
    convs = [n for n, m in MODELS["resnet18"][0]().named_modules()
             if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    rows = [r.name for r in ng.summary(model, ng.Spec(shape)).rows]
    assert sorted(rows[:-2]) == sorted(convs) and rows[-2] == "fc"


def test_summary_lists_the_imported_layers(exported):
    path, shape = exported("lenet5", "dynamo")
    table = ng.summary(ng.from_onnx(path), ng.Spec(shape))
    assert [r.name for r in table.rows] == ["0", "3", "6", "9", "11"]
    assert table.total_params == sum(p.numel() for p in MODELS["lenet5"][0]().parameters())
    assert table["0"].kernels == 6 and table["0"].kernel_size == (5, 5)
