"""Data-parallel step times: one process with T threads against P processes with T/P threads
each, at the same global batch, and the gradient allreduce's share of the step.

    NUMBA_NUM_THREADS=2 python bench/data_parallel.py lenet5 --global-batch 64
    NUMBA_NUM_THREADS=1 mpiexec -n 2 python bench/data_parallel.py lenet5 --global-batch 64

Each process compiles ``compile_training`` (SGD with momentum) at ``--global-batch / P``
(``distributed=True`` under an MPI launcher), takes ``--warmup`` steps, then times ``--steps``
steps on one fixed random batch (every process waits for the slowest at each allreduce, so
rank 0's wall time is the job's). Then ``step.profile`` times every kernel: the allreduce
column is the buckets' share (pack, MPI, average; it includes waiting for the other
processes). Rank 0 prints one row.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import numbagrad as ng
from numbagrad import distributed, nn, optim
from numbagrad.backends import collective
from numbagrad.cli.common import INPUT_SHAPE, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a zoo model (numbagrad train's names)")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    args = parser.parse_args()
    world = distributed.init() if collective.launched_by_mpi() else 1
    batch = args.global_batch // world
    ng.manual_seed(0)
    step = ng.compile_training(
        build_model(args.model),
        nn.CrossEntropyLoss(),
        optim.SGD(0.01, momentum=0.9, weight_decay=5e-4),
        inputs=ng.Spec((batch, *INPUT_SHAPE)),
        targets=ng.Spec((batch,), "int64"),
        distributed=world > 1,
        bucket_mb=args.bucket_mb,
    )
    rng = np.random.default_rng(distributed.rank())
    x = rng.standard_normal((batch, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    for _ in range(args.warmup):
        step(x, y)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    profile = step.profile(x, y, n_steps=args.steps)
    reduce_ms = sum(k.ms for k in profile.kernels if k.op == "allreduce")
    buckets = sum(1 for k in profile.kernels if k.op == "allreduce")
    ms = 1e3 * statistics.median(times)
    if distributed.is_main():
        print(
            f"{args.model} global batch {args.global_batch}: {world} process(es) x "
            f"{ng_threads()} thread(s), batch {batch} each: step {ms:.2f} ms (median of "
            f"{args.steps}), {args.global_batch / ms * 1e3:.0f} images/s; allreduce "
            f"{reduce_ms:.2f} ms in {buckets} bucket(s) = {100 * reduce_ms / profile.total_ms:.1f}%"
            f" of the profiled step ({profile.total_ms:.2f} ms)",
            flush=True,
        )


def ng_threads() -> int:
    import numba

    return numba.get_num_threads()


if __name__ == "__main__":
    main()
