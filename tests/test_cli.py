"""Tests of the command line (numbagrad.cli): a short training run and its error handling."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import cli, data, models, optim

# Forces the bundled subset (--bundled) so the run is the same where the full data is installed.
QUICK = ["train", "lenet5", "--backend", "interp", "--bundled", "--limit", "256", "--epochs", "1"]
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+): train loss (\S+), test accuracy (\S+), ([\d.]+) images/s, ([\d.]+) s$"
)


def test_train_quick_run_prints_source_compile_time_and_epoch_lines(capsys):
    assert cli.main([*QUICK, "--batch-size", "32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("data: bundled Fashion-MNIST subset")
    assert any(line.startswith("compiled on backend interp in ") for line in out)
    assert any(line.startswith("first training step: ") for line in out)
    epochs = [m for m in map(EPOCH_LINE.match, out) if m]
    assert [(m[1], m[2]) for m in epochs] == [("1", "1")]
    for m in epochs:
        loss, acc, speed, seconds = (float(m[i]) for i in (3, 4, 5, 6))
        assert math.isfinite(loss) and loss > 0
        assert 0.0 <= acc <= 1.0
        assert speed > 0 and seconds > 0


@pytest.mark.parametrize(
    "argv, cls, options",
    [
        ([], optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}),
        (["--lr", "0.1", "--momentum", "0"], optim.SGD, {"lr": 0.1, "momentum": 0.0}),
        (["--optimizer", "adam"], optim.Adam, {"lr": 1e-3, "weight_decay": 5e-4}),
        (["--optimizer", "adamw", "--weight-decay", "0.01"], optim.AdamW, {"weight_decay": 0.01}),
        (["--optimizer", "rmsprop"], optim.RMSprop, {"lr": 1e-3, "momentum": 0.0}),
        (["--optimizer", "rmsprop", "--momentum", "0.5"], optim.RMSprop, {"momentum": 0.5}),
        (["--optimizer", "adagrad", "--lr", "0.05"], optim.Adagrad, {"lr": 0.05}),
    ],
)
def test_optimizer_flags_build_the_named_optimizer(argv, cls, options):
    args = cli.build_parser().parse_args(["train", "lenet5", *argv])
    optimizer = cli.recipe_for("lenet5", args).make_optimizer()
    assert type(optimizer) is cls
    assert {k: optimizer.defaults[k] for k in options} == options


def test_train_with_adam_prints_the_optimizer_and_learns(capsys):
    argv = [*QUICK, "--optimizer", "adam", "--batch-size", "32", "--schedule", "constant"]
    argv += ["--warmup-epochs", "0"]  # one short epoch: the recipe's warm-up would fill it
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.endswith("; optimizer adam") for line in out if line.startswith("model: "))
    (epoch,) = [m for m in map(EPOCH_LINE.match, out) if m]
    assert float(epoch[4]) > 0.15  # chance is 0.1 on the 1000 test images


def test_train_saves_the_trained_model_for_load(tmp_path, capsys):
    path = tmp_path / "lenet5.npz"
    assert cli.main([*QUICK, "--batch-size", "32", "--save", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"saved the compiled model: {path} (numbagrad.load)"
    acc = float([m for m in map(EPOCH_LINE.match, out) if m][0][4])
    x, y = data.load_fashion_mnist("test", bundled=True)
    assert cli.evaluate(ng.load(path), x, y, 256) == acc  # the evaluation batch size


def test_evaluate_counts_every_row_of_a_partial_last_batch():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = np.array([0, 1] * 5)
    seen = []

    def predict(batch):  # class 1 for odd values; padded rows are zeros, i.e. "class 0"
        seen.append(batch.shape)
        return np.stack([batch[:, 0] % 2 == 0, batch[:, 0] % 2 == 1], axis=1).astype(np.float32)

    assert cli.evaluate(predict, x, y, batch=4) == 1.0
    assert seen == [(4, 1)] * 3
    y[-1] = 0  # one wrong label in the padded last batch is counted
    assert cli.evaluate(predict, x, y, batch=4) == 0.9


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "lenet5", "--epochs", "-1"], "--epochs: must be >= 1"),
        (["train", "lenet5", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["train", "lenet5", "--lr", "-0.1"], "--lr: must be a finite number > 0"),
        (["train", "lenet5", "--backend", "tpu"], "invalid choice: 'tpu'"),
        (["train", "lenet5", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (
            ["train", "lenet5", "--optimizer", "adam", "--momentum", "0.5"],
            "--momentum applies to sgd and rmsprop, not to --optimizer adam",
        ),
        (["train", "resnet999"], "unknown model 'resnet999'; known models: lenet5"),
        (["train", "lenet5", "--data", "/no/such/dir"], "/no/such/dir does not exist"),
        (["train", "lenet5", "--bundled", "--limit", "10"], "make no full batch of 64"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["profile", "lenet5", "--disable", "fuse_all"], "unknown pass 'fuse_all' for --disable"),
        (["profile", "lenet9"], "unknown model 'lenet9'"),
        (["profile", "lenet5", "--steps", "0"], "--steps: must be >= 1"),
        (["profile", "lenet5", "--memory-budget", "1MB"], "add --training"),
        (["profile", "lenet5", "--training", "--memory-budget", "lots"], "not a positive size"),
        (
            ["profile", "lenet5", "--training", "--batch-size", "2", "--backend", "interp"]
            + ["--memory-budget", "1KiB"],
            "below the smallest arena this training step can plan",
        ),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_give_one_error_line_and_nonzero_exit(capsys, args, message):
    assert cli.main(args) != 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("numbagrad: error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err


def test_unreadable_data_is_one_error_line(tmp_path, capsys):
    for name in data.REQUIRED_FILES:
        (tmp_path / name).write_bytes(b"\x00\x00\x08")  # a truncated IDX header
    assert cli.main(["train", "lenet5", "--backend", "interp", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("numbagrad: error: IDX file ")


def test_every_registered_model_is_a_zoo_constructor():
    for name, build in cli.MODELS.items():
        assert getattr(models, build.__name__) is build, name


def test_python_dash_m_help_works():
    for argv in (["--help"], ["train", "--help"], ["profile", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "numbagrad", *argv], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: numbagrad")
    assert "--batch-size" in result.stdout and "lenet5" in result.stdout


def test_profile_training_prints_the_pass_table_dumps_and_saves_json(tmp_path, capsys):
    dump, report = tmp_path / "dump", tmp_path / "report.json"
    argv = ["profile", "lenet5", "--training", "--batch-size", "2", "--steps", "2"]
    assert cli.main([*argv, "--dump", str(dump), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model: lenet5, training step (sgd) at batch 2 on backend cpu\n")
    table = [line.split() for line in out.splitlines()]
    assert ["fuse_epilogue", "forward"] in [row[:2] for row in table]
    assert ["fuse_epilogue", "backward"] in [row[:2] for row in table]
    assert re.search(r"^total: kernels (\d+) -> (\d+);", out, re.M)
    assert "per kernel (mean of 2 runs" in out and "conv2d_epilogue" in out
    data = json.loads(report.read_text())
    assert {"kernels_before", "kernels_after", "naive_bytes", "planned_bytes", "passes"} <= set(
        data
    )
    assert data["kernels_after"] < data["kernels_before"]
    assert {p["graph"] for p in data["passes"]} == {"forward", "backward", "both"}  # one arena
    names = {f.name for f in dump.iterdir()}
    for graph in ("forward", "backward"):
        assert f"{graph}.00.input.txt" in names
        assert any(n.startswith(graph) and n.endswith(".fuse_epilogue.dot") for n in names)


def test_profile_of_an_adam_step_on_interp(tmp_path, capsys):
    argv = ["profile", "lenet5", "--training", "--optimizer", "adam", "--batch-size", "1"]
    assert cli.main([*argv, "--steps", "1", "--backend", "interp", "--dump", str(tmp_path)]) == 0
    assert "training step (adam) at batch 1" in capsys.readouterr().out.splitlines()[0]
    assert "adam.bias_correction1(0.9)" in (tmp_path / "backward.00.input.txt").read_text()


def test_profile_with_passes_disabled_on_interp(capsys):
    argv = ["profile", "lenet5", "--batch-size", "1", "--steps", "1", "--backend", "interp"]
    assert cli.main([*argv, "--disable", "fuse_epilogue", "plan_memory"]) == 0
    out = capsys.readouterr().out
    assert "disabled: fuse_epilogue, plan_memory" in out.splitlines()[0]
    passes = [line.split()[0] for line in out.splitlines() if " -> " in line]
    assert "fuse_elementwise" in passes and "fuse_epilogue" not in passes
    assert "plan_memory" not in passes
    assert "reference" in out  # the interp backend's kernels, in the runtime profile


def test_every_model_has_a_recipe():
    assert set(cli.RECIPES) == set(cli.MODELS)


def test_every_flag_overrides_its_part_of_the_recipe():
    argv = ["--epochs", "3", "--batch-size", "16", "--lr", "0.2", "--momentum", "0.5"]
    argv += ["--nesterov", "--weight-decay", "0.001", "--schedule", "constant"]
    argv += ["--warmup-epochs", "0.5", "--label-smoothing", "0.2", "--no-augment"]
    argv += ["--crop-padding", "3", "--optimizer", "sgd"]
    args = cli.build_parser().parse_args(["train", "resnet18", *argv])
    recipe = cli.recipe_for("resnet18", args)
    assert recipe == cli.recipes.Recipe(
        epochs=3, batch_size=16, optimizer="sgd", lr=0.2, momentum=0.5, nesterov=True,
        weight_decay=0.001, schedule="constant", warmup_epochs=0.5, label_smoothing=0.2,
        augment=False, crop_padding=3,
    )  # fmt: skip
    schedule = recipe.make_schedule(steps_per_epoch=10)
    assert [schedule.lr_at(n) for n in (0, 4, 5, 100)] == pytest.approx([0.04, 0.2, 0.2, 0.2])


def test_another_optimizer_takes_its_own_defaults_and_keeps_the_rest():
    args = cli.build_parser().parse_args(["train", "lenet5", "--optimizer", "adam"])
    recipe, tuned = cli.recipe_for("lenet5", args), cli.RECIPES["lenet5"]
    assert (recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay) == (
        "adam", 1e-3, None, 5e-4,
    )  # fmt: skip
    for kept in ("epochs", "batch_size", "schedule", "warmup_epochs", "label_smoothing"):
        assert getattr(recipe, kept) == getattr(tuned, kept), kept
    assert (recipe.augment, recipe.crop_padding) == (tuned.augment, tuned.crop_padding)


def test_the_recipe_is_printed(capsys):
    argv = [*QUICK, "--batch-size", "32", "--lr", "0.02", "--schedule", "constant", "--augment"]
    argv += ["--crop-padding", "2", "--warmup-epochs", "0.5", "--label-smoothing", "0"]
    assert cli.main(argv) == 0
    assert (
        "recipe: sgd lr 0.02 momentum 0.9, weight decay 0.0005, constant schedule after a "
        "0.5-epoch warm-up, label smoothing 0, augmentation crop padding 2 and flip, batch 32, "
        "1 epoch"
    ) in capsys.readouterr().out.splitlines()
