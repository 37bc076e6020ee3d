"""A training step's memory plan, without running it: naive bytes (every post-fusion
intermediate its own buffer), the planned arena and its ratio, the peak of live bytes, then the
arena under memory budgets (fractions of the default arena) with what recomputation adds.

    python bench/memory.py                         # LeNet-5, ResNet-18 (CIFAR stem), VGG-11
    python bench/memory.py --batch-size 128 --budgets 0.8 0.7 0.6 --models resnet18
    python bench/memory.py --budgets          # no budgets: also runs on trees without them

Each step is compiled on the interp backend (graphs, passes and memory plan only: no kernel is
compiled), SGD with momentum and weight decay, cross-entropy; the memory verifier checks every
plan it prints.
"""

from __future__ import annotations

import argparse
import sys
import time

MODELS = {  # name -> (constructor arguments, input shape)
    "lenet5": ({}, (1, 32, 32)),
    "resnet18": ({"num_classes": 10, "small_input": True}, (3, 32, 32)),
    "vgg11": ({"num_classes": 10, "in_channels": 3, "input_size": 32}, (3, 32, 32)),
}


def training_step(name: str, batch: int, budget=None, backend: str = "interp", **options):
    """The compiled training step of zoo model ``name``; ``options`` go to compile_training."""
    import numbagrad as ng
    from numbagrad import models, nn, optim

    ng.manual_seed(0)
    kwargs, shape = MODELS[name]
    return ng.compile_training(
        getattr(models, name)(**kwargs),
        nn.CrossEntropyLoss(),
        optim.SGD(0.01, 0.9, weight_decay=5e-4),
        ng.Spec((batch, *shape)),
        ng.Spec((batch,), "int64"),
        backend=backend,
        **({} if budget is None else {"memory_budget": budget}),  # runs on older trees too
        **options,
    )


def _verify(step) -> None:
    from numbagrad.graph.pipeline import saved_ids
    from numbagrad.graph.training_memory import verify_training_plan

    f, b = step.forward_graph, step.backward_graph
    plans = (step.report.plans["forward"], step.report.plans["backward"])
    verify_training_plan(f, b, plans, saved_ids(b) | frozenset(f.outputs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32, help="(32)")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--budgets", nargs="*", type=float, default=[0.9, 0.75, 0.6, 0.5],
                    help="fractions of the default arena to try as budgets")  # fmt: skip
    opts = ap.parse_args(argv)
    from numbagrad import errors

    refusal = getattr(errors, "MemoryBudgetError", errors.NumbagradError)

    mib = 2**20
    print(f"training step memory plans, batch {opts.batch_size} (MiB)")
    head = f"{'model':<10}{'budget':>8}{'naive':>10}{'planned':>10}{'ratio':>8}{'peak live':>11}"
    head += f"{'recomputed':>12}{'+MFLOP':>9}{'plan s':>8}"
    print(head)
    print("-" * len(head))
    for name in opts.models:
        default = None
        for fraction in [None, *opts.budgets]:
            budget = None if fraction is None else int(fraction * default)
            t0 = time.perf_counter()
            label = "-" if fraction is None else f"{fraction:.2f}x"
            try:
                step = training_step(name, opts.batch_size, budget)
            except refusal as e:
                print(f"{name:<10}{label:>8}  refused: {e}")
                continue
            _verify(step)
            r, seconds = step.report, time.perf_counter() - t0
            default = default or r.planned_bytes
            f_plan = r.plans["forward"]
            recomputed = getattr(r, "recomputed", None)
            ops = recomputed.nodes if recomputed else 0
            flops = recomputed.flops / 1e6 if recomputed else 0.0
            print(
                f"{name:<10}{label:>8}{r.naive_bytes / mib:>10.2f}{r.planned_bytes / mib:>10.2f}"
                f"{r.planned_bytes / r.naive_bytes:>8.3f}{f_plan.peak_live_bytes / mib:>11.2f}"
                f"{ops:>12}{flops:>9.1f}{seconds:>8.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
