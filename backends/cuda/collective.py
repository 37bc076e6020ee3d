"""CUDA lowering of ``allreduce``: the operands packed into the node's flat output (its bucket
in the device arena) by a copy kernel each, then one MPI Allreduce on that bucket, then the
average's scale.

MPI reads device memory only when it is built CUDA-aware (MPICH with ``--with-cuda``, Open MPI
with UCX); the mpich wheel is not. So the bucket is staged through a host buffer unless
``NUMBAGRAD_MPI_CUDA_AWARE=1`` says the MPI library takes device pointers (mpi4py passes it
the device array through ``__cuda_array_interface__``). The staged path runs on the simulator
(the tests); the CUDA-aware path needs a GPU and such an MPI build (untested here).
"""

from __future__ import annotations

import os

import numpy as np

from .. import collective
from .codegen import prepared
from .lowering import lowers
from .runtime import flat, grid_launcher, jit, load_cuda

CUDA_AWARE_ENV = "NUMBAGRAD_MPI_CUDA_AWARE"

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels


@jit(cache=True)
def copy_into(x, out, start):
    """out[start + i] = x[i] for every element of the flat x."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < x.size:
        out[start + i] = x[i]
        i += step


@jit(cache=True)
def scale(out, factor):
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < out.size:
        out[i] *= factor
        i += step


def cuda_aware() -> bool:
    return os.environ.get(CUDA_AWARE_ENV) == "1"


@lowers("allreduce")
def _allreduce(node, graph):
    average, what = node.attrs["average"], f"the allreduce of {node.name or 'a bucket'}"
    copies = [grid_launcher(copy_into, graph[i].size) for i in node.inputs]
    scaled = grid_launcher(scale, node.size)
    world = collective.init()
    staged = world > 1 and not cuda_aware()
    host = cuda.pinned_array(node.shape, dtype=node.dtype) if staged else None

    def prepare(inputs, out):
        ins, o = [flat(a) for a in inputs], flat(out)
        starts = np.cumsum([0, *(a.size for a in ins[:-1])])

        def run() -> None:
            for copy, x, start in zip(copies, ins, starts):
                copy(x, o, int(start))
            if world == 1:
                return
            if host is None:  # CUDA-aware
                cuda.synchronize()  # MPI reads the device memory outside any stream
                collective.allreduce_sum(o, what)
                if average:
                    scaled(o, o.dtype.type(1.0 / world))
                return
            o.copy_to_host(host)
            collective.allreduce_sum(host, what)
            if average:
                np.multiply(host, host.dtype.type(1.0 / world), out=host)
            o.copy_to_device(host)

        return run

    launch = prepared(prepare)
    launch.impl = "mpi"
    return launch
