"""What the cache-healing tests of both backends share (test_cache_healing.py: CPU,
test_cuda_cache_healing.py: CUDA): a script run in a fresh process with its own cache
directories, HOME and working directory, the ways an entry is damaged, and unwritable paths."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numba
import pytest

import numbagrad

PACKAGE = Path(numbagrad.__file__).parent


def run_script(script: str, tmp: Path, numbagrad_dir: Path, numba_dir: Path | None) -> dict:
    """The JSON that ``script`` prints last, run in a fresh process whose HOME and working
    directory are empty folders of ``tmp`` (kept for the caller to check). Numba's cache
    defaults to ``numbagrad_dir/numba``; numba.cuda is the real target, not the simulator."""
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "work").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.endswith("CACHE_DIR")}
    env.pop("XDG_CACHE_HOME", None)  # Numba's user-wide fallback would follow it
    env.pop(
        "NUMBA_ENABLE_CUDASIM", None
    )  # set by the CUDA test modules; the simulator caches nothing
    env.update(HOME=str(tmp / "home"), NUMBAGRAD_CACHE_DIR=str(numbagrad_dir))
    env["CUDA_CACHE_DISABLE"] = "1"  # on a GPU, the driver's own PTX cache (~/.nv) is not Numba's
    if numba_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_dir)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one(cache: Path, pattern: str) -> Path:
    (path,) = cache.rglob(pattern)
    return path


def numba_files(root: Path) -> set[Path]:
    return set(root.rglob("*.nbi")) | set(root.rglob("*.nbc"))


def restored(pristine: Path) -> Path:
    """The warm cache back in its own place: Numba files a generated kernel's entries under a
    hash of the folder of its source file, so a copy elsewhere would not find them."""
    cache = pristine.parent / "cache"
    shutil.rmtree(cache)
    shutil.copytree(pristine, cache)
    return cache


def _wrong(name: str, good: bytes) -> bytes:
    """Well-formed bytes of the wrong content: another kernel's source, a pickle that is not
    an index or a compiled kernel."""
    if name == "source":
        return good + b"\nedited = True\n"
    if name.endswith(".nbi"):
        return pickle.dumps(numba.__version__) + pickle.dumps({"not": "an index"})
    return pickle.dumps({"not": "a compiled kernel"})


DAMAGE = {
    "garbage": lambda name, good: b"\x80\x04 not a cache entry \xff" * 3,
    "truncated": lambda name, good: good[: len(good) // 2],
    "empty": lambda name, good: b"",
    "wrong content": _wrong,
}


def unwritable(tmp: Path, how: str) -> Path:
    """A cache path that cannot be written: below a regular file (mkdir fails even for root),
    or in a directory without write permission."""
    if how == "below a file":
        (tmp / "file").write_text("not a directory")
        return tmp / "file" / "cache"
    (tmp / "readonly").mkdir()
    (tmp / "readonly").chmod(0o555)
    try:
        (tmp / "readonly" / "probe").mkdir()
    except PermissionError:
        return tmp / "readonly" / "cache"
    pytest.skip(
        "chmod does not keep this user (root) from writing: the below-a-file case covers it"
    )


UNWRITABLE = ["below a file", "chmod 555"]


def cache_dirs(which: str, bad: Path, good: Path) -> tuple[Path, Path | None]:
    """NUMBAGRAD_CACHE_DIR and NUMBA_CACHE_DIR (None: unset) when ``which`` is unwritable."""
    return {
        "NUMBAGRAD_CACHE_DIR": (bad, None),  # Numba's entries would go below it too
        "NUMBA_CACHE_DIR": (good, bad),
        "both set": (bad, good),  # NUMBAGRAD_CACHE_DIR unwritable, NUMBA_CACHE_DIR not
    }[which]


WHICH = ["NUMBAGRAD_CACHE_DIR", "NUMBA_CACHE_DIR", "both set"]


def compile_without_gpu() -> str | None:
    """For a CUDA scenario's process on a machine without a GPU: numba.cuda's real target with
    device stand-ins, where each launch compiles its kernel for sm_90 through the kernel's
    dispatcher (and so through its cache) and runs nothing. Returns why CUDA cannot be compiled
    here, or None once the stand-ins are in place."""
    import cuda_compile_check as check  # first: it keeps numba.cuda from being the simulator
    from numba import cuda, typeof
    from numba.cuda import compile_ptx, dispatcher
    from numba.cuda.cudadrv import devices

    try:
        compile_ptx(lambda a: None, "void(float32[::1])", cc=check.CC)
    except Exception as e:  # no NVVM: the dev extra installs it
        return str(e).strip().splitlines()[0]
    check._stand_in_memory(cuda)
    context = SimpleNamespace(device=SimpleNamespace(compute_capability=check.CC))
    devices.get_context = lambda *args: context  # for the PTX and the cache's index key
    dispatcher._Kernel.bind = lambda self: None  # nothing to load the compiled code onto
    from numbagrad.backends.cuda import runtime

    def compile_only(launch, *args) -> None:
        launch.kernel.compile(tuple(typeof(getattr(a, "host", a)) for a in args))

    runtime.launcher.__call__ = compile_only
    return None
