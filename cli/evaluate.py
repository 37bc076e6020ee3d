"""``numbagrad eval MODEL.npz``: a saved model (``train --save``) on the Fashion-MNIST test
set: accuracy, accuracy per class and the confusion matrix, with ``--plot`` drawn."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..aot import LoadedModel, load
from ..backends import BACKENDS
from ..data import FASHION_MNIST_CLASSES
from .common import (
    UsageError,
    add_check_finite,
    add_data_options,
    describe_data,
    int_at_least,
    load_split,
)
from .loop import predict_classes
from .plots import confusion_matrix, require_matplotlib


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "eval",
        help="test a saved model: accuracy, per class, and the confusion matrix",
        description="Run a model saved by `numbagrad train --save FILE` on the Fashion-MNIST "
        "test set; print its accuracy, its accuracy on each class and the confusion matrix "
        "(rows: true class, columns: predicted class).",
    )
    parser.add_argument("model", metavar="MODEL.npz", help="a file written by train --save")
    add = parser.add_argument
    add("--plot", metavar="FILE", help="draw the confusion matrix (.png)")
    add("--backend", choices=BACKENDS, help="(default: the one the model was compiled for)")
    add("--limit", type=int_at_least(1), metavar="N", help="the first N test images only")
    add_data_options(add)
    add_check_finite(add)
    parser.set_defaults(run=eval_command)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``matrix[t, p]``: how many images of class ``t`` were predicted as ``p``."""
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def eval_command(args: argparse.Namespace) -> int:
    if args.plot:
        if not Path(args.plot).resolve().parent.is_dir():
            raise UsageError(f"--plot {args.plot}: no such directory to save into")
        require_matplotlib("--plot")
    model = load(args.model, backend=args.backend, check_finite=args.check_finite)
    if not isinstance(model, LoadedModel):
        raise UsageError(
            f"{args.model} is a saved training step, not a model: evaluate the file that "
            "numbagrad train --save FILE writes"
        )
    graph = model.forward_graph
    shape = graph[graph.inputs[0]].shape
    print(f"data: {describe_data(args)}", flush=True)
    x, y = load_split(args, "test")
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    if tuple(shape[1:]) != x.shape[1:]:
        raise UsageError(f"{args.model} takes inputs of shape {shape}, not Fashion-MNIST's")
    names = FASHION_MNIST_CLASSES
    logits = graph[graph.outputs[0]].shape
    if tuple(logits) != (shape[0], len(names)):
        raise UsageError(f"{args.model} outputs {tuple(logits)}, not one score per class")
    predicted = predict_classes(model, x, shape[0])
    matrix = confusion(y, predicted, len(names))
    correct = int(np.trace(matrix))
    print(f"model: {args.model} on backend {model.backend}, {len(x)} test images")
    print(f"test accuracy {correct / len(x):.4f} ({correct}/{len(x)})")
    print()
    print(format_per_class(matrix, names))
    print()
    print(format_confusion(matrix, names))
    if args.plot:
        title = f"{Path(args.model).name}: test accuracy {correct / len(x):.4f}"
        confusion_matrix(matrix, names, Path(args.plot), title)
        print(f"\nconfusion matrix: {args.plot}")
    return 0


def format_per_class(matrix: np.ndarray, names) -> str:
    width = max(len(n) for n in names)
    lines = [f"{'class':<{width}}  accuracy  correct/total"]
    for i, name in enumerate(names):
        total, right = int(matrix[i].sum()), int(matrix[i, i])
        acc = f"{right / total:.4f}" if total else "-"
        lines.append(f"{name:<{width}}  {acc:>8}  {right:>7}/{total}")
    return "\n".join(lines)


def format_confusion(matrix: np.ndarray, names) -> str:
    """Rows: true class (named), columns: predicted class (by number, named in the rows)."""
    width = max(len(n) for n in names) + 4
    cell = max(5, len(str(int(matrix.max()))) + 1)
    head = "true \\ predicted".ljust(width) + "".join(f"{j:>{cell}}" for j in range(len(names)))
    rows = [
        f"{i:>2} {name}".ljust(width) + "".join(f"{int(v):>{cell}}" for v in matrix[i])
        for i, name in enumerate(names)
    ]
    return "\n".join(["confusion matrix (rows: true class, columns: predicted class)", head,
                      *rows])  # fmt: skip
