"""CPU lowering of training BatchNorm's reductions, ``batch_norm_stats`` and
``batch_norm_grad_stats`` (kernels/batchnorm.py): inputs viewed as (N, C, L), float64
workspaces made once here, work items in parallel above ``PARALLEL_MIN_ELEMENTS``."""

from __future__ import annotations

import math

import numba
import numpy as np

from .kernels import batchnorm
from .kernels.parallel import PARALLEL_MIN_ELEMENTS
from .lowering import lowers


def _work(shape: tuple[int, ...]) -> tuple[tuple[int, int, int], np.ndarray]:
    """The (N, C, L) view of an input of ``shape`` and the partial sums' workspace: one work
    item per thread and a half (rows split evenly), or one for small inputs."""
    n, c, rest = shape[0], shape[1], math.prod(shape[2:])
    items = 1
    if n * c * rest >= PARALLEL_MIN_ELEMENTS:
        items = max(1, min(n * c, 2 * numba.config.NUMBA_NUM_THREADS))
    return (n, c, rest), np.zeros((items, 2, c))


@lowers("batch_norm_stats")
def _batch_norm_stats(node, graph):
    view, partial = _work(graph[node.inputs[0]].shape)
    shift = np.zeros(view[1])

    def launch(inputs, out):
        batchnorm.moments(inputs[0].reshape(view), out, partial, shift)

    return launch


@lowers("batch_norm_grad_stats")
def _batch_norm_grad_stats(node, graph):
    view, partial = _work(graph[node.inputs[0]].shape)
    shifts = np.zeros((2, view[1]))
    means = math.prod(graph[node.inputs[2]].shape)  # 1 or C

    def launch(inputs, out):
        g, x, mean = inputs
        batchnorm.grad_sums(
            g.reshape(view), x.reshape(view), mean.reshape(means), out, partial, shifts
        )

    return launch
