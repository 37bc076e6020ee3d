"""The command line:
``numbagrad train lenet5 [--epochs N] [--backend cpu|interp|cuda] [--optimizer adam] ...`` and
``numbagrad profile lenet5 [--training] [--dump DIR] [--json FILE] [--disable PASS ...]`` and
``numbagrad summary lenet5_classic [--all]``.

Every error a user can cause (bad arguments, missing or malformed data, an unfinished backend)
ends with one line ``numbagrad: error: ...`` on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import data, models
from .backends import BACKENDS
from .compiler import compile as compile_model
from .compiler import compile_training
from .engine import Spec, nn, optim
from .engine.nn.init import manual_seed
from .engine.nn.summary import summary
from .errors import NumbagradError
from .graph.passes import PASSES
from .graph.pipeline import PLAN
from .train_loop import evaluate, train_epochs  # noqa: F401  (cli.evaluate for callers)

PROG = "numbagrad"

# Model name -> zoo constructor; built by build_model for 10 classes, 1 channel, 32x32 inputs
# (MODEL_ARGS: the arguments that say so where the constructor's defaults differ).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": models.lenet5,
    "lenet5_classic": models.lenet5_classic,
    "alexnet": models.alexnet,
    "vgg11": models.vgg11,
    "vgg16": models.vgg16,
    "googlenet": models.googlenet,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "lstm_classifier": models.lstm_classifier,
    "transformer_encoder": models.transformer_encoder,
}
_SMALL = {"num_classes": 10, "in_channels": 1}
MODEL_ARGS: dict[str, dict] = {
    "alexnet": {**_SMALL, "input_size": 32},
    "vgg11": {**_SMALL, "input_size": 32},
    "vgg16": {**_SMALL, "input_size": 32},
    "googlenet": _SMALL,
    "resnet18": _SMALL,
    "resnet34": _SMALL,
    "resnet50": _SMALL,
    "lstm_classifier": {"input_size": 32},  # one step per image row
    "transformer_encoder": {"input_size": 32, "seq_len": 32},  # one token per row
}


def build_model(name: str) -> nn.Module:
    """The zoo model ``name`` for 1x32x32 inputs and 10 classes."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name](**MODEL_ARGS.get(name, {}))


# --optimizer name -> (class, default lr, default momentum or None where it takes none).
OPTIMIZERS: dict[str, tuple[type[optim.Optimizer], float, float | None]] = {
    "sgd": (optim.SGD, 0.01, 0.9),
    "adam": (optim.Adam, 1e-3, None),
    "adamw": (optim.AdamW, 1e-3, None),
    "rmsprop": (optim.RMSprop, 1e-3, 0.0),
    "adagrad": (optim.Adagrad, 0.01, None),
}


def build_optimizer(
    name: str, lr: float | None, momentum: float | None, weight_decay: float
) -> optim.Optimizer:
    """The ``--optimizer`` named ``name``; ``None`` takes the table's default."""
    cls, default_lr, default_momentum = OPTIMIZERS[name]
    lr = default_lr if lr is None else lr
    if default_momentum is None:
        if momentum is not None:
            raise UsageError(f"--momentum applies to sgd and rmsprop, not to --optimizer {name}")
        return cls(lr, weight_decay=weight_decay)
    momentum = default_momentum if momentum is None else momentum
    return cls(lr, momentum=momentum, weight_decay=weight_decay)


class UsageError(NumbagradError):
    """A command-line argument that argparse or our checks refuse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(message)


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _finite(text: str, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite number {'> 0' if positive else '>= 0'}, got {text}"
        )
    return value


def _non_negative(text: str) -> float:
    return _finite(text)


def _positive(text: str) -> float:
    return _finite(text, positive=True)


def _add_check_finite(add) -> None:
    add(
        "--check-finite",
        action="store_true",
        default=None,  # absent: NUMBAGRAD_CHECK_FINITE decides
        help="anomaly mode: stop at the first NaN or infinity, naming the op and layer that "
        "made it (slow; also NUMBAGRAD_CHECK_FINITE=1)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="numbagrad: a deep-learning compiler on Numba.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    train = sub.add_parser(
        "train",
        help="train a zoo model on Fashion-MNIST",
        description="Train a zoo model on Fashion-MNIST (SGD with momentum unless --optimizer "
        "says otherwise); print loss, test accuracy and throughput per epoch. Data: --data DIR, "
        "else /usr/share/datasets/fashion-mnist, else the subset bundled with numbagrad.",
    )
    train.add_argument("model", help=f"model name: {', '.join(MODELS)}")
    add = train.add_argument
    add("--epochs", type=_int_at_least(1), default=5, metavar="N", help="epochs (default 5)")
    add("--batch-size", type=_int_at_least(1), default=64, metavar="B", help="(default 64)")
    add("--eval-batch-size", type=_int_at_least(1), default=256, metavar="B", help="(default 256)")
    add("--optimizer", choices=OPTIMIZERS, default="sgd", help="(default sgd)")
    add(
        "--lr",
        type=_positive,
        metavar="X",
        help="learning rate (default 0.01 for sgd and adagrad, else 0.001)",
    )
    add(
        "--momentum",
        type=_non_negative,
        metavar="X",
        help="sgd and rmsprop only (default 0.9 for sgd, 0 for rmsprop)",
    )
    add("--weight-decay", type=_non_negative, default=5e-4, metavar="X", help="(default 5e-4)")
    add("--data", metavar="DIR", help="directory with the four Fashion-MNIST IDX files")
    add("--backend", choices=BACKENDS, default="cpu", help="(default cpu)")
    add("--seed", type=int, default=0, metavar="S", help="weights and shuffling (default 0)")
    add("--limit", type=_int_at_least(1), metavar="N", help="train on the first N images only")
    add(
        "--save",
        metavar="FILE",
        help="after training, save the compiled inference model (.npz) for numbagrad.load",
    )
    _add_check_finite(add)
    # Hidden: force the bundled subset even where the full data set is installed (tests).
    train.add_argument("--bundled", action="store_true", help=argparse.SUPPRESS)
    train.set_defaults(run=train_command)
    _add_profile_parser(sub)
    _add_summary_parser(sub)
    return parser


def _add_summary_parser(sub) -> None:
    summary = sub.add_parser(
        "summary",
        help="print a zoo model's layer table (output shapes, connections, parameters)",
        description="Trace a zoo model (10 classes) on one input and print one row per layer: "
        "kind, kernels, kernel size, stride, output shape, connections (multiply-accumulates "
        "per sample, bias included) and trainable parameters. Nothing is compiled.",
    )
    summary.add_argument("model", help=f"model name: {', '.join(MODELS)}")
    summary.add_argument(
        "--all", action="store_true", help="also list activations, dropout and flatten"
    )
    summary.set_defaults(run=summary_command)


def summary_command(args: argparse.Namespace) -> int:
    model = build_model(args.model)
    print(summary(model, Spec((1, 1, 32, 32)), all_layers=args.all))
    return 0


def _add_profile_parser(sub) -> None:
    profile = sub.add_parser(
        "profile",
        help="show what each graph pass does to a zoo model, and where the time goes",
        description="Compile a zoo model (inference, or with --training a whole training step) "
        "and "
        "print the pass report: per pass, wall time, nodes, kernels, FLOPs and intermediate "
        "bytes, then the planned arena; then time every kernel on random data.",
    )
    profile.add_argument("model", help=f"model name: {', '.join(MODELS)}")
    add = profile.add_argument
    add("--batch-size", type=_int_at_least(1), default=64, metavar="B", help="(default 64)")
    add("--training", action="store_true", help="profile a training step (forward + backward)")
    add("--optimizer", choices=OPTIMIZERS, default="sgd", help="with --training (default sgd)")
    add("--dump", metavar="DIR", help="write the graph after every pass (.txt and .dot) here")
    add("--json", metavar="FILE", help="save the pass report as JSON")
    add(
        "--disable",
        nargs="+",
        action="extend",
        default=[],
        metavar="PASS",
        help=f"switch passes off by name: {', '.join([*PASSES, PLAN])}",
    )
    add("--backend", choices=BACKENDS, default="cpu", help="(default cpu)")
    add("--steps", type=_int_at_least(1), default=20, metavar="N", help="timed runs (default 20)")
    add("--seed", type=int, default=0, metavar="S", help="weights and data (default 0)")
    _add_check_finite(add)
    profile.set_defaults(run=profile_command)


def train_command(args: argparse.Namespace) -> int:
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; known models: {', '.join(MODELS)}")
    optimizer = build_optimizer(args.optimizer, args.lr, args.momentum, args.weight_decay)
    if args.save and not Path(args.save).resolve().parent.is_dir():  # refuse before training
        raise UsageError(f"--save {args.save}: no such directory to save into")
    bundled = True if args.bundled else None
    print(f"data: {data.describe_source(args.data, bundled)}", flush=True)
    x_train, y_train = data.load_fashion_mnist("train", args.data, bundled=bundled)
    x_test, y_test = data.load_fashion_mnist("test", args.data, bundled=bundled)
    if args.limit is not None:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    b = args.batch_size
    if len(x_train) < b:
        raise UsageError(f"{len(x_train)} training images make no full batch of {b}")
    eval_b = min(args.eval_batch_size, len(x_test))

    manual_seed(args.seed)
    model = build_model(args.model)
    print(
        f"model: {args.model}, {model.num_parameters():,} parameters; "
        f"{len(x_train)} train / {len(x_test)} test images; optimizer {args.optimizer}",
        flush=True,
    )
    t0 = time.perf_counter()
    step = compile_training(
        model,
        loss=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        inputs=Spec((b, *x_train.shape[1:])),
        targets=Spec((b,), "int64"),
        backend=args.backend,
        check_finite=args.check_finite,
    )
    predict = compile_model(
        model,
        Spec((eval_b, *x_test.shape[1:])),
        backend=args.backend,
        check_finite=args.check_finite,
    )
    print(f"compiled on backend {args.backend} in {time.perf_counter() - t0:.2f} s", flush=True)

    rng = np.random.default_rng(args.seed)
    train_epochs(step, predict, (x_train, y_train), (x_test, y_test), b, eval_b, args.epochs, rng)
    if args.save:
        try:
            saved = predict.save(args.save)
        except OSError as e:
            raise NumbagradError(f"cannot save the model to {args.save}: {e.strerror}") from None
        print(f"saved the compiled model: {saved} (numbagrad.load)", flush=True)
    return 0


def profile_command(args: argparse.Namespace) -> int:
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; known models: {', '.join(MODELS)}")
    known = [*PASSES, PLAN]
    for name in args.disable:
        if name not in known:
            raise UsageError(f"unknown pass {name!r} for --disable; passes: {', '.join(known)}")
    manual_seed(args.seed)
    model = build_model(args.model)
    b = args.batch_size
    what = f"training step ({args.optimizer})" if args.training else "inference"
    off = f"; disabled: {', '.join(args.disable)}" if args.disable else ""
    print(f"model: {args.model}, {what} at batch {b} on backend {args.backend}{off}", flush=True)
    t0 = time.perf_counter()
    x_spec = Spec((b, 1, 32, 32))
    common = {
        "backend": args.backend,
        "disable": args.disable,
        "dump_dir": args.dump,
        "check_finite": args.check_finite,
    }
    if args.training:
        compiled = compile_training(
            model,
            loss=nn.CrossEntropyLoss(),
            optimizer=build_optimizer(args.optimizer, None, None, 5e-4),
            inputs=x_spec,
            targets=Spec((b,), "int64"),
            **common,
        )
    else:
        compiled = compile_model(model, x_spec, **common)
    print(f"compiled in {time.perf_counter() - t0:.2f} s", flush=True)
    print()
    print(compiled.report)
    if args.dump:
        print(f"graphs after every pass: {args.dump}")
    if args.json:
        compiled.report.to_json(args.json)
        print(f"pass report: {args.json}")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal(x_spec.shape).astype(np.float32)
    if args.training:
        profile = compiled.profile(x, rng.integers(0, 10, b), n_steps=args.steps)
    else:
        profile = compiled.profile(x, n_runs=args.steps)
    print()
    print(profile)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a numbagrad error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except SystemExit as e:  # --help (0); argparse never exits otherwise, see _Parser
        return e.code if isinstance(e.code, int) else 0
    except UsageError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except NumbagradError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
