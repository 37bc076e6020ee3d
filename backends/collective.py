"""The MPI runtime under data-parallel training: the job's communicator, the collectives the
backends and ``numbagrad.distributed`` call, and what keeps a failed job from hanging.

mpi4py is imported only by ``init`` (``numbagrad.distributed.init``, or the lowering of an
``allreduce`` node): without it, or before it, the world is one process and nothing here
touches MPI.

No hangs: every collective here is non-blocking (``Iallreduce``, ``Ibcast``, ...) and waited
for by ``wait``, which gives up after ``timeout`` seconds (``NUMBAGRAD_MPI_TIMEOUT``, default
600: a cold first step compiles its kernels first) and watches for a *notice*. A process that
stops on an error (an uncaught exception, or ``abort``) sends every other process a notice
with its one-sentence reason, waits briefly for theirs, then calls ``MPI_Abort``, which ends
the whole job. A process waiting in a collective that gets a notice raises a
``DistributedError`` that names the failed rank and its reason, so every process says why.
A process killed outright (SIGKILL, os._exit) makes the launcher (mpiexec) end the others.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..errors import DistributedError, NumbagradError

TIMEOUT_ENV = "NUMBAGRAD_MPI_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
NOTICE_GRACE_S = 2.0  # how long a failing process waits for the others' notices
SPIN_S = 1e-3  # a wait polls flat out this long, then sleeps between polls (frees the core)
NAP_S = 5e-5
NOTICE_BYTES = 1024
LAUNCHER_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
INSTALL_HINT = "pip install 'numbagrad[mpi]' (mpi4py and the mpich wheel)"


@dataclass
class _World:
    mpi: object = None  # the mpi4py.MPI module
    comm: object = None  # numbagrad's own duplicate of COMM_WORLD (collectives)
    notices: object = None  # another duplicate: failure notices only
    timeout: float = DEFAULT_TIMEOUT_S
    noticed: int = 0  # notices received so far
    failing: bool = False


_WORLD = _World()


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec, srun with PMI) started this process."""
    return any(name in os.environ for name in LAUNCHER_ENV)


def initialized() -> bool:
    return _WORLD.comm is not None


def init(require: bool = False, timeout: float | None = None) -> int:
    """Join the job (once; later calls only change ``timeout``); returns its size. Without
    mpi4py the world is this process alone, unless ``require`` or a launcher says otherwise
    (then ``DistributedError``)."""
    if timeout is not None:
        _WORLD.timeout = float(timeout)
    elif TIMEOUT_ENV in os.environ and not initialized():
        _WORLD.timeout = float(os.environ[TIMEOUT_ENV])
    if initialized():
        return world_size()
    try:
        from mpi4py import MPI
    except ImportError:
        if require or launched_by_mpi():
            raise DistributedError(f"data-parallel training needs MPI: {INSTALL_HINT}") from None
        return 1
    _WORLD.mpi = MPI
    _WORLD.comm = MPI.COMM_WORLD.Dup()
    _WORLD.notices = MPI.COMM_WORLD.Dup()
    if _WORLD.comm.Get_size() > 1:
        _install_excepthook()
    return world_size()


def rank() -> int:
    return _WORLD.comm.Get_rank() if initialized() else 0


def world_size() -> int:
    return _WORLD.comm.Get_size() if initialized() else 1


def local_size() -> int:
    """How many processes of the job run on this machine."""
    if world_size() == 1:
        return 1
    shared = _WORLD.comm.Split_type(_WORLD.mpi.COMM_TYPE_SHARED)
    try:
        return shared.Get_size()
    finally:
        shared.Free()


# --- waiting, and failing without a hang ---------------------------------------------------


def wait(request, what: str) -> None:
    """Wait for a non-blocking collective; raise ``DistributedError`` when another process
    reports a failure or nothing completes within the timeout."""
    start = time.monotonic()
    while not request.Test():
        elapsed = time.monotonic() - start
        if elapsed < SPIN_S:
            continue
        _raise_on_notice(what)
        if elapsed > _WORLD.timeout:
            raise DistributedError(
                f"rank {rank()} waited {elapsed:.0f} s for {what} without every process "
                f"taking part: one stopped or is stuck (raise {TIMEOUT_ENV} if it is slow)"
            )
        time.sleep(NAP_S)


def _raise_on_notice(what: str) -> None:
    status = _WORLD.mpi.Status()
    if not _WORLD.notices.Iprobe(_WORLD.mpi.ANY_SOURCE, 0, status):
        return
    reason = _receive_notice(status.Get_source())
    raise DistributedError(
        f"rank {status.Get_source()} stopped ({reason}), so rank {rank()} stops in {what}"
    )


def _receive_notice(source: int) -> str:
    buffer = bytearray(NOTICE_BYTES)
    _WORLD.notices.Recv(buffer, source, 0)
    _WORLD.noticed += 1
    return buffer.rstrip(b"\0").decode(errors="replace")


def abort(reason: str, code: int = 1) -> None:
    """End the whole job: tell every other process ``reason`` (they raise it where they
    wait), give them ``NOTICE_GRACE_S`` to answer with theirs, then ``MPI_Abort``. Does
    nothing in a world of one."""
    if world_size() == 1:
        return
    _WORLD.failing = True
    me, notices = rank(), _WORLD.notices
    message = " ".join(reason.split()).encode()[: NOTICE_BYTES - 1]
    payload = bytearray(message.ljust(NOTICE_BYTES, b"\0"))
    requests = [notices.Issend(payload, r, 0) for r in range(world_size()) if r != me]
    deadline = time.monotonic() + NOTICE_GRACE_S
    status = _WORLD.mpi.Status()
    while _WORLD.noticed < world_size() - 1 and time.monotonic() < deadline:
        if notices.Iprobe(_WORLD.mpi.ANY_SOURCE, 0, status):
            _receive_notice(status.Get_source())
        else:
            time.sleep(1e-3)
    del requests  # the job ends: whether they were delivered no longer matters
    sys.stderr.flush()
    _WORLD.comm.Abort(code)


def _install_excepthook() -> None:
    """An uncaught exception on one process ends the job (mpi4py's own default would leave
    the others waiting in their next collective for ever)."""
    previous = sys.excepthook

    def hook(kind, error, tb) -> None:
        if isinstance(error, NumbagradError):
            print(f"numbagrad: rank {rank()}: error: {error}", file=sys.stderr)
        else:
            previous(kind, error, tb)
        abort(f"{kind.__name__}: {error}" if str(error) else kind.__name__)

    sys.excepthook = hook


# --- collectives -------------------------------------------------------------------------------


def allreduce_sum(buffer, what: str) -> None:
    """Sum ``buffer`` (a contiguous host array, or a device array on a CUDA-aware MPI)
    element by element over every process, in place."""
    if world_size() > 1:
        mpi = _WORLD.mpi
        wait(_WORLD.comm.Iallreduce(mpi.IN_PLACE, buffer, op=mpi.SUM), what)


def broadcast(array: np.ndarray, root: int, what: str) -> None:
    """Overwrite ``array`` (contiguous) on every process with rank ``root``'s."""
    if world_size() > 1:
        wait(_WORLD.comm.Ibcast(array, root), what)


def barrier(what: str = "a barrier") -> None:
    """Wait until every process has come here."""
    if world_size() > 1:
        wait(_WORLD.comm.Ibarrier(), what)


def allgather_text(text: str, what: str, size: int = NOTICE_BYTES) -> list[str]:
    """Every process's ``text`` (at most ``size`` bytes of it), in rank order."""
    if world_size() == 1:
        return [text]
    mine = np.zeros(size, dtype=np.uint8)
    encoded = text.encode()[:size]
    mine[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    everyone = np.zeros((world_size(), size), dtype=np.uint8)
    wait(_WORLD.comm.Iallgather(mine, everyone), what)
    return [row.tobytes().rstrip(b"\0").decode(errors="replace") for row in everyone]


# --- the host lowering of allreduce (cpu and interp backends) ---------------------------------


def pack(inputs, out) -> None:
    """The operands raveled one after another into the flat ``out``."""
    start = 0
    for x in inputs:
        out[start : start + x.size] = x.reshape(-1)
        start += x.size


def host_allreduce_launch(node):
    """An ``allreduce`` node on host arrays: pack the operands into its output (its bucket
    in the arena), one MPI Allreduce on it, then the average's scale."""
    average, what = node.attrs["average"], f"the allreduce of {node.name or 'a bucket'}"

    def launch(inputs, out) -> None:
        pack(inputs, out)
        allreduce_sum(out, what)
        if average and world_size() > 1:
            np.multiply(out, out.dtype.type(1.0 / world_size()), out=out)

    init()  # an allreduce node joins the job (a loaded step, a graph compiled by hand)
    launch.impl = "mpi"
    return launch
