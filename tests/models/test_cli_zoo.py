"""``numbagrad train`` on the zoo models registered for the command line (1x32x32 inputs,
10 classes), briefly, on the bundled Fashion-MNIST subset."""

from __future__ import annotations

import pytest

from numbagrad import cli, models


def test_every_zoo_classifier_is_registered_for_32px_single_channel_input():
    for name in ("lenet5_classic", "alexnet", "vgg11", "vgg16", "googlenet", "resnet18"):
        assert getattr(models, cli.MODELS[name].__name__) is cli.MODELS[name]
    assert cli.build_model("resnet18").conv1.in_channels == 1
    assert cli.build_model("resnet50").fc.out_features == 10


@pytest.mark.parametrize(
    "name", ["lenet5_classic", pytest.param("resnet18", marks=pytest.mark.slow)]
)
def test_train_command_runs_the_new_models(name, capsys):
    argv = ["train", name, "--bundled", "--limit", "64", "--batch-size", "32", "--epochs", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"model: {name}, " in out and "epoch 1/1: train loss" in out
