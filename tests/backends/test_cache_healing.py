"""Kernel caches that heal: a damaged entry (numbagrad's generated .py file, Numba's .nbi index or
.nbc data, of a generated and of a hand-written kernel) is replaced with one CacheWarning, and an
unwritable cache directory means compiling in memory with one CacheWarning, writing nowhere else.

Each scenario runs a tiny compiled model in a fresh process with its own cache directories (and
HOME) under tmp_path, so the on-disk caches are really read."""

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

MATMUL = "numbagrad.backends.cpu.kernels.blas.gemm"


def _run(tmp: Path, numbagrad_dir: Path, numba_dir: Path | None = None) -> dict:
    """Run the model in a fresh process (``run_script``) and check its output."""
    result = run_script(_SCRIPT, tmp, numbagrad_dir, numba_dir)
    np.testing.assert_allclose(result["out"], EXPECTED, rtol=1e-6)
    return result


def _entries(cache: Path) -> dict[str, Path]:
    """The files of the warm cache (NUMBA_CACHE_DIR unset: Numba's under ``cache/numba``)."""
    return {
        "source": one(cache / "kernels", "k_*.py"),
        "generated .nbi": one(cache / "numba", "k_*.nbi"),
        "generated .nbc": one(cache / "numba", "k_*.nbc"),
        "hand-written .nbi": one(cache / "numba", "blas.gemm-*.nbi"),
        "hand-written .nbc": one(cache / "numba", "blas.gemm-*.nbc"),
    }


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
    cache = restored(pristine)
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
    assert not any((tmp_path / "home").iterdir())  # no ~/.cache/numba
    assert not any((tmp_path / "work").iterdir())
    assert numba_files(PACKAGE / "backends") == before  # no __pycache__ beside the kernels
    assert not bad.exists()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    expected = {Path("file")} if how == "below a file" else set()
    if which == "NUMBA_CACHE_DIR":  # the generated source, but no Numba entry
        expected |= {one(good, "k_*.py").relative_to(tmp_path)}
    if which == "both set":  # the hand-written kernels' Numba entries, no generated one
        hand_written = set(good.rglob("blas.*")) | set(good.rglob("packed_gemm.*"))
        assert hand_written and not any(good.rglob("k_*"))
        expected |= {p.relative_to(tmp_path) for p in hand_written}
    assert written == expected


def test_only_numbagrads_own_functions_get_its_cache(tmp_path, monkeypatch):
    import importlib.util

    from numba import cfunc, config, njit, types
    from numba.core.caching import FunctionCache

    from numbagrad.backends.cpu.kernels import blas, packed_gemm
    from numbagrad.backends.numba_cache import KernelCache

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "numba"))
    (tmp_path / "users_module.py").write_text("def f(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("users_module", tmp_path / "users_module.py")
    users_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(users_module)
    assert type(njit(cache=True)(users_module.f)._cache) is FunctionCache  # Numba's, untouched
    assert type(blas.gemm._cache) is KernelCache
    # C callbacks likewise (the packed GEMM's, which gemm calls by symbol)
    assert type(cfunc("int64(int64)", cache=True)(users_module.f)._cache) is FunctionCache
    callback = cfunc(packed_gemm._signature(types.CPointer(types.float32)), cache=True)
    assert type(callback(packed_gemm._packed_sgemm)._cache) is KernelCache


def test_hand_written_kernels_entries_move_when_any_backend_source_changes(tmp_path):
    """A cached kernel holds the code of the kernels it calls from other files, which Numba's
    per-file stamp does not cover: the entries sit in a folder named by a digest of every
    backends/ source file (and of the BLAS loaded), so an edit anywhere there starts a fresh
    folder."""
    from numbagrad.backends.cpu.kernels import blas, linalg
    from numbagrad.backends.numba_cache import kernels_digest, sources_digest

    for cached in (blas.gemm, linalg._gemm_each):
        assert cached._cache.cache_path.endswith(f"_{kernels_digest()}")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = sources_digest(tmp_path)
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    sources_digest.cache_clear()
    assert sources_digest(tmp_path) != before


def test_hand_written_kernels_entries_move_with_the_blas_loaded():
    """gemm's code depends on the BLAS's kernel set (it may call the packed GEMM by a symbol
    registered only beside some): another BLAS, another folder."""
    from numbagrad.backends.numba_cache import folder_digest

    haswell = folder_digest("sources", [("openblas", "Haswell")])
    assert haswell == folder_digest("sources", [("openblas", "Haswell")])
    assert haswell != folder_digest("sources", [("openblas", "SkylakeX")])
    assert haswell != folder_digest("sources", [("mkl", None)])
    assert haswell != folder_digest("other sources", [("openblas", "Haswell")])
