"""Kernel caches that heal: a damaged entry (numbagrad's generated .py file, Numba's .nbi index or
.nbc data, of a generated and of a hand-written kernel) is replaced with one CacheWarning, and an
unwritable cache directory means compiling in memory with one CacheWarning, writing nowhere else.

Each scenario runs a tiny compiled model in a fresh process with its own cache directories (and
HOME) under tmp_path, so the on-disk caches are really read."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import numbagrad

PACKAGE = Path(numbagrad.__file__).parent

W = [[1.0, -2.0, 0.5], [0.25, 1.0, -1.0]]
B = [0.5, -1.0]
X = (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.0) / 4.0
EXPECTED = np.maximum(X @ np.array(W, np.float32).T + np.array(B, np.float32), 0.0) * 2.0

# Prints the model's output, the CacheWarnings (import included) and the numbagrad kernels that
# were compiled rather than loaded from Numba's cache.
_SCRIPT = f"""
import json, sys, warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numbagrad as ng
    from numbagrad import functional as F, nn
    from numbagrad.errors import CacheWarning
    from numba.core.registry import CPUDispatcher

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return F.relu(self.fc(x)) * 2.0

    net = Net()
    net.load_state_dict({{"fc.weight": np.array({W}, np.float32),
                          "fc.bias": np.array({B}, np.float32)}})
    out = ng.compile(net, ng.Spec((2, 3)))(np.array({X.tolist()}, np.float32))
compiled = sorted({{
    f"{{fn.py_func.__module__}}.{{fn.py_func.__qualname__}}"
    for name, module in list(sys.modules.items())
    if name.partition(".")[0] in ("numbagrad", "numbagrad_generated")
    for fn in vars(module).values()
    if isinstance(fn, CPUDispatcher) and sum(fn.stats.cache_misses.values())
}})
print(json.dumps({{
    "out": out.tolist(),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, CacheWarning)],
    "compiled": compiled,
}}))
"""

MATMUL = "numbagrad.backends.cpu.kernels.linalg.matmul"


def _run(tmp: Path, numbagrad_dir: Path, numba_dir: Path | None = None) -> dict:
    """Run the model in a fresh process; HOME and the working directory are empty folders of
    ``tmp`` (kept for the caller to check). Numba's cache defaults to ``numbagrad_dir/numba``."""
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "work").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.endswith("CACHE_DIR")}
    env.pop("XDG_CACHE_HOME", None)  # Numba's user-wide fallback would follow it
    env.update(HOME=str(tmp / "home"), NUMBAGRAD_CACHE_DIR=str(numbagrad_dir))
    if numba_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_dir)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=tmp / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["out"], EXPECTED, rtol=1e-6)
    return result


def _one(cache: Path, pattern: str) -> Path:
    (path,) = cache.rglob(pattern)
    return path


def _entries(cache: Path) -> dict[str, Path]:
    """The files of the warm cache (NUMBA_CACHE_DIR unset: Numba's under ``cache/numba``)."""
    return {
        "source": _one(cache / "kernels", "k_*.py"),
        "generated .nbi": _one(cache / "numba", "k_*.nbi"),
        "generated .nbc": _one(cache / "numba", "k_*.nbc"),
        "hand-written .nbi": _one(cache / "numba", "linalg.matmul-*.nbi"),
        "hand-written .nbc": _one(cache / "numba", "linalg.matmul-*.nbc"),
    }


def _numba_files(root: Path) -> set[Path]:
    return set(root.rglob("*.nbi")) | set(root.rglob("*.nbc"))


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, str]:
    """A pristine copy of a cache filled by one process (and checked to be read whole by a
    second), and the name of the generated kernel."""
    tmp = tmp_path_factory.mktemp("warm")
    first = _run(tmp, tmp / "cache")
    assert first["warnings"] == []
    assert MATMUL in first["compiled"]
    (generated,) = [name for name in first["compiled"] if name.startswith("numbagrad_generated")]
    assert generated.startswith(_entries(tmp / "cache")["source"].stem, len("numbagrad_generated."))
    second = _run(tmp, tmp / "cache")
    assert second == {**first, "compiled": []}  # every kernel came from the cache
    assert not any((tmp / "home").iterdir()) and not any((tmp / "work").iterdir())
    shutil.copytree(tmp / "cache", tmp / "pristine")
    return tmp / "pristine", generated


def _restored(pristine: Path) -> Path:
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

# Damaged together: a damaged index hides its data file, and numbagrad's rewritten source file
# leaves its Numba entries usable (their stamp is its content), so each run sees each of these.
GROUPS = {
    "source, generated .nbc, hand-written .nbi": (
        "source",
        "generated .nbc",
        "hand-written .nbi",
    ),
    "generated .nbi, hand-written .nbc": ("generated .nbi", "hand-written .nbc"),
}


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_replaced_with_one_warning(warm, tmp_path, damage, group):
    pristine, generated = warm
    cache = _restored(pristine)
    entries = _entries(cache)
    good = {name: entries[name].read_bytes() for name in GROUPS[group]}
    for name in GROUPS[group]:
        entries[name].write_bytes(DAMAGE[damage](name, good[name]))

    healed = _run(tmp_path, cache)

    said = " | ".join(healed["warnings"])
    assert len(healed["warnings"]) == len(GROUPS[group]), said
    assert f"Numba's cache entry for {MATMUL} " in said
    assert f"Numba's cache entry for {generated} " in said
    if "source" in good:
        assert f"generated kernel file {entries['source']} " in said
        assert entries["source"].read_bytes() == good["source"]
    assert healed["compiled"] == sorted([MATMUL, generated])
    again = _run(tmp_path, cache)  # the entries written instead are sound
    assert again["warnings"] == [] and again["compiled"] == []


def _unwritable(tmp: Path, how: str) -> Path:
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


@pytest.mark.parametrize("how", ["below a file", "chmod 555"])
@pytest.mark.parametrize("which", ["NUMBAGRAD_CACHE_DIR", "NUMBA_CACHE_DIR", "both set"])
def test_an_unwritable_cache_compiles_in_memory_with_one_warning(tmp_path, how, which):
    bad = _unwritable(tmp_path, how)
    good = tmp_path / "writable"
    before = _numba_files(PACKAGE / "backends")
    numbagrad_dir, numba_dir = {
        "NUMBAGRAD_CACHE_DIR": (bad, None),  # Numba's entries would go below it too
        "NUMBA_CACHE_DIR": (good, bad),
        "both set": (bad, good),  # NUMBAGRAD_CACHE_DIR unwritable, NUMBA_CACHE_DIR not
    }[which]
    try:
        result = _run(tmp_path, numbagrad_dir, numba_dir)
    finally:
        if how == "chmod 555":
            bad.parent.chmod(0o755)

    (warning,) = result["warnings"]
    assert f"cannot write its kernel cache directory {bad} " in warning
    assert not any((tmp_path / "home").iterdir())  # no ~/.cache/numba
    assert not any((tmp_path / "work").iterdir())
    assert _numba_files(PACKAGE / "backends") == before  # no __pycache__ beside the kernels
    assert not bad.exists()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    expected = {Path("file")} if how == "below a file" else set()
    if which == "NUMBA_CACHE_DIR":  # the generated source, but no Numba entry
        expected |= {_one(good, "k_*.py").relative_to(tmp_path)}
    if which == "both set":  # the hand-written kernels' Numba entries, no generated one
        hand_written = set(good.rglob("linalg.*"))
        assert hand_written and not any(good.rglob("k_*"))
        expected |= {p.relative_to(tmp_path) for p in hand_written}
    assert written == expected


def test_only_numbagrads_own_functions_get_its_cache(tmp_path, monkeypatch):
    import importlib.util

    from numba import config, njit
    from numba.core.caching import FunctionCache

    from numbagrad.backends.cpu.kernels import linalg
    from numbagrad.backends.numba_cache import KernelCache

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "numba"))
    (tmp_path / "users_module.py").write_text("def f(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("users_module", tmp_path / "users_module.py")
    users_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(users_module)
    assert type(njit(cache=True)(users_module.f)._cache) is FunctionCache  # Numba's, untouched
    assert type(linalg.matmul._cache) is KernelCache
