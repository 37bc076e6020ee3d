"""``ng.summary``: LeNet-5's table exactly as the course prints it, totals that equal the
parameter count, and the ``numbagrad summary`` command."""

from __future__ import annotations

import pytest

import numbagrad as ng
from numbagrad import cli, models

# The course's LeNet-5 table: layer, output, connections (bias included), parameters.
LENET5_TABLE = [
    ("C1", (6, 28, 28), 122_304, 156),
    ("S2", (6, 14, 14), 5_880, 12),
    ("C3", (16, 10, 10), 151_600, 1_516),
    ("S4", (16, 5, 5), 2_000, 32),
    ("C5", (120, 1, 1), 48_120, 48_120),
    ("F6", (84,), 10_164, 10_164),
]


def test_lenet5_classic_reproduces_the_course_table():
    table = ng.summary(models.lenet5_classic(), ng.Spec((1, 1, 32, 32)))
    rows = [(r.name, r.output_shape, r.connections, r.params) for r in table]
    assert rows[:6] == LENET5_TABLE
    assert rows[6] == ("output", (10,), 850, 850)
    assert len(rows) == 7  # the scaled-tanh activations and the flatten are left out
    assert [r.kind for r in table][:4] == ["Conv2d", "Subsampling", "Conv2d", "Subsampling"]
    assert (table["C3"].kernels, table["C3"].kernel_size, table["C3"].stride) == (
        16,
        (5, 5),
        (1, 1),
    )
    assert (table["S2"].kernels, table["S2"].kernel_size, table["S2"].stride) == (6, (2, 2), (2, 2))
    assert sum(r.params for r in table.rows[:6]) == 60_000
    assert table.total_params == 60_850


def test_lenet5_classic_table_prints():
    text = str(ng.summary(models.lenet5_classic(), (1, 1, 32, 32)))
    lines = text.splitlines()
    assert lines[0] == "LeNet5Classic on input 1x32x32 (per sample)"
    assert lines[1].split() == [
        "layer", "kind", "kernels", "size", "stride", "output", "connections", "params"
    ]  # fmt: skip
    c3 = next(line for line in lines if line.startswith("C3"))
    assert c3.split() == ["C3", "Conv2d", "16", "5x5", "1x1", "16x10x10", "151,600", "1,516"]
    f6 = next(line for line in lines if line.startswith("F6"))
    assert f6.split() == ["F6", "Linear", "84", "10,164", "10,164"]
    assert lines[-1].split()[0] == "total" and lines[-1].split()[-1] == "60,850"


def test_all_layers_lists_the_activations_too():
    table = ng.summary(models.lenet5_classic(), (1, 1, 32, 32), all_layers=True)
    kinds = [r.kind for r in table]
    assert kinds.count("ScaledTanh") == 6 and "Flatten" in kinds
    assert table.total_params == 60_850


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: models.googlenet(1000, 3), (1, 3, 224, 224)),
        (lambda: models.googlenet(10, 1), (1, 1, 32, 32)),
    ],
    ids=["224px", "32px"],
)
def test_googlenet_summary_totals_equal_the_parameter_count(build, shape):
    model = build()
    table = ng.summary(model, ng.Spec(shape))
    assert table.total_params == model.num_parameters()
    assert table.rows[-1].name == "fc" and table.rows[-1].output_shape == (model.fc.out_features,)
    if shape[-1] == 224:
        assert table["inception3a.branch1.conv"].output_shape == (64, 28, 28)
        assert table["inception5b.branch4.1.conv"].output_shape == (128, 7, 7)
        assert table["maxpool1"].output_shape == (64, 56, 56)  # ceil mode: 112 -> 56
    assert "inception4e" in str(table)


def test_summary_counts_a_shared_parameter_once_and_keeps_the_mode():
    model = models.autoencoder((12, 6, 3), tied=True)
    model.train()
    table = ng.summary(model, (2, 12))
    assert table.total_params == model.num_parameters()
    assert table["decoder.2"].params == 12  # its own bias only; W is the encoder's
    assert all(m.training for _, m in model.named_modules())
    assert "forward" not in model.encoder[0].__dict__  # the recording wrappers are gone


def test_summary_command_prints_the_table(capsys):
    assert cli.main(["summary", "lenet5_classic"]) == 0
    out = capsys.readouterr().out
    assert "151,600" in out and "60,850" in out
    assert cli.main(["summary", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.bn2" in out and f"{models.resnet18(10, 1).num_parameters():,}" in out


def test_summary_command_refuses_an_unknown_model(capsys):
    assert cli.main(["summary", "lenet9"]) == 2
    assert "unknown model 'lenet9'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(cli.MODELS))
def test_every_cli_model_summary_totals_equal_its_parameter_count(name):
    model = cli.build_model(name)
    table = ng.summary(model, ng.Spec((2, 1, 32, 32)))
    assert table.total_params == model.num_parameters()
    assert table.rows[-1].output_shape == (10,) or name == "transformer_encoder"
    assert all(r.connections >= 0 for r in table)


def test_sequence_layers_report_per_sample_shapes_and_connections():
    model = models.lstm_classifier(8, 16, 10)
    table = ng.summary(model, (3, 6, 8))  # batch 3, 6 steps of 8 features
    assert table["lstm"].output_shape == (6, 16)
    assert table["lstm"].connections == 6 * 4 * 16 * (8 + 1 + 16 + 1)
    t = ng.summary(models.transformer_encoder(8, 6, 16, 4, 1, 32, 10), (3, 6, 8))
    assert t["embed"].output_shape == (6, 16)  # applied to the 3*6 rows: 6 per sample
    assert t["embed"].connections == 6 * 16 * (8 + 1)
