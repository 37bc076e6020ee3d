"""CUDA kernel caches that heal, as the CPU backend's do (test_cache_healing.py): numbagrad's
kernels get numba-cuda's cache in numbagrad's one directory, a damaged ``.nbi``/``.nbc`` entry of
a generated and of a hand-written kernel is replaced with one CacheWarning, and an unwritable
cache directory means compiling in memory with one CacheWarning, writing nowhere else.

Each scenario runs a tiny compiled model (a max-pool: a hand-written kernel, then a generated
elementwise one) in a fresh process with its own cache directories (and HOME) under tmp_path.
Without a GPU (CI) the process has numba.cuda's real target with device stand-ins: each launch
compiles its kernel for sm_90 through the kernel's dispatcher, and so through its cache, and runs
nothing (cuda_compile_check.py's stand-ins, plus a code library that is never loaded onto a
device). With NUMBAGRAD_TEST_REAL_GPU=1 the same scenarios run on the GPU, outputs checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cache_scenarios import (
    DAMAGE,
    PACKAGE,
    UNWRITABLE,
    WHICH,
    cache_dirs,
    numba_files,
    one,
    restored,
    run_script,
    unwritable,
)
from cuda_setup import REAL_GPU

pytest.importorskip("numba_cuda")
pytestmark = [pytest.mark.cuda] + ([pytest.mark.gpu] if REAL_GPU else [])

X = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4) - 16.0
EXPECTED = np.maximum(X.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)), 0.0) * 2.0

# Prints the model's output, the CacheWarnings, the numbagrad kernels compiled and those loaded
# from the cache, and each one's cache (class, path).
_SCRIPT = f"""
import json, sys, warnings
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numbagrad as ng
    from numbagrad import functional as F, nn
    from numbagrad.errors import CacheWarning
    if not {REAL_GPU}:
        from cache_scenarios import compile_without_gpu

        problem = compile_without_gpu()
        if problem:
            print(json.dumps({{"cannot compile": problem}}))
            sys.exit()
    from numba.cuda.dispatcher import CUDADispatcher
    from numbagrad.backends.cuda import cache

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return F.relu(self.pool(x)) * 2.0

    x = np.array({X.tolist()}, np.float32)
    out = ng.compile(Net(), ng.Spec({X.shape}), backend="cuda")(x)
modules = [m for name, m in list(sys.modules.items()) if name.partition(".")[0] == "numbagrad"]
kernels = {{
    f"{{fn.py_func.__module__}}.{{fn.py_func.__qualname__}}": fn
    for fn in [v for m in modules for v in vars(m).values()] + list(cache._loaded.values())
    if isinstance(fn, CUDADispatcher) and (fn.stats.cache_hits or fn.stats.cache_misses)
}}
print(json.dumps({{
    "out": np.asarray(out).tolist(),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, CacheWarning)],
    "compiled": sorted(name for name, fn in kernels.items() if fn.stats.cache_misses),
    "loaded": sorted(name for name, fn in kernels.items() if fn.stats.cache_hits),
    "caches": {{name: [type(fn._cache).__name__, fn._cache.cache_path]
               for name, fn in kernels.items()}},
}}))
"""

POOL = "numbagrad.backends.cuda.pool.max_pool_forward"


def _run(tmp: Path, numbagrad_dir: Path, numba_dir: Path | None = None) -> dict:
    """Run the model in a fresh process (``run_script``); on a GPU, check its output."""
    result = run_script(_SCRIPT, tmp, numbagrad_dir, numba_dir)
    if "cannot compile" in result:
        pytest.skip(f"cannot compile CUDA here: {result['cannot compile']}")
    if REAL_GPU:
        np.testing.assert_allclose(result["out"], EXPECTED, rtol=1e-6)
    return result


def _entries(cache: Path) -> dict[str, Path]:
    """The files of the warm cache (NUMBA_CACHE_DIR unset: Numba's under ``cache/numba``)."""
    return {
        "source": one(cache / "cuda_kernels", "k_*.py"),
        "generated .nbi": one(cache / "numba", "k_*.nbi"),
        "generated .nbc": one(cache / "numba", "k_*.nbc"),
        "hand-written .nbi": one(cache / "numba", "pool.max_pool_forward-*.nbi"),
        "hand-written .nbc": one(cache / "numba", "pool.max_pool_forward-*.nbc"),
    }


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, str]:
    """A pristine copy of a cache filled by one process (and checked to be read whole by a
    second), and the name of the generated kernel."""
    tmp = tmp_path_factory.mktemp("warm")
    before = numba_files(PACKAGE / "backends")
    first = _run(tmp, tmp / "cache")
    assert first["warnings"] == [] and first["loaded"] == []
    (generated,) = [name for name in first["compiled"] if name != POOL]
    assert first["compiled"] == sorted([POOL, generated])
    entries = _entries(tmp / "cache")
    assert generated == f"numbagrad_cuda_generated.{entries['source'].stem}.kernel"
    for name, entry in [(POOL, "hand-written .nbi"), (generated, "generated .nbi")]:
        assert first["caches"][name] == ["CUDAKernelCache", str(entries[entry].parent)]
    second = _run(tmp, tmp / "cache")
    assert second == {**first, "compiled": [], "loaded": first["compiled"]}
    assert not any((tmp / "home").iterdir()) and not any((tmp / "work").iterdir())
    assert numba_files(PACKAGE / "backends") == before  # no __pycache__ beside the kernels
    shutil.copytree(tmp / "cache", tmp / "pristine")
    return tmp / "pristine", generated


# Each kind of damage on one of the groups of test_cache_healing.py (where every pair runs):
# files damaged together, as a damaged index hides its data file.
CASES = {
    "garbage": ("source", "generated .nbc", "hand-written .nbi"),
    "truncated": ("generated .nbi", "hand-written .nbc"),
    "empty": ("generated .nbi", "hand-written .nbc"),
    "wrong content": ("source", "generated .nbc", "hand-written .nbi"),
}


@pytest.mark.parametrize("damage", CASES)
def test_a_damaged_entry_is_replaced_with_one_warning(warm, tmp_path, damage):
    pristine, generated = warm
    cache = restored(pristine)
    entries = _entries(cache)
    good = {name: entries[name].read_bytes() for name in CASES[damage]}
    for name in CASES[damage]:
        entries[name].write_bytes(DAMAGE[damage](name, good[name]))

    healed = _run(tmp_path, cache)

    said = " | ".join(healed["warnings"])
    assert len(healed["warnings"]) == len(CASES[damage]), said
    assert f"Numba's cache entry for {POOL} " in said
    assert f"Numba's cache entry for {generated} " in said
    if "source" in good:
        assert f"generated kernel file {entries['source']} " in said
        assert entries["source"].read_bytes() == good["source"]
    assert healed["compiled"] == sorted([POOL, generated])
    again = _run(tmp_path, cache)  # the entries written instead are sound
    assert again["warnings"] == [] and again["compiled"] == []


@pytest.mark.parametrize("how", UNWRITABLE)
@pytest.mark.parametrize("which", WHICH)
def test_an_unwritable_cache_compiles_in_memory_with_one_warning(tmp_path, how, which):
    bad = unwritable(tmp_path, how)
    good = tmp_path / "writable"
    before = numba_files(PACKAGE / "backends")
    numbagrad_dir, numba_dir = cache_dirs(which, bad, good)
    try:
        result = _run(tmp_path, numbagrad_dir, numba_dir)
    finally:
        if how == "chmod 555":
            bad.parent.chmod(0o755)

    (warning,) = result["warnings"]
    assert f"cannot write its kernel cache directory {bad} " in warning
    (generated,) = [name for name in result["compiled"] if name != POOL]
    assert result["caches"][generated] == ["NullCache", None]  # no source file, or no Numba dir
    pool_cache = result["caches"][POOL]
    if which == "both set":  # NUMBA_CACHE_DIR is writable
        assert pool_cache[0] == "CUDAKernelCache" and Path(pool_cache[1]).parent == good
    else:
        assert pool_cache == ["NullCache", None]
    assert not any((tmp_path / "home").iterdir())  # no ~/.cache/numba
    assert not any((tmp_path / "work").iterdir())
    assert numba_files(PACKAGE / "backends") == before  # no __pycache__ beside the kernels
    assert not bad.exists()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    expected = {Path("file")} if how == "below a file" else set()
    if which == "NUMBA_CACHE_DIR":  # the generated source, but no Numba entry
        expected |= {one(good, "k_*.py").relative_to(tmp_path)}
    if which == "both set":  # the hand-written kernels' Numba entries, no generated one
        # (pool.*; packed_gemm.* where the packed GEMM is compiled at import: OWN_GEMM)
        hand_written = set(good.rglob("pool.*")) | set(good.rglob("packed_gemm.*"))
        assert hand_written and not any(good.rglob("k_*"))
        expected |= {p.relative_to(tmp_path) for p in hand_written}
    assert written == expected


_USERS_SCRIPT = """
import importlib.util, json, sys
from numba import cuda
cuda.is_available = lambda: True  # making dispatchers needs no device
from numbagrad.backends.cuda import pool, runtime
spec = importlib.util.spec_from_file_location("users_module", {path!r})
users_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(users_module)
caches = [
    pool.max_pool_forward._cache,
    runtime.jit(users_module.kernel, cache=True)._cache,  # runtime.jit is numbagrad's own
    runtime.jit(users_module.kernel)._cache,
    cuda.jit(users_module.kernel, cache=True)._cache,
]
print(json.dumps([[type(c).__module__, type(c).__name__, c.cache_path] for c in caches]))
"""


def test_runtime_jit_attaches_numbagrads_cache_and_cuda_jit_keeps_its_own(tmp_path):
    (tmp_path / "users").mkdir()
    users_module = tmp_path / "users" / "users_module.py"
    users_module.write_text("def kernel(x):\n    x[0] = 1\n")
    script = _USERS_SCRIPT.format(path=str(users_module))
    ours, jitted, uncached, numbas = run_script(script, tmp_path, tmp_path / "cache", None)
    numba_dir = tmp_path / "cache" / "numba"
    ours_cls = ["numbagrad.backends.cuda.numba_cache", "CUDAKernelCache"]
    assert ours[:2] == ours_cls and Path(ours[2]).parent == numba_dir
    assert jitted[:2] == ours_cls and Path(jitted[2]).parent == numba_dir
    assert uncached[1:] == ["NullCache", None]
    # numba-cuda's own cache, with its own locators: __pycache__ beside the user's file
    assert numbas == ["numba.cuda.dispatcher", "CUDACache", str(tmp_path / "users" / "__pycache__")]
