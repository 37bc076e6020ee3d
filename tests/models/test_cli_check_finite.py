"""``numbagrad train`` when training diverges: it stops at the first non-finite loss with one
sentence (exit 1, no traceback) instead of training on; ``--check-finite`` names the op and the
layer where the first NaN or infinity appeared. And the arguments it now refuses."""

from __future__ import annotations

import re

import pytest

from numbagrad import cli
from numbagrad.models import lenet5

# lr 50 from the first step (no warm-up) diverges on the bundled subset within two short
# epochs (4 steps each).
DIVERGING = ["train", "lenet5", "--backend", "interp", "--bundled", "--limit", "256"]
DIVERGING += ["--epochs", "2", "--lr", "50", "--warmup-epochs", "0", "--schedule", "constant"]
LENET_LAYERS = {name for name, _ in lenet5().named_modules() if name}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("numbagrad: error: ")
    return lines[0]


def test_a_diverging_run_stops_at_the_first_non_finite_loss(capsys, monkeypatch):
    monkeypatch.delenv("NUMBAGRAD_CHECK_FINITE", raising=False)
    assert cli.main(DIVERGING) == 1
    line = one_error_line(capsys)
    assert re.fullmatch(
        r"numbagrad: error: training diverged at step \d of epoch [12]: the loss is (nan|-?inf); "
        r"try a lower --lr than 50, or --check-finite to name the op and layer that made the "
        r"first NaN or infinity",
        line,
    ), line


def test_check_finite_names_the_op_and_layer(capsys):
    assert cli.main([*DIVERGING, "--check-finite"]) == 1
    line = one_error_line(capsys)
    found = re.fullmatch(
        r"numbagrad: error: (step \d of epoch [12]|testing after epoch 1): non-finite value in "
        r"the (forward|backward) graph: %\d+ \w+( \([\w, ]+\))? '([\w.]+)' has (nan|-?inf) at "
        r"index \([\d, ]+\); the inputs were finite, so this op made it.*",
        line,
    )
    assert found, line
    assert found[4] in LENET_LAYERS


def test_the_environment_variable_switches_the_cli_into_anomaly_mode(capsys, monkeypatch):
    monkeypatch.setenv("NUMBAGRAD_CHECK_FINITE", "1")
    assert cli.main(DIVERGING) == 1
    assert "non-finite value in the" in one_error_line(capsys)


def test_profile_takes_check_finite(capsys):
    argv = ["profile", "lenet5", "--backend", "interp", "--batch-size", "2", "--steps", "1"]
    assert cli.main([*argv, "--training", "--check-finite"]) == 0
    assert "per kernel (mean of 1 runs" in capsys.readouterr().out


@pytest.mark.parametrize("lr", ["0", "-1", "nan", "inf", "1e999"])
def test_a_learning_rate_that_is_not_positive_and_finite_is_refused(capsys, lr):
    assert cli.main(["train", "lenet5", "--lr", lr]) == 2
    assert f"argument --lr: must be a finite number > 0, got {lr}" in one_error_line(capsys)


def test_save_into_a_missing_directory_is_refused_before_training(capsys, tmp_path):
    target = tmp_path / "no" / "model.npz"
    assert cli.main(["train", "lenet5", "--save", str(target)]) == 2
    assert f"--save {target}: no such directory to save into" in one_error_line(capsys)
