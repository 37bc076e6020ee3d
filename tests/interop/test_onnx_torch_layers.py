"""PyTorch layers whose exports use the less common operators (both exporters): InstanceNorm2d,
GroupNorm (InstanceNormalization on reshaped groups, or opset 21's GroupNormalization),
nearest Upsample (Resize), amax/amin/argmax (ReduceMax, ReduceMin, ArgMax), bidirectional
LSTM and GRU, imported with ng.from_onnx, give onnxruntime's outputs on interp."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx_cases import EXPORTERS, export, perturb_parameters  # noqa: E402
from onnx_oracle import rel_err, run_ort, sample  # noqa: E402
from torch import nn  # noqa: E402

import numbagrad as ng  # noqa: E402

pytestmark = pytest.mark.torch


class NormsAndReductions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.instance = nn.InstanceNorm2d(4, affine=True)
        self.group = nn.GroupNorm(2, 4)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x):
        x = self.up(self.group(self.instance(self.conv(x))))
        peak = x.amax(dim=(2, 3)) - x.amin(dim=1).mean()
        return peak, peak.argmax(dim=1)


class BidirectionalRNNs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(6, 2, batch_first=True, bidirectional=True)

    def forward(self, x):
        y, _ = self.gru(self.lstm(x)[0])
        return y


CASES = {  # name -> (module, input shape, opset per exporter)
    "norms_reductions": (NormsAndReductions, (2, 3, 5, 4), {"legacy": 17, "dynamo": 18}),
    "group_norm_opset21": (lambda: nn.GroupNorm(3, 6), (2, 6, 3, 3), {"dynamo": 21}),
    "rnns": (BidirectionalRNNs, (2, 5, 4), {"legacy": 17, "dynamo": 18}),
}


@pytest.mark.parametrize(
    "name, exporter", [(n, e) for n, case in CASES.items() for e in EXPORTERS if e in case[2]]
)
def test_layer_exports_match_onnxruntime(tmp_path, name, exporter):
    build, shape, opsets = CASES[name]
    torch.manual_seed(0)
    path = export(perturb_parameters(build()), shape, tmp_path / "m.onnx", exporter,
                  opset=opsets[exporter])  # fmt: skip
    x = sample(shape)
    expected = run_ort(path, x)
    got = ng.compile(ng.from_onnx(path), ng.Spec(shape), backend="interp")(x)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        assert rel_err(g, e) < 1e-4
