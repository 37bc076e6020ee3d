"""``numbagrad graph MODEL [--training] [--after PASS] -o FILE.svg|.png|.pdf|.dot``: the graph
the compiler builds for a zoo model, as a picture (Graphviz ``dot``, when installed), coloured
by fusion group; and :func:`render`, which ``profile --dump --render`` uses too."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from ..compiler import compile as compile_model
from ..compiler import compile_training
from ..engine import Spec, nn
from ..engine.nn.init import manual_seed
from ..errors import NumbagradError
from ..graph.dot import fusion_groups, to_dot
from ..graph.pipeline import DEFAULT_PASSES, saved_ids
from .common import INPUT_SHAPE, MODELS, OPTIMIZERS, UsageError, build_model, int_at_least
from .recipes import recipe_for

FORMATS = ("svg", "png", "pdf")  # rendered by dot; ".dot" is written as it is
INPUT = "input"  # --after input: the traced graph, before any pass
INSTALL = "apt-get install graphviz"


def add_parser(sub) -> None:
    graph = sub.add_parser(
        "graph",
        help="draw the graph the compiler builds for a zoo model (Graphviz)",
        description="Trace and optimize a zoo model (inference, or with --training a "
        "training step) and draw its forward or backward graph: nodes labelled with op, type "
        "and layer and filled by fusion group (the ops that run as one kernel), edges "
        "labelled with the bytes they carry. Rendered by Graphviz dot; without it, the .dot "
        "file is written.",
    )
    graph.add_argument("model", help=f"model name: {', '.join(MODELS)}")
    add = graph.add_argument
    add("-o", "--output", required=True, metavar="FILE", help="FILE.svg, .png, .pdf or .dot")
    add("--training", action="store_true", help="a training step's graphs (default inference)")
    add(
        "--graph",
        choices=("forward", "backward"),
        help="with --training, which graph (default backward: gradients and optimizer)",
    )
    add(
        "--after",
        default=DEFAULT_PASSES[-1],
        metavar="PASS",
        help=f"the graph as it stands after this pass ({INPUT}: as traced; default: the "
        f"last, {DEFAULT_PASSES[-1]}): {', '.join(dict.fromkeys(DEFAULT_PASSES))}",
    )
    add(
        "--batch-size",
        type=int_at_least(1),
        metavar="B",
        help="(default 1; 2 with --training, as BatchNorm needs two values per channel)",
    )
    add("--optimizer", choices=OPTIMIZERS, help="with --training (default: the recipe's)")
    graph.set_defaults(run=graph_command)


def _passes_until(after: str) -> list[str]:
    """The default pipeline up to the first run of ``after`` (nothing for ``input``)."""
    if after == INPUT:
        return []
    if after not in DEFAULT_PASSES:
        known = ", ".join(dict.fromkeys([INPUT, *DEFAULT_PASSES]))
        raise UsageError(f"unknown pass {after!r} for --after; passes: {known}")
    return list(DEFAULT_PASSES[: DEFAULT_PASSES.index(after) + 1])


def graph_command(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = out.suffix.lstrip(".")
    if fmt not in (*FORMATS, "dot"):
        raise UsageError(f"-o {out}: the file must end in .svg, .png, .pdf or .dot")
    if not out.resolve().parent.is_dir():
        raise UsageError(f"-o {out}: no such directory to save into")
    if args.graph and not args.training:
        raise UsageError("--graph chooses between a training step's graphs: add --training")
    passes = _passes_until(args.after)
    manual_seed(0)
    model = build_model(args.model)
    batch = args.batch_size or (2 if args.training else 1)
    x = Spec((batch, *INPUT_SHAPE))
    options = {"backend": "interp", "passes": passes, "disable": ["plan_memory"]}
    if args.training:
        recipe = recipe_for(args.model, args)
        step = compile_training(
            model,
            nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
            recipe.make_optimizer(),
            x,
            Spec((batch,), "int64"),
            **options,
        )
        which = args.graph or "backward"
        graph = step.forward_graph if which == "forward" else step.backward_graph
        keep = saved_ids(step.backward_graph) | set(step.forward_graph.outputs)
        keep = frozenset(keep) if which == "forward" else frozenset()
    else:
        which, graph = "forward", compile_model(model, x, **options).forward_graph
        keep = frozenset()
    what = f"{args.model} {'training step' if args.training else 'inference'}, {which} graph"
    print(f"{what} after {args.after}: {len(graph.ops())} ops, {len(graph.leaves())} leaves")
    written, rendered = render(to_dot(graph, fusion_groups(graph, keep)), out)
    print(f"wrote {written}" if rendered or fmt == "dot" else _not_rendered(written, out))
    return 0


def render(source: str, out: Path) -> tuple[Path, bool]:
    """Write Graphviz ``source`` as ``out`` (.dot as is; .svg, .png, .pdf rendered by ``dot``).
    Without ``dot`` installed, writes ``out`` with the suffix .dot instead. Returns the file
    written and whether it was rendered."""
    dot_path = out.with_suffix(".dot")
    fmt = out.suffix.lstrip(".")
    exe = shutil.which("dot")
    if fmt == "dot" or exe is None:
        dot_path.write_text(source)
        return dot_path, False
    try:
        subprocess.run(
            [exe, f"-T{fmt}", "-o", str(out)], input=source, text=True, check=True,
            capture_output=True, timeout=600,
        )  # fmt: skip
    except subprocess.CalledProcessError as e:
        problem = (e.stderr or "").strip().splitlines()[-1:] or [f"exit status {e.returncode}"]
        raise NumbagradError(f"Graphviz dot could not render {out}: {problem[0]}") from None
    except subprocess.TimeoutExpired:
        raise NumbagradError(f"Graphviz dot took over 10 minutes to render {out}") from None
    return out, True


def _not_rendered(written: Path, wanted: Path) -> str:
    fmt = wanted.suffix.lstrip(".")
    return (
        f"Graphviz dot is not installed ({INSTALL}): wrote {written}; render it with "
        f"dot -T{fmt} {written} -o {wanted}"
    )
