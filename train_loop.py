"""The epoch loop behind ``numbagrad train``: minibatch steps with a progress bar, a stop at
the first non-finite loss, and per epoch the loss, test accuracy and throughput."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from tqdm import tqdm

from . import data
from .errors import NonFiniteError

Arrays = tuple[np.ndarray, np.ndarray]


def evaluate(predict, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Accuracy over every row of ``x``: the last partial batch is zero-padded to ``batch``
    rows (the compiled model has a static shape) and the padded rows are ignored."""
    correct = 0
    buf = np.zeros((batch, *x.shape[1:]), dtype=x.dtype)
    for start in range(0, len(x), batch):
        rows = min(batch, len(x) - start)
        buf[:rows] = x[start : start + rows]
        buf[rows:] = 0
        logits = predict(buf)
        correct += int(np.sum(np.argmax(logits[:rows], axis=1) == y[start : start + rows]))
    return correct / len(x)


def train_step(step, x: np.ndarray, y: np.ndarray, when: str) -> float:
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
            f"{step.lr:g}, or --check-finite to name the op and layer that made the first "
            "NaN or infinity"
        )
    return loss


def train_epochs(
    step, predict, train: Arrays, test: Arrays, b: int, eval_b: int, epochs: int, rng
) -> None:
    """Train ``step`` for ``epochs`` on minibatches of ``b`` rows of ``train`` (shuffled by
    ``rng``), printing after each epoch the mean loss and ``predict``'s accuracy on ``test``."""
    with np.errstate(all="ignore"):  # reference kernels would warn: divergence is ours to report
        _train_epochs(step, predict, train, test, b, eval_b, epochs, rng)


def _train_epochs(step, predict, train, test, b, eval_b, epochs, rng) -> None:
    (x_train, y_train), (x_test, y_test) = train, test
    n_batches = len(x_train) // b
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        batches = data.iterate_minibatches(x_train, y_train, b, rng=rng)
        bar = tqdm(
            batches,
            total=n_batches,
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            file=sys.stderr,
            leave=False,
            disable=not sys.stderr.isatty(),
        )
        losses = []
        for xb, yb in bar:
            losses.append(train_step(step, xb, yb, f"step {len(losses) + 1} of epoch {epoch}"))
            if len(losses) == 1:
                t_first = time.perf_counter()
            if len(losses) % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
        bar.close()
        train_s, counted = time.perf_counter() - t_epoch, n_batches
        if epoch == 1:  # the first step runs the lazy JIT compilation: report it apart
            first_s = t_first - t_epoch
            print(
                f"first training step: {first_s:.2f} s (includes any JIT compilation)", flush=True
            )
            if n_batches > 1:
                train_s, counted = train_s - first_s, n_batches - 1
        step.sync()
        try:
            acc = evaluate(predict, x_test, y_test, eval_b)
        except NonFiniteError as e:  # anomaly mode: the trained parameters overflow
            raise NonFiniteError(f"testing after epoch {epoch}: {e}") from None
        print(
            f"epoch {epoch}/{epochs}: train loss {np.mean(losses):.4f}, "
            f"test accuracy {acc:.4f}, {counted * b / train_s:.1f} images/s, "
            f"{time.perf_counter() - t_epoch:.2f} s",
            flush=True,
        )
