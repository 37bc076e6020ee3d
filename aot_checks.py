"""What a loaded training step's two graphs must be to run as ``TrainingStep`` runs them
(``aot.py`` loads them; each graph is verified on its own by ``graph/serialize.py``): the
forward graph takes ``input`` and ``target`` and returns the loss first; every input of the
backward graph is a forward value of its own type (``saved_from``) or one the step feeds
(lr, the loss seed, an optimizer's host-fed scalars, all float scalars, each once)."""

from __future__ import annotations

import numpy as np

from .engine.autodiff import SEED_NAME
from .engine.optim import LR_NAME
from .engine.optimizer import host_scalar_fn
from .graph import Graph, Node
from .graph.ir import format_type
from .graph.ops.common import FLOAT_DTYPES
from .graph.serialize import SAVED_FROM, describe_node
from .graph.untrusted import refuse

TRAINING_INPUTS = ["input", "target"]


def check_training_graphs(forward: Graph, backward: Graph) -> None:
    names = [forward[i].name for i in forward.inputs]
    if names != TRAINING_INPUTS:
        refuse("forward graph inputs", f"a training step's inputs are {TRAINING_INPUTS}")
    if not forward.outputs or not _float_scalar(forward[forward.outputs[0]]):
        refuse("forward graph outputs", "the first output must be the loss, a float scalar")
    fed: set[str] = set()
    for leaf in backward.leaves("input"):
        where = describe_node("backward graph", leaf)
        if SAVED_FROM in leaf.attrs:
            _check_saved(leaf, forward, where)
            if _is_fed(leaf.name, where):
                refuse(where, "a value saved from the forward graph cannot take a fed name")
            continue
        if not _is_fed(leaf.name, where):
            refuse(where, "nothing feeds this input: it is no forward value, lr or host scalar")
        if leaf.name in fed or not _float_scalar(leaf):
            refuse(where, "a fed input is one float scalar per name")
        fed.add(leaf.name)
    if LR_NAME not in fed:
        refuse("backward graph", f"it has no input {LR_NAME!r} (the learning rate)")


def _float_scalar(node: Node) -> bool:
    return node.shape == () and node.dtype in FLOAT_DTYPES


def _check_saved(leaf: Node, forward: Graph, where: str) -> None:
    source = leaf.attrs[SAVED_FROM]
    if source not in forward:
        refuse(where, f"it is saved from %{source}, which is not a node of the forward graph")
    node = forward[source]
    if (node.shape, node.dtype) != (leaf.shape, leaf.dtype):
        theirs = format_type(node.shape, node.dtype)
        refuse(where, f"it is saved from %{source}, a {theirs}, not its own type")


def _is_fed(name: str, where: str) -> bool:
    """Whether the step feeds an input named ``name`` (lr, the seed, a host scalar)."""
    if name in (LR_NAME, SEED_NAME):
        return True
    try:
        return host_scalar_fn(name) is not None
    except ValueError:  # a host scalar's kind with an argument that is no number
        refuse(where, f"the host-fed scalar {name!r} has no numeric argument")


def shared_binding(leaf: Node, array: np.ndarray, label: str) -> np.ndarray:
    """``array`` (a model array both graphs bind by name) if it fits ``leaf``."""
    if array.shape != leaf.shape or str(array.dtype) != leaf.dtype:
        refuse(
            describe_node(label, leaf),
            f"the model's array {leaf.name!r} is {format_type(array.shape, str(array.dtype))}, "
            f"not {format_type(leaf.shape, leaf.dtype)}",
        )
    return array
