"""``numbagrad profile MODEL``: what each graph pass does and where the time goes; and
``numbagrad summary MODEL``: the layer table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import distributed
from ..backends import BACKENDS
from ..compiler import compile as compile_model
from ..compiler import compile_training
from ..engine import Spec, nn
from ..engine.nn.init import manual_seed
from ..engine.nn.summary import summary
from ..graph.passes import PASSES
from ..graph.pipeline import COMPACT, PLAN, RECOMPUTE
from .common import (
    INPUT_SHAPE,
    MODELS,
    OPTIMIZERS,
    UsageError,
    add_check_finite,
    build_model,
    build_optimizer,
    check_model,
    int_at_least,
    positive,
)
from .graph import FORMATS, render
from .onnx_model import input_shape, is_onnx, load_onnx, parse_shape


def add_summary_parser(sub) -> None:
    parser = sub.add_parser(
        "summary",
        help="print a zoo model's layer table (output shapes, connections, parameters)",
        description="Trace a zoo model (10 classes) on one input and print one row per layer: "
        "kind, kernels, kernel size, stride, output shape, connections (multiply-accumulates "
        "per sample, bias included) and trainable parameters. Nothing is compiled.",
    )
    parser.add_argument("model", help=f"model name: {', '.join(MODELS)}, or an .onnx file")
    parser.add_argument(
        "--all", action="store_true", help="also list activations, dropout and flatten"
    )
    parser.add_argument(
        "--input-shape", type=parse_shape, metavar="N,C,H,W",
        help="an .onnx model's input shape (default: the one it declares)",
    )  # fmt: skip
    parser.set_defaults(run=summary_command)


def summary_command(args: argparse.Namespace) -> int:
    if is_onnx(args.model):
        model = load_onnx(args.model)
        shape = input_shape(model, args.input_shape)
    else:
        model, shape = build_model(args.model), (1, *INPUT_SHAPE)
    print(summary(model, Spec(shape), all_layers=args.all))
    return 0


def add_profile_parser(sub) -> None:
    profile = sub.add_parser(
        "profile",
        help="show what each graph pass does to a zoo model, and where the time goes",
        description="Compile a zoo model (inference, or with --training a whole training step) "
        "and print the pass report: per pass, wall time, nodes, kernels, FLOPs and intermediate "
        "bytes, then the planned arena; then time every kernel on random data.",
    )
    profile.add_argument("model", help=f"model name: {', '.join(MODELS)}")
    add = profile.add_argument
    add("--batch-size", type=int_at_least(1), default=64, metavar="B", help="(default 64)")
    add("--training", action="store_true", help="profile a training step (forward + backward)")
    add("--optimizer", choices=OPTIMIZERS, default="sgd", help="with --training (default sgd)")
    add(
        "--memory-budget",
        metavar="SIZE",
        help="with --training: recompute saved activations until the arena fits SIZE "
        "(e.g. 200MB, 1.5GiB); the report lists what is recomputed and the FLOPs it adds",
    )
    add("--dump", metavar="DIR", help="write the graph after every pass (.txt and .dot) here")
    add(
        "--render",
        choices=FORMATS,
        help="with --dump, also draw every dumped graph in this format (Graphviz dot)",
    )
    add("--json", metavar="FILE", help="save the pass report as JSON")
    add(
        "--disable",
        nargs="+",
        action="extend",
        default=[],
        metavar="PASS",
        help=f"switch passes off by name: {', '.join([*PASSES, COMPACT, RECOMPUTE, PLAN])}",
    )
    add("--backend", choices=BACKENDS, default="cpu", help="(default cpu)")
    add("--steps", type=int_at_least(1), default=20, metavar="N", help="timed runs (default 20)")
    add("--seed", type=int, default=0, metavar="S", help="weights and data (default 0)")
    add(
        "--distributed",
        action="store_true",
        help="with --training, under mpiexec: the data-parallel step, its gradient buckets "
        "and their allreduce time (rank 0 prints)",
    )
    add("--bucket-mb", type=positive, default=25.0, metavar="MB", help="with --distributed (25)")
    add_check_finite(add)
    profile.set_defaults(run=profile_command)


def profile_command(args: argparse.Namespace) -> int:
    check_model(args.model)
    known = [*PASSES, COMPACT, RECOMPUTE, PLAN]
    for name in args.disable:
        if name not in known:
            raise UsageError(f"unknown pass {name!r} for --disable; passes: {', '.join(known)}")
    if args.memory_budget and not args.training:
        raise UsageError("--memory-budget applies to a training step: add --training")
    if args.render and not args.dump:
        raise UsageError("--render draws the graphs --dump writes: add --dump DIR")
    if args.distributed and not args.training:
        raise UsageError("--distributed profiles a training step: add --training")
    if args.distributed:
        distributed.init()
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 speaks for the job
    manual_seed(args.seed)
    model = build_model(args.model)
    b = args.batch_size
    what = f"training step ({args.optimizer})" if args.training else "inference"
    off = f"; disabled: {', '.join(args.disable)}" if args.disable else ""
    print(f"model: {args.model}, {what} at batch {b} on backend {args.backend}{off}", flush=True)
    t0 = time.perf_counter()
    x_spec = Spec((b, *INPUT_SHAPE))
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
            distributed=args.distributed,
            bucket_mb=args.bucket_mb,
            memory_budget=args.memory_budget,
            **common,
        )
    else:
        compiled = compile_model(model, x_spec, **common)
    print(f"compiled in {time.perf_counter() - t0:.2f} s", flush=True)
    print()
    print(compiled.report)
    if args.dump:
        print(f"graphs after every pass: {args.dump}")
        if args.render:
            _render_dump(Path(args.dump), args.render)
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
    if args.distributed:
        print()
        print(bucket_table(profile, compiled.backward_graph))
    return 0


def bucket_table(profile, backward) -> str:
    """Each gradient bucket's size and allreduce time (pack, MPI, average), and their share
    of the step."""
    reduces = {n.id: n for n in backward.ops() if n.op == "allreduce"}
    times = {k.node: k.ms for k in profile.kernels if k.op == "allreduce" and k.node in reduces}
    total = sum(times.values())
    world = distributed.world_size()
    lines = [f"gradient allreduce over {world} processes (ms per step, of {profile.total_ms:.3f})"]
    lines.append(f"{'ms/run':>9} {'%':>6} {'MB':>8} {'tensors':>8}  bucket")
    for node_id, node in reduces.items():
        ms = times.get(node_id, 0.0)
        mb = node.nbytes / 2**20
        lines.append(
            f"{ms:>9.4f} {100 * ms / profile.total_ms:>5.1f}% {mb:>8.3f} "
            f"{len(node.inputs):>8}  {node.name}"
        )
    lines.append(f"{total:>9.4f} {100 * total / profile.total_ms:>5.1f}%  all buckets")
    return "\n".join(lines)


def _render_dump(directory: Path, fmt: str) -> None:
    """Draw every .dot file of a dump as ``fmt`` beside it, or say how to."""
    sources = sorted(directory.glob("*.dot"))
    for source in sources:
        _, rendered = render(source.read_text(), source.with_suffix(f".{fmt}"))
        if not rendered:
            print(
                f"Graphviz dot is not installed (apt-get install graphviz): the graphs stay "
                f".dot files; render one with dot -T{fmt} FILE.dot -o FILE.{fmt}"
            )
            return
    print(f"drew {len(sources)} graphs as .{fmt} in {directory}")
