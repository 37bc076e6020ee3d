"""The file a compiled model is saved in: one ``.npz`` archive (no pickle) holding the arrays
and, under ``__numbagrad__``, the metadata as JSON, with a SHA-256 digest of both.

The digest covers the canonical metadata JSON and every array's name, dtype, shape and bytes:
a file corrupted on disk or in transfer, or edited by hand, no longer matches it and is refused.
It is not a signature: whoever edits a file on purpose can compute the digest again. What
protects ``numbagrad.load`` from a hostile file is that every value read is verified (aot.py,
graph/serialize.py) and that nothing read becomes code.

Reading refuses, each in one sentence (``SavedModelError``): a missing, unreadable, empty or
truncated file, a directory, a file that is not an .npz archive, pickled or unreadable arrays,
metadata that is not a JSON object, another format version, and a digest mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SavedModelError

FORMAT = "numbagrad compiled model"
VERSION = 2  # 2: content digest; derived attributes not stored; memory plans recomputed
META = "__numbagrad__"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_JSON_DEPTH = 32


def write(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``meta`` (as JSON, with the format, version and digest) to
    ``path``, replacing any file there atomically."""
    from . import __version__

    meta = {"format": FORMAT, "version": VERSION, "numbagrad": __version__, **meta}
    meta["digest"] = digest(meta, arrays)
    arrays = {**arrays, META: np.array(json.dumps(meta))}
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; a saved model is not
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def digest(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """``sha256:<hex>`` of ``meta`` (without its ``digest``, as canonical JSON) and of every
    array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    content = {k: v for k, v in meta.items() if k != "digest"}
    h.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return f"sha256:{h.hexdigest()}"


def read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata (a dict, of this format and version, matching its digest) and the arrays
    of the file at ``path``."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after numpy has read the archive
    except FileNotFoundError:
        raise SavedModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SavedModelError(f"{path} is a directory, not a file") from None
    except PermissionError:
        raise SavedModelError(f"{path} cannot be read: permission denied") from None
    except OSError as e:
        raise SavedModelError(f"{path} cannot be read: {e.strerror or e}") from None
    with f:
        arrays = _arrays(f, path)
    meta = _meta(arrays.pop(META, None), path)
    if meta.get("digest") != digest(meta, arrays):
        raise SavedModelError(
            f"{path} is corrupted: its content does not match the digest saved with it"
        )
    return meta, arrays


def _arrays(f, path: Path) -> dict[str, np.ndarray]:
    head = f.read(len(_ZIP_MAGIC))
    if not head:
        raise SavedModelError(f"{path} is empty, not a model saved by numbagrad")
    if head != _ZIP_MAGIC:
        raise SavedModelError(f"{path} is not a file saved by numbagrad (not an .npz archive)")
    f.seek(0)
    arrays = {}
    try:  # numpy and zipfile raise many types on damaged archives: all mean the same here
        with np.load(f, allow_pickle=False) as npz:
            for name in npz.files:
                arrays[name] = npz[name]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise SavedModelError(
                f"{path} holds a pickled array, which numbagrad never saves and will not load"
            ) from None
        raise SavedModelError(f"{path} is truncated or corrupted ({e})") from None
    except Exception as e:  # noqa: BLE001 - see above
        raise SavedModelError(f"{path} is truncated or corrupted ({type(e).__name__})") from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise SavedModelError(f"{path} holds {name!r}, which is not a NumPy array")
    return arrays


def _meta(array: np.ndarray | None, path: Path) -> dict:
    if array is None or array.shape != () or array.dtype.kind != "U":
        raise SavedModelError(f"{path} is an .npz file, but not a model saved by numbagrad")
    try:
        meta = json.loads(str(array))
    except (ValueError, RecursionError):
        raise SavedModelError(f"{path}: its metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise SavedModelError(f"{path}: its metadata is not a JSON object")
    if _depth(meta) > _MAX_JSON_DEPTH:
        raise SavedModelError(f"{path}: its metadata nests deeper than {_MAX_JSON_DEPTH} levels")
    if meta.get("format") != FORMAT:
        raise SavedModelError(f"{path} is an .npz file, but not a model saved by numbagrad")
    if meta.get("version") != VERSION:
        raise SavedModelError(
            f"{path} was saved in format version {_short(meta.get('version'))} by numbagrad "
            f"{_short(meta.get('numbagrad'))}; this numbagrad reads version {VERSION}: "
            "compile it again"
        )
    return meta


def _depth(value: Any) -> int:
    """How deep JSON containers nest in ``value`` (without recursion: the data decides)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _short(value: Any) -> str:
    """A value from the file in a message: as is when short and plain, else its repr."""
    text = str(value)
    if len(text) <= 40 and text.isprintable():
        return text
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
