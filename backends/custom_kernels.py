"""The kernels users register for their custom ops (``numbagrad.library``), a lowering table
per backend beside each backend's own (``lower_node`` reads both), with the calling convention
that turns a user's kernel into a launch, and what happens to a custom op with no kernel on a
backend: its NumPy reference runs there, after a warning given once per op and backend, or a
``BackendError`` while ``strict_kernels`` is on.

Calling convention: ``kernel(*inputs, out, *attributes)``, the attributes in the order the op
declares them. On ``cpu`` the kernel is a Numba function called with the input arrays; on
``cuda`` a ``numba.cuda.jit`` kernel launched with device arrays over a 1-d grid of at least
``out.size`` threads (``cuda.grid(1)``; a grid-stride loop serves any size).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from ..errors import BackendError, KernelWarning, OpError
from ..graph import Graph, Node
from ..graph.ops import get_op
from .executable import Launch

Lowering = Callable[[Node, Graph], Launch]
BACKENDS = ("cpu", "cuda")

_TABLES: dict[str, dict[str, Lowering]] = {backend: {} for backend in BACKENDS}
_STRICT: ContextVar[bool] = ContextVar("strict_kernels", default=False)
_warned: set[tuple[str, str]] = set()


def register(backend: str, op: str, lowering: Lowering, replace: bool = False) -> None:
    """Lower ``op`` on ``backend`` with ``lowering``; a second registration is refused unless
    ``replace``."""
    if backend not in BACKENDS:
        raise OpError(f"{op}: kernels are registered for {' or '.join(BACKENDS)}, not {backend!r}")
    if op in _TABLES[backend] and not replace:
        raise OpError(
            f"{op} already has a {backend} kernel; pass replace=True to register_kernel to "
            "replace it"
        )
    _TABLES[backend][op] = lowering


def lowering_for(backend: str, op: str) -> Lowering | None:
    return _TABLES.get(backend, {}).get(op)


def has_kernel(backend: str, op: str) -> bool:
    return op in _TABLES[backend]


def drop(op: str) -> None:
    """Forget every kernel of ``op``, and that it was warned about (it is defined again)."""
    for backend, table in _TABLES.items():
        table.pop(op, None)
        _warned.discard((op, backend))


@contextmanager
def strict_kernels(on: bool) -> Iterator[None]:
    """While on, lowering a custom op that has no kernel for the backend raises instead of
    running the op's NumPy reference there."""
    token = _STRICT.set(bool(on))
    try:
        yield
    finally:
        _STRICT.reset(token)


def no_kernel(node: Node, backend: str) -> None:
    """``node`` is about to run its NumPy reference on ``backend``: for a custom op, say so
    once (``KernelWarning``), or refuse under ``strict_kernels``."""
    origin = get_op(node.op).origin
    if not origin:
        return
    register_call = f"@<op>.register_kernel({backend!r})"
    if _STRICT.get():
        raise BackendError(
            f"custom op {node.op!r} (module {origin}) has no {backend} kernel and strict=True; "
            f"register one with {register_call} or compile with strict=False"
        )
    if (node.op, backend) not in _warned:
        _warned.add((node.op, backend))
        warnings.warn(
            f"custom op {node.op!r} (module {origin}) has no {backend} kernel, so it runs its "
            f"NumPy reference on {backend}; register one with {register_call}",
            KernelWarning,
            stacklevel=2,
        )


def cpu_lowering(kernel: Callable, attr_names: Sequence[str]) -> Lowering:
    """A user's Numba kernel as a cpu lowering: ``kernel(*inputs, out, *attributes)``."""

    def lower(node: Node, graph: Graph) -> Launch:
        args = tuple(node.attrs[k] for k in attr_names)
        return lambda inputs, out: kernel(*inputs, out, *args)

    return lower


def cuda_lowering(kernel: Callable, attr_names: Sequence[str]) -> Lowering:
    """A user's ``numba.cuda.jit`` kernel as a cuda lowering, launched with a 1-d grid that
    covers the output (imported on use: registering needs no GPU)."""

    def lower(node: Node, graph: Graph) -> Launch:
        from .cuda.codegen import prepared
        from .cuda.runtime import grid_launcher

        args = tuple(node.attrs[k] for k in attr_names)
        configured = grid_launcher(kernel, max(node.size, 1))
        return prepared(lambda inputs, out: lambda: configured(*inputs, out, *args))

    return lower
