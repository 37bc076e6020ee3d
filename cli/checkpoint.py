"""Checkpoints of ``numbagrad train --checkpoint DIR``, and ``--resume DIR``.

After every epoch the run is saved as ``DIR/epoch-NNNN/``: ``step.npz`` (the training step:
parameters, buffers, optimizer state, step count: ``TrainingStep.save``) and
``trainer.json`` (the epoch, the run's configuration, the state of the generator that
shuffles and augments, and the history: every step's loss and every epoch's record). The
directory is written under a temporary name, flushed to disk and then renamed, so a run killed
at any moment leaves only whole checkpoints; the last ``keep`` are kept. Resuming loads the
newest one, refuses a configuration that differs from the current command's, and goes on
exactly as the uninterrupted run would have.

``trainer.json`` is data: every field is checked before use, and a malformed one is refused
in one sentence (``CheckpointError``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..aot import load
from ..errors import NumbagradError
from .loop import History

FORMAT, VERSION = "numbagrad training checkpoint", 1
STEP_FILE, STATE_FILE = "step.npz", "trainer.json"
_NAME = re.compile(r"^epoch-(\d{4,})$")
_PARTIAL = ".partial"


class CheckpointError(NumbagradError):
    """A checkpoint directory that cannot be resumed from, or written."""


@dataclass
class Checkpoint:
    """A finished epoch, read back: the step is loaded by :meth:`load_step`."""

    path: Path
    epoch: int
    config: dict
    rng_state: dict
    history: History

    def load_step(self, backend: str, check_finite: bool | None):
        return load(self.path / STEP_FILE, backend=backend, check_finite=check_finite)


def epochs_in(directory: Path) -> dict[int, Path]:
    """The finished checkpoints in ``directory``, by epoch."""
    if not directory.is_dir():
        return {}
    found = {}
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir():
            found[int(match[1])] = entry
    return found


def save(directory: Path, epoch: int, step, config: dict, rng, history: History, keep: int) -> Path:
    """Write the checkpoint of ``epoch`` atomically, then drop all but the newest ``keep``."""
    final = directory / f"epoch-{epoch:04d}"
    partial = directory / f".{final.name}{_PARTIAL}"
    state = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": epoch,
        "config": config,
        "rng": rng.bit_generator.state,
        "history": {"batch_losses": history.batch_losses, "epochs": history.epochs},
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while writing it
        partial.mkdir()
        step.save(partial / STEP_FILE)
        (partial / STATE_FILE).write_text(json.dumps(state))
        for name in (STEP_FILE, STATE_FILE, "."):
            _fsync(partial / name)
        if final.exists():  # an epoch redone after an interrupted resume: same contents
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync(directory)
    except OSError as e:
        raise CheckpointError(f"cannot write the checkpoint {final}: {e.strerror}") from None
    for old in sorted(epochs_in(directory))[:-keep]:
        shutil.rmtree(epochs_in(directory)[old], ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest(directory: Path) -> Checkpoint:
    """The newest checkpoint in ``directory``, its ``trainer.json`` checked."""
    found = epochs_in(directory)
    if not found:
        where = "does not exist" if not directory.exists() else "holds no checkpoint"
        raise CheckpointError(f"--resume {directory}: the directory {where}")
    epoch = max(found)
    path = found[epoch]
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / STATE_FILE} cannot be read as JSON: {e}") from None
    return Checkpoint(path, epoch, *_checked(state, epoch, path / STATE_FILE))


def _checked(state, epoch: int, where: Path) -> tuple[dict, dict, History]:
    def refuse(problem: str):
        raise CheckpointError(f"{where}: {problem}; it is no checkpoint numbagrad can resume")

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        refuse("it is not a numbagrad training checkpoint")
    if state.get("version") != VERSION:
        refuse(f"its format version is {state.get('version')!r}, not {VERSION}")
    if state.get("epoch") != epoch:
        refuse(f"it records epoch {state.get('epoch')!r} in the directory of epoch {epoch}")
    config, history = state.get("config"), state.get("history")
    if not isinstance(config, dict):
        refuse("its configuration is not a JSON object")
    if not isinstance(history, dict):
        refuse("its history is not a JSON object")
    losses, records = history.get("batch_losses"), history.get("epochs")
    if not isinstance(losses, list) or not all(isinstance(v, float) for v in losses):
        refuse("its batch losses are not a list of numbers")
    if not isinstance(records, list) or len(records) != epoch:
        refuse(f"its history does not hold one record for each of its {epoch} epochs")
    if not all(isinstance(r, dict) and r.get("epoch") == i + 1 for i, r in enumerate(records)):
        refuse("its epoch records are not numbered 1, 2, ...")
    rng_state = state.get("rng")
    try:
        np.random.default_rng().bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError, OverflowError):
        refuse("its random-generator state is not one of this numpy's default generator")
    return config, rng_state, History(losses, records)


def check_config(checkpoint: Checkpoint, config: dict) -> None:
    """Refuse to resume a run whose training configuration differs from ``config``."""
    for key in dict.fromkeys([*config, *checkpoint.config]):  # world_size: only when > 1
        saved, value = checkpoint.config.get(key), config.get(key)
        if saved != value:
            raise CheckpointError(
                f"--resume {checkpoint.path.parent}: the run was trained with "
                f"{_as_option(key, saved)}, this command asks for {_as_option(key, value)}; "
                "give the same training options to resume it"
            )


def _as_option(key: str, value) -> str:
    flag = f"--{key.replace('_', '-')}"
    if key == "model":
        return f"the model {value}"
    if key == "data":
        return f"the data {value}"
    if key == "world_size":
        return f"--distributed over {value or 1} process(es)"
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"no {flag}" if value is None else f"{flag} {value}"


def check_new_run(directory: Path) -> None:
    """Refuse to start a new run in a directory that holds another run's checkpoints."""
    if epochs_in(directory):
        raise CheckpointError(
            f"--checkpoint {directory} already holds checkpoints; continue that run with "
            f"--resume {directory}, or choose another directory"
        )
