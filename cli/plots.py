"""Pictures drawn with matplotlib (the optional extra ``plot``): training curves and the
confusion matrix. Figures are drawn on the Agg canvas without pyplot (no display, no global
state) and written under a temporary name then renamed, so a file being watched while a run
goes on is always a whole picture."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import NumbagradError
from .loop import History

CURVES_SIZE = (10.0, 4.0)  # inches, at DPI: a 1000x400 PNG
CONFUSION_SIZE = (8.0, 7.0)
DPI = 100


class MissingExtraError(NumbagradError):
    """An optional dependency that a requested feature needs is not installed."""


def require_matplotlib(flag: str) -> None:
    """Refuse ``flag`` in one sentence, before any work, where matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            f"{flag} needs matplotlib, which is not installed: pip install 'numbagrad[plot]'"
        ) from None


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        figure.savefig(partial, dpi=DPI)
        os.replace(partial, path)
    except OSError as e:
        raise NumbagradError(f"cannot write the picture {path}: {e.strerror}") from None


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    return (sums[ends] - sums[ends - counts]) / counts


def training_curves(history: History, steps_per_epoch: int, path: Path, title: str) -> None:
    """Training loss per step (light) and its moving average over a tenth of an epoch, and
    test accuracy per epoch, side by side, as ``path``."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(CURVES_SIZE)
    loss_ax, acc_ax = figure.subplots(1, 2)
    losses = history.batch_losses
    x = np.arange(1, len(losses) + 1) / steps_per_epoch
    window = max(1, steps_per_epoch // 10)
    loss_ax.plot(x, losses, color="tab:blue", alpha=0.25, linewidth=0.6, label="per step")
    smooth = moving_average(losses, window)
    loss_ax.plot(x, smooth, color="tab:blue", linewidth=1.5, label=f"mean of {window} steps")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    loss_ax.legend(loc="upper right")
    loss_ax.grid(alpha=0.3)
    epochs = [r["epoch"] for r in history.epochs]
    accs = [r["test_accuracy"] for r in history.epochs]
    acc_ax.plot(epochs, accs, marker="o", color="tab:orange")
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    best = f" (best {max(accs):.4f}, epoch {epochs[int(np.argmax(accs))]})" if accs else ""
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title=f"test accuracy{best}")
    acc_ax.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)


def confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Path, title: str) -> None:
    """``matrix[true, predicted]`` as a heat map (each row scaled by its class's count),
    with the counts written in the cells, as ``path``."""
    figure = _figure(CONFUSION_SIZE)
    ax = figure.subplots()
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(matrix / totals, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    for (i, j), count in np.ndenumerate(matrix):
        dark = matrix[i, j] / totals[i, 0] > 0.5
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if dark else "black")  # fmt: skip
    figure.tight_layout()
    _save(figure, path)
