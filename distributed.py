"""Data-parallel training over MPI: every process holds the model, steps on its shard of each
global batch, and the gradients are averaged across processes before the optimizer's update.

Run a script under an MPI launcher (``mpiexec -n 4 python train.py``) and compile with
``ng.compile_training(..., distributed=True)``: the backward graph then averages the gradients
with ``allreduce`` nodes, one per bucket of about ``bucket_mb`` (``graph/ops/collective.py``),
rank 0's parameters are broadcast to every process at compile, the processes check that they
compiled the same step, and ``step.save()`` writes from rank 0 only. Shard the data with
``data.iterate_minibatches(..., rank=rank(), world_size=world_size())``.

Without an MPI launcher, or without mpi4py (``pip install 'numbagrad[mpi]'``), the world is one
process: ``rank() == 0``, ``world_size() == 1``, and nothing imports MPI until ``init()`` or a
``distributed=True`` compile asks for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .backends import collective
from .backends.collective import abort, barrier
from .errors import DistributedError, OptionError
from .graph import Graph, Value
from .graph.ops.collective import bucket_gradients

__all__ = [
    "DataParallel",
    "abort",
    "average",
    "barrier",
    "broadcast_state",
    "data_parallel",
    "init",
    "is_main",
    "rank",
    "world_size",
]


def init(timeout: float | None = None) -> int:
    """Join the MPI job (once) and return its size; a world of one without a launcher or
    mpi4py. ``timeout``: seconds a collective may wait before it calls the job stuck
    (default ``NUMBAGRAD_MPI_TIMEOUT`` or 600). Several processes on one machine share its
    cores: each gets ``cores // processes`` Numba threads unless ``NUMBA_NUM_THREADS`` says."""
    return _share_cores(collective.init(timeout=timeout))


def _share_cores(size: int) -> int:
    if size > 1 and "NUMBA_NUM_THREADS" not in os.environ:
        import numba  # here: a plain ``import numbagrad`` need not load Numba

        cores = len(os.sched_getaffinity(0)) // collective.local_size()
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cores)))
    return size


def rank() -> int:
    """This process's rank in the job (0 in a world of one)."""
    return collective.rank()


def world_size() -> int:
    """How many processes the job has (1 before ``init`` and without MPI)."""
    return collective.world_size()


def is_main() -> bool:
    """Whether this is rank 0, the process that prints and writes files."""
    return rank() == 0


def broadcast_state(arrays: Mapping[str, object], root: int = 0) -> None:
    """Overwrite every array in ``arrays`` (by name, contiguous) with rank ``root``'s."""
    for name, array in arrays.items():
        collective.broadcast(array, root, f"the broadcast of {name!r}")


def average(values) -> list[float]:
    """The element-wise mean of ``values`` (floats) over every process, e.g. each step's
    loss over the global batch from the per-process losses."""
    array = np.array(values, dtype=np.float64)
    collective.allreduce_sum(array, "averaging values over the processes")
    return list(array / world_size())


def data_parallel(graph: Graph) -> bool:
    """Whether a (backward) graph averages gradients across processes."""
    return any(n.op == "allreduce" for n in graph.ops())


class DataParallel:
    """What ``compile_training(..., distributed=True)`` adds to a training step: rank 0's
    parameters everywhere before compiling, the bucketed gradient average in the backward
    graph, and a check that every process compiled the same step."""

    def __init__(self, bucket_mb: float = 25.0) -> None:
        if not bucket_mb > 0:
            raise OptionError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.bucket_bytes = int(bucket_mb * 1024 * 1024)
        _share_cores(collective.init(require=True))

    def before_compile(self, model) -> None:
        """Every process starts from rank 0's parameters and buffers."""
        model.refresh_state()
        arrays = {n: p.data for n, p in model.named_parameters()}
        arrays.update((n, b.data) for n, b in model.named_buffers())
        broadcast_state(arrays)

    def reduce(self, grads: Mapping[str, Value]) -> dict[str, Value]:
        return bucket_gradients(grads, self.bucket_bytes)

    def after_compile(self, forward: Graph, backward: Graph) -> None:
        check_same_step(step_signature(forward, backward))


def step_signature(forward: Graph, backward: Graph) -> str:
    """What every process's compiled step must share: input types, buckets, parameters."""
    from .graph.ir import format_type

    inputs = " ".join(format_type(n.shape, n.dtype) for n in forward.leaves("input"))
    buckets = " ".join(format_type(n.shape, n.dtype) for n in backward.ops() if n.op == "allreduce")
    params = sorted((n.name, n.shape, n.dtype) for n in forward.leaves("param"))
    digest = hashlib.sha256(repr(params).encode()).hexdigest()[:12]
    return f"inputs {inputs}, buckets {buckets}, {len(params)} parameters #{digest}"


def check_same_step(signature: str) -> None:
    """Raise ``DistributedError`` on every process unless all compiled ``signature``."""
    everyone = collective.allgather_text(signature, "the check that every process compiled")
    odd = [r for r, s in enumerate(everyone) if s != everyone[0]]
    if odd:
        raise DistributedError(
            f"the processes compiled different training steps (rank 0: {everyone[0]}; rank "
            f"{odd[0]}: {everyone[odd[0]]}): every process must compile the same model and "
            "optimizer for the same per-process batch shape"
        )


def save_from_main(graph: Graph, write: Callable[[], Path]) -> Path:
    """``write()`` on rank 0 only when ``graph`` is data-parallel (the processes hold the
    same values), the others waiting until the file is complete; returns its path."""
    if world_size() == 1 or not data_parallel(graph):
        return write()
    saved = str(write()) if is_main() else ""
    return Path(collective.allgather_text(saved, "saving the training step")[0])
