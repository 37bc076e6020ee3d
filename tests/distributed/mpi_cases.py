"""The data-parallel cases, shared by the test (which runs them in one process, batch 32)
and the worker script that ``mpiexec -n 2`` runs (each process at batch 16). Imported by
name: tests/conftest.py puts this folder on sys.path."""

from __future__ import annotations

import numpy as np

import numbagrad as ng
from numbagrad import data, nn, optim
from numbagrad.models import lenet5
from numbagrad.models.mlp import mlp

GLOBAL_BATCH = 32
N_STEPS = 5
SHUFFLE_SEED = 1
MLP_SIZES = [20, 24, 10]

MODELS = {
    "mlp": (lambda: mlp(MLP_SIZES), (MLP_SIZES[0],)),
    "lenet5": (lenet5, (1, 32, 32)),
}
OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda: optim.Adam(1e-3),
}
CASES = [(m, o) for m in MODELS for o in OPTIMIZERS]


def dataset(model: str, global_batch: int = GLOBAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """N_STEPS global batches of random inputs and class targets."""
    rng = np.random.default_rng(0)
    shape = MODELS[model][1]
    n = N_STEPS * global_batch
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 10, n)


def train(
    model: str,
    opt: str,
    rank: int = 0,
    world: int = 1,
    seed: int = 3,
    global_batch: int = GLOBAL_BATCH,
    **options,
):
    """N_STEPS steps at batch global_batch // world on this process's shards; returns the
    per-step losses and the final state_dict."""
    ng.manual_seed(seed)
    net = MODELS[model][0]()
    x, y = dataset(model, global_batch)
    batch = global_batch // world
    step = ng.compile_training(
        net,
        nn.CrossEntropyLoss(),
        OPTIMIZERS[opt](),
        inputs=ng.Spec((batch, *x.shape[1:])),
        targets=ng.Spec((batch,), "int64"),
        **options,
    )
    shards = data.iterate_minibatches(x, y, batch, rng=SHUFFLE_SEED, rank=rank, world_size=world)
    losses = [step(xb, yb) for xb, yb in shards]
    return np.array(losses), net.state_dict()
