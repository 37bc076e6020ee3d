"""Generated kernels as .py files in the cache directory, shared by the cpu and cuda backends:
the file name hashes the source (and a version salt), so equal kernels share one file, and
Numba's on-disk cache (``cache=True``, see ``numba_cache``) lets a second process load them
without compiling.

The code always comes from the source string numbagrad generated, never from the file: the file
gives Numba's cache a source to stamp, and tracebacks their lines. A file that does not hold the
source its name stands for is rewritten (with a ``CacheWarning``); a directory that cannot be
written means compiling in memory (one ``CacheWarning`` per directory and process)."""

from __future__ import annotations

import hashlib
import linecache
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from ..errors import CacheWarning


def cache_dir() -> Path:
    """``$NUMBAGRAD_CACHE_DIR``, default ``~/.cache/numbagrad``."""
    return Path(os.environ.get("NUMBAGRAD_CACHE_DIR", "~/.cache/numbagrad")).expanduser()


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, for a warning."""
    return " ".join(f"{type(error).__name__}: {error}".split())


_unwritable: set[Path] = set()


def warn_unwritable(directory: Path, error: BaseException) -> None:
    """Say once per process that kernels compile in memory because ``directory`` (or one
    containing it that was already reported) cannot be written."""
    directory = Path(os.path.abspath(directory))
    if any(d == directory or d in directory.parents for d in _unwritable):
        return
    _unwritable.add(directory)
    warnings.warn(
        f"numbagrad cannot write its kernel cache directory {directory} ({one_line(error)}), so "
        "kernels compile in memory in this process; set NUMBAGRAD_CACHE_DIR and NUMBA_CACHE_DIR "
        "to a writable directory to keep them",
        CacheWarning,
        stacklevel=3,
    )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stored(path: Path, source: str) -> bool:
    """Whether ``path`` holds ``source`` now: written if missing, rewritten if it holds
    anything else; False (after a warning) when it cannot be written."""
    try:
        found = path.read_bytes()
    except FileNotFoundError:
        found = None
    except OSError:
        found = b""  # unreadable: rewritten like a damaged file
    if found == source.encode():
        return True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, source)
    except OSError as e:
        warn_unwritable(cache_dir(), e)
        return False
    if found is not None:
        warnings.warn(
            f"the generated kernel file {path} did not hold the source its name stands for "
            "(damaged or edited); numbagrad rewrote it",
            CacheWarning,
            stacklevel=4,
        )
    return True


def load_generated(
    source: str,
    func_name: str,
    salt: str,
    loaded: dict[str, Callable],
    folder: str,
    package: str,
    register: bool,
) -> Callable:
    """``func_name`` from ``source`` run as module ``<package>.k_<hash>``, with the file
    ``<cache_dir>/<folder>/k_<hash>.py`` as its ``__file__`` (or ``<package.k_hash>``, in
    memory only, when that cannot be written); ``loaded`` memoizes by hash. ``register`` puts
    the module in ``sys.modules``."""
    key = hashlib.sha256(f"{salt}\n{source}".encode()).hexdigest()[:20]
    if key in loaded:
        return loaded[key]
    name = f"{package}.k_{key}"
    path = cache_dir() / folder / f"k_{key}.py"
    module = ModuleType(name)
    if _stored(path, source):
        filename = module.__file__ = str(path)
    else:  # in memory only: linecache keeps its lines for tracebacks
        filename = f"<{name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    if register:
        sys.modules[name] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    loaded[key] = getattr(module, func_name)
    return loaded[key]
