"""The epoch loop behind ``numbagrad train``: minibatch steps (augmented, with the recipe's lr
at every step) under a progress bar, a stop at the first non-finite loss, and after every
epoch a record (loss, test accuracy, images/s, lr, time) handed to the hooks that print, log,
plot and checkpoint it."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from .. import data, distributed
from ..errors import NonFiniteError

Arrays = tuple[np.ndarray, np.ndarray]


def predict_classes(predict, x: np.ndarray, batch: int) -> np.ndarray:
    """The class ``predict`` gives every row of ``x`` (int64 ``(N,)``): the last partial batch
    is zero-padded to ``batch`` rows (the compiled model has a static shape) and the padded
    rows are ignored."""
    classes = np.empty(len(x), dtype=np.int64)
    buf = np.zeros((batch, *x.shape[1:]), dtype=x.dtype)
    for start in range(0, len(x), batch):
        rows = min(batch, len(x) - start)
        buf[:rows] = x[start : start + rows]
        buf[rows:] = 0
        classes[start : start + rows] = np.argmax(predict(buf)[:rows], axis=1)
    return classes


def evaluate(predict, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Accuracy of ``predict`` over every row of ``x`` (see :func:`predict_classes`)."""
    return int(np.sum(predict_classes(predict, x, batch) == y)) / len(x)


def train_step(step, x: np.ndarray, y: np.ndarray, when: str, base_lr: float) -> float:
    """``step(x, y)``, stopping training with one sentence that says ``when`` on a NaN or
    infinity: the loss, checked for free (it comes back to the host anyway), or anything
    anomaly mode finds."""
    try:
        loss = step(x, y)
    except NonFiniteError as e:
        raise NonFiniteError(f"{when}: {e}") from None
    if not math.isfinite(loss):
        raise NonFiniteError(
            f"training diverged at {when}: the loss is {loss}; try a lower --lr than "
            f"{base_lr:g}, or --check-finite to name the op and layer that made the first "
            "NaN or infinity"
        )
    return loss


@dataclass
class History:
    """What a run has done so far: every step's loss, and one record per finished epoch."""

    batch_losses: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)


@dataclass
class EpochLoop:
    """Trains ``step`` for epochs ``first_epoch..epochs`` on shuffled minibatches of
    ``train``. ``lr_at(n)`` is the lr of the step after ``n`` steps (the step counts its
    own), ``augment(xb, rng)`` transforms each batch, ``test_accuracy()`` measures the
    trained weights, and every hook in ``after_epoch`` gets the history after each epoch.

    Data-parallel (``world_size`` processes, a ``distributed`` step): every process draws the
    same global batches of ``batch_size * world_size`` rows from the same ``rng``, augments the
    whole global batch (so the rng stays in step everywhere and the run is the one-process run
    at the global batch) and steps on its own rows of it."""

    step: object
    train: Arrays
    batch_size: int
    epochs: int
    rng: np.random.Generator
    lr_at: Callable[[int], float]
    base_lr: float
    test_accuracy: Callable[[], float]
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    history: History = field(default_factory=History)
    after_epoch: Sequence[Callable[[History], None]] = ()
    world_size: int = 1

    def run(self, first_epoch: int = 1) -> History:
        with np.errstate(all="ignore"):  # reference kernels would warn: divergence is ours
            for epoch in range(first_epoch, self.epochs + 1):
                self.history.epochs.append(self._epoch(epoch, first=epoch == first_epoch))
                for hook in self.after_epoch:
                    hook(self.history)
        return self.history

    def _epoch(self, epoch: int, first: bool) -> dict:
        t_epoch = time.perf_counter()
        x_train, y_train = self.train
        global_batch = self.batch_size * self.world_size
        n_batches = len(x_train) // global_batch
        batches = data.iterate_minibatches(x_train, y_train, global_batch, rng=self.rng)
        shard = slice(
            distributed.rank() * self.batch_size, (distributed.rank() + 1) * self.batch_size
        )
        bar = tqdm(
            batches,
            total=n_batches,
            desc=f"epoch {epoch}/{self.epochs}",
            unit="batch",
            file=sys.stderr,
            leave=False,
            disable=not sys.stderr.isatty(),
        )
        losses: list[float] = []
        for xb, yb in bar:
            if self.augment is not None:
                xb = self.augment(xb, self.rng)
            if self.world_size > 1:
                xb, yb = np.ascontiguousarray(xb[shard]), np.ascontiguousarray(yb[shard])
            self.step.lr = self.lr_at(self.step.step_count)
            when = f"step {len(losses) + 1} of epoch {epoch}"
            losses.append(train_step(self.step, xb, yb, when, self.base_lr))
            if len(losses) == 1:
                t_first = time.perf_counter()
            if len(losses) % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
        bar.close()
        train_s, counted = time.perf_counter() - t_epoch, n_batches
        if first:  # this process's first step runs the lazy JIT compilation: report it apart
            first_s = t_first - t_epoch
            print(
                f"first training step: {first_s:.2f} s (includes any JIT compilation)", flush=True
            )
            if n_batches > 1:
                train_s, counted = train_s - first_s, n_batches - 1
        lr = self.step.lr
        try:
            acc = self.test_accuracy()
        except NonFiniteError as e:  # anomaly mode: the trained parameters overflow
            raise NonFiniteError(f"testing after epoch {epoch}: {e}") from None
        losses = distributed.average(losses) if self.world_size > 1 else losses
        self.history.batch_losses.extend(losses)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "test_accuracy": acc,
            "images_per_s": counted * global_batch / train_s,  # the whole job's
            "lr": lr,
            "time_s": time.perf_counter() - t_epoch,
            "steps": self.step.step_count,
        }
        print(
            f"epoch {epoch}/{self.epochs}: train loss {record['train_loss']:.4f}, "
            f"test accuracy {acc:.4f}, {record['images_per_s']:.1f} images/s, "
            f"{record['time_s']:.2f} s",
            flush=True,
        )
        return record
