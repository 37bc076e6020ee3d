"""Anomaly mode (``check_finite``): every float value is checked on the host as it is made,
and the first NaN or infinity raises a ``NonFiniteError`` naming the graph, the op, the layer,
the node and the index. Switched on per executable by wrapping its kernel list once, so an
executable without it runs exactly the loop it always ran.

What counts as an anomaly: any NaN; an infinity in a value fed in (input, parameter, optimizer
state); an infinity an op makes from finite inputs (an overflow, log(0), x/0). An infinity an
op inherits from an infinite input is let through, because some are deliberate: attention
masks are constants holding -inf, and the backward graph reads the forward values that hold
them. Every kernel output is checked before the next kernel runs, so the inputs of an op are
known to be finite unless they carry such an inherited infinity (tracked by node id, since
in-place reuse may have overwritten an input's buffer by the time its reader finishes).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from ..errors import NonFiniteError
from ..graph import Graph, Node

ENV = "NUMBAGRAD_CHECK_FINITE"

Found = tuple[tuple[int, ...], float]
"""Where a value first holds a non-finite number: its index and that number."""


def checks_enabled(check_finite: bool | None) -> bool:
    """``check_finite``, or when it is None whether ``NUMBAGRAD_CHECK_FINITE=1`` is set."""
    if check_finite is None:
        return os.environ.get(ENV, "").strip() == "1"
    return bool(check_finite)


def arm_finite_checks(check_finite: bool | None, **executables) -> bool:
    """Anomaly mode for each executable (keyword: its graph's label, as "forward") if
    ``checks_enabled(check_finite)``; returns whether it is on."""
    on = checks_enabled(check_finite)
    if on:
        for label, exe in executables.items():
            exe.enable_finite_checks(label)
    return on


@contextmanager
def undone_if_non_finite(executables: Sequence, host_arrays: Sequence[np.ndarray] = ()) -> Iterator:
    """When a ``NonFiniteError`` leaves the block, first put back the values of every state
    leaf the executables update (parameters, buffers, optimizer state) and of ``host_arrays``
    as they were when it began: in-place updates may already have overwritten some."""
    saved = [(exe, s, exe.read(s)) for exe in executables for s, _ in exe.graph.updates]
    kept = [a.copy() for a in host_arrays]
    try:
        yield
    except NonFiniteError:
        for exe, state, value in saved:
            exe.set_input(state, value)
        for array, value in zip(host_arrays, kept):
            np.copyto(array, value)
        raise


def first_non_finite(array: np.ndarray) -> Found | None:
    """The index (C order) and value of the first NaN or infinity in a float ``array``."""
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    return index, float(array[index])


def _is_float(node: Node) -> bool:
    return np.dtype(node.dtype).kind == "f"


def _may_carry_inf(node: Node) -> bool:
    """Leaves whose infinities are the graph's own (masks), not fed in by the user."""
    return node.role == "const" or "saved_from" in node.attrs


def describe(node: Node, graph: Graph) -> str:
    """``%12 matmul_epilogue (add, log) 'features.0'``: id, op, fused ops and layer path (for
    an unnamed optimizer update, the state it updates)."""
    text = f"%{node.id} {node.role if node.op == 'leaf' else node.op}"
    body = node.attrs.get("body")
    if body:
        text += f" ({', '.join(step[0] for step in body)})"
    if node.name:
        return f"{text} '{node.name}'"
    updated = [graph[state].name for state, value in graph.updates if value == node.id]
    return f"{text} (the update of '{updated[0]}')" if updated else text


def _where(found: Found) -> str:
    index, value = found
    return f"{value} at index {index}" if index else f"{value}"


class FiniteChecker:
    """Checks one executable's values while it runs; ``to_host`` turns a buffer into a host
    array (the identity on the CPU; a synchronized copy on a GPU)."""

    def __init__(self, graph: Graph, label: str, to_host: Callable[[object], np.ndarray]):
        self.graph, self.label, self.to_host = graph, label, to_host
        self._leaves = [n for n in graph.leaves() if _is_float(n)]
        self._inherited: dict[int, Found] = {}  # node id -> its first (deliberate) infinity

    def wrap(self, kernels: Sequence, buffers: dict[int, object]) -> list:
        """The kernel list with a check after every float kernel; the first kernel also checks
        the leaves (what is fed in) before it runs."""
        wrapped = []
        for i, k in enumerate(kernels):
            launch = k.launch
            if _is_float(k.node):
                launch = self._checked(k.node, launch)
            if i == 0:
                launch = self._after_leaves(launch, buffers)
            wrapped.append(dataclasses.replace(k, launch=launch))
        return wrapped

    def _after_leaves(self, launch, buffers):
        def first(inputs, out):
            self.check_leaves(buffers)
            launch(inputs, out)

        return first

    def _checked(self, node: Node, launch):
        def checked(inputs, out):
            launch(inputs, out)
            self.check(node, self.to_host(out))

        return checked

    def check_leaves(self, buffers: dict[int, object]) -> None:
        self._inherited = {}
        for leaf in self._leaves:
            found = first_non_finite(self.to_host(buffers[leaf.id]))
            if found is None:
                continue
            if np.isnan(found[1]) or not _may_carry_inf(leaf):
                raise NonFiniteError(
                    f"non-finite value in the {self.label} graph: {describe(leaf, self.graph)} "
                    f"has {_where(found)} before any op ran"
                )
            self._inherited[leaf.id] = found

    def check(self, node: Node, out: np.ndarray) -> None:
        found = first_non_finite(out)
        if found is None:
            return
        carried = [i for i in node.inputs if i in self._inherited]
        if carried and not np.isnan(found[1]):
            self._inherited[node.id] = found  # an infinity passed on, e.g. a masked score
            return
        raise NonFiniteError(
            f"non-finite value in the {self.label} graph: {describe(node, self.graph)} has "
            f"{_where(found)}; {self._blame(carried, bool(node.attrs.get('body')))}"
        )

    def _blame(self, carried: Iterable[int], fused_ops: bool) -> str:
        carried = list(carried)
        if not carried:
            fused = " (fused: compile without the fusion passes to tell its ops apart)"
            return "the inputs were finite, so this op made it" + (fused if fused_ops else "")
        source = self.graph[carried[0]]
        return (
            f"the inputs were not finite: {describe(source, self.graph)} holds "
            f"{_where(self._inherited[source.id])}"
        )
