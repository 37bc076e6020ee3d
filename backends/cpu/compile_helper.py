"""A helper process for the first run of a CPU executable on a cold kernel cache.

Numba compiles one kernel at a time and holds the GIL while it does, so the first run of a
graph whose kernels are not in the on-disk cache yet is one core compiling for seconds
(LeNet-5's training step: ~60 kernels, ~20 s of CPU). ``first_run`` forks a child that walks
the same launches (those of numbagrad's own Numba kernels) from the last one backwards in
compile-only mode (``compile_only``: each call of a Numba kernel compiles it for its argument
types into the on-disk cache and runs nothing) while the run compiles from the first; a kernel
the child has saved by the time the run gets there is loaded from the cache instead of
compiled. The two meet in the middle, and the run then kills the child. The child is a forked
copy (it writes no buffer of the run) and what it saves is the code the run would have
compiled, so results are those of a run without it. (Killed while writing an entry, it may
leave a ``*.tmp.*`` file, which Numba never reads.) The run names on a pipe each kernel it
starts compiling, and the child skips those.

The helper starts only where it can help: ``NUMBAGRAD_COMPILE_HELPER`` is not ``0``, the
process can fork and is not an MPI rank, Numba's cache directory for numbagrad's kernels can be
written, the executable has ``MIN_KERNELS`` kernels or more, and no earlier first run of the
same graph finished with this cache (a marker file per graph beside the entries: a warm cache
loads the kernels in well under a second, and a child would only slow that down).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numba
from numba.core import config, event, types
from numba.core.dispatcher import Dispatcher

from ...graph import Graph
from ...graph.ops import get_op
from ..collective import launched_by_mpi
from ..executable import Kernel
from ..numba_cache import numba_cache_root, sources_digest

ENV = "NUMBAGRAD_COMPILE_HELPER"
MIN_KERNELS = 8  # fewer kernels compile in a second or two: a fork is not worth it
_PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal for the child when its parent dies


class _NoValue(Exception):
    """A kernel whose result the launch would use, called in compile-only mode."""


def _key(dispatcher: Dispatcher, args: tuple) -> bytes:
    """One line naming a kernel and the argument types it compiles for."""
    f = dispatcher.py_func
    return f"{f.__module__}.{f.__qualname__}{tuple(args)}".encode()


class _RunCompiles(event.Listener):
    """In the run: writes to the child, through a pipe, each kernel the run starts compiling
    (ResNet's layers share most kernels: without it, both would often compile one at once)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def on_start(self, ev: event.Event) -> None:
        with contextlib.suppress(OSError):  # a full pipe (the child is behind) or a dead child
            os.write(self.fd, _key(ev.data["dispatcher"], ev.data["args"]) + b"\n")

    def on_end(self, ev: event.Event) -> None:
        pass


class _Claims:
    """In the child: the kernels the run has started compiling, read from the pipe."""

    def __init__(self, fd: int) -> None:
        self.fd, self.keys, self.partial = fd, set(), b""

    def __contains__(self, key: bytes) -> bool:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 1 << 16):
                *lines, self.partial = (self.partial + chunk).split(b"\n")
                self.keys.update(lines)
        return key in self.keys


_claims: _Claims | None = None  # set in the child only


def _compile_for_call(self: Dispatcher, *args, **kwargs):
    """``Dispatcher.__call__`` in compile-only mode: compile (or load from the cache) the
    overload these arguments select and run nothing. A kernel returning a bool (``all_finite``,
    a Winograd conv that met no NaN) answers True, as on finite data, so the launch goes on to
    the kernels a normal run calls; any other result cannot be made up (``_NoValue``)."""
    if kwargs or not self._can_compile:
        raise _NoValue
    sig = tuple(self.typeof_pyval(a) for a in args)
    if _claims is not None and _key(self, sig) in _claims:
        raise _NoValue  # the run is compiling it: on to the next launch
    self.compile(sig)
    returns = self.overloads[sig].signature.return_type
    if returns == types.boolean:
        return True
    if returns == types.none:
        return None
    raise _NoValue


@contextlib.contextmanager
def compile_only() -> Iterator[None]:
    """Within it, calling a Numba kernel compiles it (into the on-disk cache) and runs
    nothing; see ``_compile_for_call``."""
    own = "__call__" in Dispatcher.__dict__
    previous = Dispatcher.__dict__.get("__call__")
    Dispatcher.__call__ = _compile_for_call
    try:
        yield
    finally:
        if own:
            Dispatcher.__call__ = previous
        else:
            del Dispatcher.__call__


def _numba_builtin(kernel: Kernel) -> bool:
    """Whether a launch runs numbagrad's own Numba kernels: not a NumPy reference (nothing to
    compile) nor a custom op's kernel (a user's function, whose side effects must not run in
    a second process)."""
    custom = kernel.node is not None and get_op(kernel.node.op).origin
    return kernel.impl == "numba" and not custom


def compile_kernels(kernels: Sequence[Kernel]) -> None:
    """Compile what each launch of numbagrad's Numba kernels calls, last launch first, in
    compile-only mode. A launch that needs a kernel's result, or fails on buffers holding no
    real values, is skipped: the run compiles what it calls itself."""
    with compile_only():
        for k in filter(_numba_builtin, reversed(kernels)):
            try:
                k.launch(k.inputs, k.out)
            except Exception:  # noqa: BLE001  (any failure only means less help)
                continue


def _marker(graph: Graph) -> Path:
    """The file saying a first run of ``graph`` finished with this cache."""
    key = f"{sources_digest()}\n{numba.__version__}\n{sys.version}\n{graph}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return numba_cache_root() / "first_runs" / digest


def _wanted(kernels: Sequence[Kernel]) -> bool:
    return (
        os.environ.get(ENV, "1") != "0"
        and hasattr(os, "fork")
        and "mpi4py" not in sys.modules  # a forked MPI process must not talk to the job
        and not launched_by_mpi()
        and not config.DISABLE_JIT
        and len(kernels) >= MIN_KERNELS
    )


def _writable_marker(graph: Graph) -> Path | None:
    """The graph's marker path when its folder can be written, else None."""
    marker = _marker(graph)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return marker if os.access(marker.parent, os.W_OK) else None


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this child if the parent dies first (Linux), so no child outlives
    an interrupted run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _start_helper(kernels: Sequence[Kernel], claims: int, other_end: int) -> int:
    """Fork the child that runs ``compile_kernels``, skipping the kernels the run names on the
    pipe ``claims``; its pid."""
    global _claims
    parent = os.getpid()
    with warnings.catch_warnings():  # Python 3.12+ warns on fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns into the caller's code
        _die_with_parent(parent)
        os.close(other_end)
        os.set_blocking(claims, False)
        _claims = _Claims(claims)
        warnings.simplefilter("ignore")  # the run says what there is to say
        os.nice(5)  # on a busy machine the run keeps its core
        compile_kernels(kernels)
    finally:
        os._exit(0)


def _stop_helper(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # already reaped (SIGCHLD ignored)
        os.waitpid(pid, 0)


@contextlib.contextmanager
def _helper(kernels: Sequence[Kernel]) -> Iterator[None]:
    """A helper child while it lasts, told what the run compiles, and killed at its end."""
    read, write = os.pipe()  # the run keeps the read end too: no SIGPIPE if the child dies
    try:
        pid = _start_helper(kernels, read, write)
        os.set_blocking(write, False)
        try:
            with event.install_listener("numba:compile", _RunCompiles(write)):
                yield
        finally:
            _stop_helper(pid)
    finally:
        os.close(read)
        os.close(write)


@contextlib.contextmanager
def first_run(graph: Graph, kernels: Sequence[Kernel]) -> Iterator[None]:
    """Around an executable's first run: a helper child compiles its kernels from the last
    while the run compiles them from the first (see the module docstring); the marker is
    written once the run has finished."""
    marker = _writable_marker(graph) if _wanted(kernels) else None
    if marker is not None and not marker.exists():
        with _helper(kernels):
            yield
    else:
        yield
    if marker is not None:
        with contextlib.suppress(OSError):
            marker.touch()
