"""What each process of the ``mpiexec -n 2`` (or 3) tests runs (test_data_parallel.py):
``python mpi_worker.py CASE OUT``, with CASE one of

- ``equivalence``: every case of mpi_cases.py at batch 16 per process, each rank from a
  different initial seed (the broadcast from rank 0 must make them agree); writes
  ``OUT/rank<r>.npz`` (losses and final weights);
- ``three`` (under ``mpiexec -n 3``): the MLP with SGD at batch 16 per process, rank 0
  writing ``OUT/rank0.npz``;
- ``mismatch``: rank 1 compiles another batch size, so compiling must fail on both;
- ``raise``: rank 1 raises in its third step; ``exit``: rank 1 leaves after two steps without
  an error; ``kill``: rank 1 is killed (SIGKILL) there: the job must end, never hang;
- ``save``: two steps, ``step.save(OUT/step.npz)``, then every rank loads it and takes a step;
- ``cuda``: an ``allreduce`` node on the cuda backend (run it under the simulator) averages
  rank-dependent values; writes ``OUT/rank<r>.npz``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import mpi_cases  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad import data, distributed, nn, optim  # noqa: E402
from numbagrad.models import mlp  # noqa: E402


def equivalence(rank: int, out: Path) -> None:
    arrays = {}
    for model, opt in mpi_cases.CASES:
        losses, weights = mpi_cases.train(model, opt, rank, 2, seed=3 + rank, distributed=True)
        arrays[f"{model}.{opt}.losses"] = losses
        arrays.update((f"{model}.{opt}.{k}", v) for k, v in weights.items())
    np.savez(out / f"rank{rank}.npz", **arrays)


def three(rank: int, out: Path) -> None:
    losses, weights = mpi_cases.train("mlp", "sgd", rank, 3, global_batch=48, distributed=True)
    everyone = distributed.average(losses)
    if rank == 0:
        np.savez(out / "rank0.npz", losses=np.array(everyone), **weights)


def mismatch(rank: int, out: Path) -> None:
    ng.compile_training(
        mlp(mpi_cases.MLP_SIZES),
        nn.CrossEntropyLoss(),
        optim.SGD(0.1),
        inputs=ng.Spec((16 if rank == 0 else 8, mpi_cases.MLP_SIZES[0])),
        targets=ng.Spec((16 if rank == 0 else 8,), "int64"),
        distributed=True,
    )


def failing(how: str, rank: int) -> None:
    model = mlp(mpi_cases.MLP_SIZES)
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.1),
        inputs=ng.Spec((16, mpi_cases.MLP_SIZES[0])),
        targets=ng.Spec((16,), "int64"),
        distributed=True,
    )
    x, y = mpi_cases.dataset("mlp")
    for i, (xb, yb) in enumerate(data.iterate_minibatches(x, y, 16, rank=rank, world_size=2)):
        if rank == 1 and i == 2:
            if how == "raise":
                raise ValueError("simulated failure")
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            sys.exit(0)
        step(xb, yb)


def save(rank: int, out: Path) -> None:
    x, y = mpi_cases.dataset("mlp")
    batches = list(data.iterate_minibatches(x, y, 16, rng=1, rank=rank, world_size=2))
    model = mlp(mpi_cases.MLP_SIZES)
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.1, momentum=0.9),
        inputs=ng.Spec((16, mpi_cases.MLP_SIZES[0])),
        targets=ng.Spec((16,), "int64"),
        distributed=True,
    )
    for xb, yb in batches[:2]:
        step(xb, yb)
    path = step.save(out / "step.npz")
    loaded = ng.load(path)
    losses = [step(*batches[2]), loaded(*batches[2])]
    weights = {k: v for k, v in loaded.state_dict().items()}
    np.savez(out / f"rank{rank}.npz", losses=np.array(losses), **weights)


def cuda(rank: int, out: Path) -> None:
    from numbagrad.backends import get_backend
    from numbagrad.graph import Builder
    from numbagrad.graph import ops as O

    b = Builder()
    x, y = b.leaf("input", (2, 3), "float32", "x"), b.leaf("input", (4,), "float32", "y")
    graph = b.build([O.allreduce(x, y)])
    exe = get_backend("cuda").compile(graph)
    exe.set_input(x.id, np.full((2, 3), 1.0 + rank, np.float32))
    exe.set_input(y.id, np.arange(4, dtype=np.float32) * (rank + 1))
    exe.run()
    np.savez(out / f"rank{rank}.npz", result=exe.output_arrays()[0].copy())


def main() -> None:
    case, out = sys.argv[1], Path(sys.argv[2])
    distributed.init()
    rank = distributed.rank()
    if case == "equivalence":
        equivalence(rank, out)
    elif case == "three":
        three(rank, out)
    elif case == "mismatch":
        mismatch(rank, out)
    elif case == "save":
        save(rank, out)
    elif case == "cuda":
        cuda(rank, out)
    else:
        failing(case, rank)


if __name__ == "__main__":
    main()
