"""``numbagrad train MODEL``: train a zoo model on Fashion-MNIST with its recipe (recipes.py),
which every flag can override; optionally log, plot, checkpoint and resume."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from .. import data, distributed
from ..backends import BACKENDS
from ..compiler import compile as compile_model
from ..compiler import compile_training
from ..engine import Spec, nn
from ..engine.nn.init import manual_seed
from ..errors import NumbagradError
from . import checkpoint, plots
from .common import (
    MODELS,
    OPTIMIZERS,
    UsageError,
    add_check_finite,
    add_data_options,
    below_one,
    build_model,
    check_model,
    describe_data,
    int_at_least,
    load_split,
    non_negative,
    positive,
)
from .loop import EpochLoop, History, evaluate
from .recipes import FIELD_FLAGS, SCHEDULES, recipe_for


def add_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a zoo model on Fashion-MNIST",
        description="Train a zoo model on Fashion-MNIST with the model's recipe (README: "
        "Recipes), which every flag overrides; print loss, test accuracy and throughput per "
        "epoch. Data: --data DIR, else /usr/share/datasets/fashion-mnist, else the subset "
        "bundled with numbagrad.",
    )
    train.add_argument("model", help=f"model name: {', '.join(MODELS)}")
    add = train.add_argument
    recipe = "(default: the model's recipe)"
    add("--epochs", type=int_at_least(1), metavar="N", help=recipe)
    add("--batch-size", type=int_at_least(1), metavar="B", help=recipe)
    add("--eval-batch-size", type=int_at_least(1), default=256, metavar="B", help="(default 256)")
    add("--optimizer", choices=OPTIMIZERS, help=recipe)
    add("--lr", type=positive, metavar="X", help=f"the peak learning rate {recipe}")
    add("--momentum", type=non_negative, metavar="X", help=f"sgd and rmsprop only {recipe}")
    add("--nesterov", action=argparse.BooleanOptionalAction, help=f"sgd only {recipe}")
    add("--weight-decay", type=non_negative, metavar="X", help=recipe)
    add("--schedule", choices=SCHEDULES, help=f"lr per step after the warm-up {recipe}")
    add("--warmup-epochs", type=non_negative, metavar="X", help=f"linear lr warm-up {recipe}")
    add("--label-smoothing", type=below_one, metavar="X", help=recipe)
    add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help=f"random crop (see --crop-padding) and horizontal flip of every batch {recipe}",
    )
    add("--crop-padding", type=int_at_least(0), metavar="P", help=f"crop shift {recipe}")
    add_data_options(add)
    add("--backend", choices=BACKENDS, default="cpu", help="(default cpu)")
    add(
        "--memory-budget",
        metavar="SIZE",
        help="recompute saved activations in the backward pass until the training step's "
        "arena fits SIZE (e.g. 200MB, 1.5GiB)",
    )
    add("--seed", type=int, default=0, metavar="S", help="weights, shuffling, augmentation (0)")
    add("--limit", type=int_at_least(1), metavar="N", help="train on the first N images only")
    add("--save", metavar="FILE", help="after training, save the compiled inference model (.npz)")
    add("--log", metavar="FILE", help="append one JSON record per epoch (.jsonl)")
    add("--plot", metavar="FILE", help="draw loss and accuracy curves after every epoch (.png)")
    add("--checkpoint", metavar="DIR", help="save the training step here after every epoch")
    add("--keep-checkpoints", type=int_at_least(1), default=2, metavar="K", help="(default 2)")
    add("--resume", metavar="DIR", help="continue the run checkpointed in DIR (and save there)")
    add(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes of an MPI job (mpiexec -n P numbagrad train ...): "
        "global batch = --batch-size x P, rank 0 prints and writes",
    )
    add("--bucket-mb", type=positive, default=25.0, metavar="MB", help="with --distributed (25)")
    add_check_finite(add)
    train.set_defaults(run=train_command)


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse unwritable outputs and a missing extra before any work."""
    for flag in ("save", "log", "plot"):
        path = getattr(args, flag)
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"--{flag} {path}: no such directory to save into")
    if args.plot:
        plots.require_matplotlib("--plot")


def _config(args: argparse.Namespace, recipe) -> dict:
    """What decides a run's losses: a resumed run must have the same."""
    fields = {k: getattr(recipe, k) for k in ("optimizer", *FIELD_FLAGS)}
    return {"model": args.model, "seed": args.seed, "limit": args.limit, **fields,
            "data": describe_data(args)}  # fmt: skip


def train_command(args: argparse.Namespace) -> int:
    check_model(args.model)
    world = distributed.init() if args.distributed else 1
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 speaks for the job
    recipe = recipe_for(args.model, args)
    _check_outputs(args)
    config = _config(args, recipe)
    if world > 1:  # the global batch, so the losses, depend on it
        config["world_size"] = world
    resumed = None
    if args.resume:
        resumed = checkpoint.latest(Path(args.resume))
        checkpoint.check_config(resumed, config)
    elif args.checkpoint:
        checkpoint.check_new_run(Path(args.checkpoint))
    print(f"data: {config['data']}", flush=True)
    x_train, y_train = load_split(args, "train")
    x_test, y_test = load_split(args, "test")
    if args.limit is not None:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    b = recipe.batch_size  # per process
    if len(x_train) < b * world:
        raise UsageError(f"{len(x_train)} training images make no full batch of {b * world}")
    eval_b = min(args.eval_batch_size, len(x_test))

    manual_seed(args.seed)
    model = build_model(args.model)
    print(
        f"model: {args.model}, {model.num_parameters():,} parameters; "
        f"{len(x_train)} train / {len(x_test)} test images; optimizer {recipe.optimizer}",
        flush=True,
    )
    print(f"recipe: {recipe.describe()}", flush=True)
    t0 = time.perf_counter()
    predict = compile_model(
        model, Spec((eval_b, *x_test.shape[1:])), backend=args.backend,
        check_finite=args.check_finite,
    )  # fmt: skip
    rng = np.random.default_rng(args.seed)
    if resumed is None:
        step = compile_training(
            model,
            loss=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
            optimizer=recipe.make_optimizer(),
            inputs=Spec((b, *x_train.shape[1:])),
            targets=Spec((b,), "int64"),
            backend=args.backend,
            check_finite=args.check_finite,
            distributed=args.distributed,
            bucket_mb=args.bucket_mb,
            memory_budget=args.memory_budget,
        )
        history, first_epoch = History(), 1

        def refresh() -> None:  # the inference model reads the trained values
            step.sync()
            predict.executable.sync_bindings_to_device()
    else:
        step = resumed.load_step(args.backend, args.check_finite)
        rng.bit_generator.state = resumed.rng_state
        history, first_epoch = resumed.history, resumed.epoch + 1

        def refresh() -> None:
            model.load_state_dict(step.state_dict())

    print(f"compiled on backend {args.backend} in {time.perf_counter() - t0:.2f} s", flush=True)
    if world > 1:
        print(f"data-parallel: {world} processes x batch {b} = global batch {b * world}")
    if resumed is not None:
        print(f"resumed from {resumed.path} after epoch {resumed.epoch}", flush=True)

    steps_per_epoch = len(x_train) // (b * world)
    loop = EpochLoop(
        step=step,
        train=(x_train, y_train),
        batch_size=b,
        epochs=recipe.epochs,
        rng=rng,
        lr_at=recipe.make_schedule(steps_per_epoch).lr_at,
        base_lr=recipe.lr,
        test_accuracy=lambda: (refresh(), evaluate(predict, x_test, y_test, eval_b))[1]
        if distributed.is_main() else math.nan,  # the processes hold the same weights
        world_size=world,
        augment=partial(data.augment, crop_padding=recipe.crop_padding) if recipe.augment
        else None,
        history=history,
        after_epoch=_hooks(args, config, step, rng, steps_per_epoch),
    )  # fmt: skip
    if first_epoch > recipe.epochs:
        print(f"the run had finished all {recipe.epochs} epochs", flush=True)
    loop.run(first_epoch)
    if args.plot or args.log or args.checkpoint or args.resume:
        _say_where(args)
    if args.save and distributed.is_main():
        refresh()
        _save(predict, args.save)
    return 0


def _hooks(args, config: dict, step, rng, steps_per_epoch: int) -> list:
    directory = args.checkpoint or args.resume
    if not distributed.is_main():  # step.save takes every process; rank 0 alone writes
        return [lambda h: step.save(Path(directory) / checkpoint.STEP_FILE)] if directory else []
    hooks = []
    if args.log:
        hooks.append(JsonLog(Path(args.log)))
    if args.plot:
        title = f"numbagrad train {args.model}"
        hooks.append(lambda h: plots.training_curves(h, steps_per_epoch, Path(args.plot), title))
    if directory:
        hooks.append(
            lambda h: checkpoint.save(
                Path(directory), len(h.epochs), step, config, rng, h, args.keep_checkpoints
            )
        )
    return hooks


class JsonLog:
    """``--log FILE``: the file holds one JSON record per finished epoch, the resumed
    run's earlier epochs included (rewritten from the checkpoint, so an epoch that an
    interruption made the run redo appears once)."""

    def __init__(self, path: Path) -> None:
        self.path, self.written = path, None

    def __call__(self, history: History) -> None:
        if self.written is None:  # first call of this process: start from the history
            self.written = 0
            self._write(history.epochs[:-1], "w")
        self._write(history.epochs[self.written :], "a")

    def _write(self, records: list[dict], mode: str) -> None:
        try:
            with open(self.path, mode) as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        except OSError as e:
            raise UsageError(f"--log {self.path}: cannot write: {e.strerror}") from None
        self.written += len(records)


def _say_where(args) -> None:
    for flag, what in (("log", "epoch records"), ("plot", "curves")):
        if getattr(args, flag):
            print(f"{what}: {getattr(args, flag)}", flush=True)
    if args.checkpoint or args.resume:
        print(f"checkpoints: {args.checkpoint or args.resume} (--resume)", flush=True)


def _save(predict, path: str) -> None:
    try:
        saved = predict.save(path)
    except OSError as e:
        raise NumbagradError(f"cannot save the model to {path}: {e.strerror}") from None
    print(f"saved the compiled model: {saved} (numbagrad.load)", flush=True)
