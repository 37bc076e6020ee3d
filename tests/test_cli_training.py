"""``numbagrad train`` with --log, --plot, --checkpoint and --resume, and ``numbagrad eval``,
run from the command line on a few batches of the bundled subset (interp backend: nothing to
compile)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import cli, data
from numbagrad.cli import checkpoint

# 8 steps of 32 an epoch; the recipe spelled out so that tuning lenet5's does not move these.
BASE = ["train", "lenet5", "--backend", "interp", "--bundled", "--limit", "256"]
BASE += ["--batch-size", "32", "--eval-batch-size", "500", "--optimizer", "sgd", "--lr", "0.05"]
BASE += ["--schedule", "cosine", "--warmup-epochs", "1", "--augment", "--label-smoothing", "0.1"]
EPOCHS = ["--epochs", "3"]
COMPARED = ("epoch", "train_loss", "test_accuracy", "lr", "steps")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC and head[12:16] == b"IHDR", "not a PNG file"
    return struct.unpack(">II", head[16:24])


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def compared(path) -> list[tuple]:
    return [tuple(r[k] for k in COMPARED) for r in records(path)]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("numbagrad: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run: its checkpoints, log, curves and saved model."""
    out = tmp_path_factory.mktemp("reference")
    argv = [*BASE, *EPOCHS, "--checkpoint", str(out / "ck"), "--log", str(out / "log.jsonl")]
    argv += ["--save", str(out / "model.npz")]
    assert cli.main(argv) == 0
    return out


def test_log_has_one_record_per_epoch(reference, capsys):
    logged = records(reference / "log.jsonl")
    assert [r["epoch"] for r in logged] == [1, 2, 3]
    assert [r["steps"] for r in logged] == [8, 16, 24]
    keys = {"epoch", "train_loss", "test_accuracy", "images_per_s", "lr", "time_s", "steps"}
    for r in logged:
        assert set(r) == keys
        assert math.isfinite(r["train_loss"]) and 0 <= r["test_accuracy"] <= 1
        assert r["images_per_s"] > 0 and r["time_s"] > 0
    # Warm-up over the first epoch's 8 steps, then a cosine over 16 steps to 0: the last
    # step of each epoch (the 8th, 16th, 24th) ran at these.
    expected = [0.05 * (1 + math.cos(math.pi * k / 16)) / 2 for k in (0, 7, 15)]
    np.testing.assert_allclose([r["lr"] for r in logged], expected, rtol=1e-6)


def test_the_plot_is_a_png_redrawn_after_every_epoch(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")  # the extra "plot"
    drawn = []
    real = cli.plots.training_curves

    def spy(history, steps_per_epoch, path, title):
        drawn.append((len(history.epochs), len(history.batch_losses), steps_per_epoch))
        real(history, steps_per_epoch, path, title)
        assert png_size(path) == (1000, 400)

    monkeypatch.setattr(cli.plots, "training_curves", spy)
    argv = [*BASE, "--epochs", "2", "--plot", str(tmp_path / "c.png")]
    assert cli.main(argv) == 0
    assert drawn == [(1, 8, 8), (2, 16, 8)]
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]  # no partial file left


def test_log_lines_match_the_printed_epoch_lines(tmp_path, capsys):
    argv = [*BASE, "--epochs", "1", "--log", str(tmp_path / "log.jsonl")]
    assert cli.main(argv) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("epoch 1/1")][0]
    (r,) = records(tmp_path / "log.jsonl")
    assert line.startswith(
        f"epoch 1/1: train loss {r['train_loss']:.4f}, test accuracy {r['test_accuracy']:.4f}"
    )


def test_checkpoints_keep_the_last_two_whole_epochs(reference):
    ck = reference / "ck"
    assert sorted(p.name for p in ck.iterdir()) == ["epoch-0002", "epoch-0003"]
    for name in ("epoch-0002", "epoch-0003"):
        assert sorted(p.name for p in (ck / name).iterdir()) == ["step.npz", "trainer.json"]
    state = json.loads((ck / "epoch-0003" / "trainer.json").read_text())
    assert state["epoch"] == 3 and len(state["history"]["batch_losses"]) == 24
    assert ng.load(ck / "epoch-0003" / "step.npz").step_count == 24


def test_resume_after_an_interrupt_between_epochs_equals_the_uninterrupted_run(
    reference, tmp_path, monkeypatch, capsys
):
    ck, log = tmp_path / "ck", tmp_path / "log.jsonl"
    real_save = checkpoint.save

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # ^C right after epoch 1's checkpoint

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    argv = [*BASE, *EPOCHS, "--checkpoint", str(ck), "--log", str(log)]
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == "numbagrad: interrupted\n"
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert cli.main([*BASE, *EPOCHS, "--resume", str(ck), "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {ck / 'epoch-0001'} after epoch 1" in out
    assert compared(log) == compared(reference / "log.jsonl")
    _same_training_state(ck / "epoch-0003", reference / "ck" / "epoch-0003")


def _same_training_state(a, b) -> None:
    step_a, step_b = ng.load(a / "step.npz"), ng.load(b / "step.npz")
    assert step_a.step_count == step_b.step_count
    state_a, state_b = step_a.state_dict(), step_b.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    for key, value in step_a.optimizer_state.items():
        np.testing.assert_array_equal(value, step_b.optimizer_state[key], err_msg=key)
    history_a = json.loads((a / "trainer.json").read_text())["history"]
    history_b = json.loads((b / "trainer.json").read_text())["history"]
    assert history_a["batch_losses"] == history_b["batch_losses"]


def test_a_killed_process_resumes_exactly(reference, tmp_path, capsys):
    ck, log = tmp_path / "ck", tmp_path / "log.jsonl"
    argv = [*BASE, *EPOCHS, "--checkpoint", str(ck), "--log", str(log)]
    proc = subprocess.Popen([sys.executable, "-m", "numbagrad", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (ck / "epoch-0001").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 5 minutes"
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # in epoch 2 (or while writing its checkpoint)
    finally:
        proc.kill()
        proc.wait()
    assert cli.main([*BASE, *EPOCHS, "--resume", str(ck), "--log", str(log)]) == 0
    assert compared(log) == compared(reference / "log.jsonl")
    _same_training_state(ck / "epoch-0003", reference / "ck" / "epoch-0003")
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # no partial checkpoint


def _copy_checkpoints(reference, tmp_path):
    return shutil.copytree(reference / "ck", tmp_path / "ck")


def test_resume_refuses_another_configuration(reference, tmp_path, capsys):
    ck = _copy_checkpoints(reference, tmp_path)
    shutil.rmtree(ck / "epoch-0003")
    argv = [a if a != "0.05" else "0.1" for a in BASE]
    assert cli.main([*argv, *EPOCHS, "--resume", str(ck)]) == 1
    assert (
        f"--resume {ck}: the run was trained with --lr 0.05, this command asks for --lr 0.1; "
        "give the same training options to resume it" in one_error_line(capsys)
    )
    assert cli.main([*BASE, *EPOCHS, "--no-augment", "--resume", str(ck)]) == 1
    assert "trained with --augment, this command asks for --no-augment" in one_error_line(capsys)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda ck: (ck / "epoch-0003" / "trainer.json").write_text("{"), "cannot be read as JSON"),
        (
            lambda ck: (ck / "epoch-0003" / "trainer.json").write_text(
                json.dumps({**_state(ck), "rng": {"bit_generator": "MT19937"}})
            ),
            "its random-generator state is not one of this numpy's default generator",
        ),
        (
            lambda ck: (ck / "epoch-0003" / "trainer.json").write_text(
                json.dumps({**_state(ck), "epoch": 2})
            ),
            "it records epoch 2 in the directory of epoch 3",
        ),
        (
            lambda ck: (ck / "epoch-0003" / "step.npz").write_bytes(b"PK\x03\x04 not a zip"),
            "step.npz",
        ),
    ],
)
def test_resume_refuses_a_damaged_checkpoint_in_one_line(reference, tmp_path, capsys, damage,
                                                         message):  # fmt: skip
    ck = _copy_checkpoints(reference, tmp_path)
    damage(ck)
    assert cli.main([*BASE, *EPOCHS, "--resume", str(ck)]) == 1
    assert message in one_error_line(capsys)


def _state(ck) -> dict:
    return json.loads((ck / "epoch-0003" / "trainer.json").read_text())


def test_checkpoint_and_resume_refusals(reference, tmp_path, capsys, monkeypatch):
    ck = _copy_checkpoints(reference, tmp_path)
    assert cli.main([*BASE, *EPOCHS, "--checkpoint", str(ck)]) == 1
    assert f"--checkpoint {ck} already holds checkpoints; continue that run with --resume" in (
        one_error_line(capsys)
    )
    (tmp_path / "empty").mkdir()
    assert cli.main([*BASE, "--resume", str(tmp_path / "empty")]) == 1
    assert "the directory holds no checkpoint" in one_error_line(capsys)
    assert cli.main([*BASE, "--resume", str(tmp_path / "none")]) == 1
    assert "the directory does not exist" in one_error_line(capsys)
    assert cli.main([*BASE, "--log", str(tmp_path / "no" / "log.jsonl")]) == 2
    assert "no such directory to save into" in one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert cli.main([*BASE, "--plot", str(tmp_path / "c.png")]) == 1
    assert one_error_line(capsys) == (
        "numbagrad: error: --plot needs matplotlib, which is not installed: "
        "pip install 'numbagrad[plot]'"
    )


# --- numbagrad eval ----------------------------------------------------------------------------

CLASS_ROW = re.compile(r"^ ?(\d) (.+?)\s+((?:\s+\d+){10})$")


def _confusion_rows(out: str) -> np.ndarray:
    rows = [m for m in map(CLASS_ROW.match, out.splitlines()) if m]
    assert [int(m[1]) for m in rows] == list(range(10))
    assert [m[2] for m in rows] == list(data.FASHION_MNIST_CLASSES)
    return np.array([[int(v) for v in m[3].split()] for m in rows])


@pytest.mark.parametrize("limit", [None, 250])
def test_eval_prints_accuracy_per_class_and_the_confusion_matrix(reference, capsys, limit):
    path = reference / "model.npz"
    argv = ["eval", str(path), "--bundled"] + (["--limit", str(limit)] if limit else [])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    x, y = data.load_fashion_mnist("test", bundled=True)
    x, y = x[:limit], y[:limit]
    matrix = _confusion_rows(out)
    np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(y, minlength=10))
    acc = cli.evaluate(ng.load(path), x, y, 500)  # the saved batch size
    correct = round(acc * len(y))
    assert f"test accuracy {acc:.4f} ({correct}/{len(y)})" in out
    assert np.trace(matrix) == correct
    for i, name in enumerate(data.FASHION_MNIST_CLASSES):
        total = int(np.sum(y == i))
        assert re.search(rf"^{re.escape(name)}\s+\S+\s+{matrix[i, i]}/{total}$", out, re.M)


def test_eval_draws_the_confusion_matrix(reference, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "confusion.png"
    assert cli.main(["eval", str(reference / "model.npz"), "--bundled", "--plot", str(png)]) == 0
    assert png_size(png) == (800, 700)


def test_eval_refuses_a_training_step_in_one_line(reference, capsys):
    step = reference / "ck" / "epoch-0003" / "step.npz"
    assert cli.main(["eval", str(step), "--bundled"]) == 2
    assert f"{step} is a saved training step, not a model" in one_error_line(capsys)
