"""Fuzzing numbagrad.load (seeded, deterministic). Saved files — an MLP; a small conv net with
max-pool, a fused elementwise group and epilogue nodes, memory-planned; an Adam training
step — are mutated field by field (each JSON value replaced by other types, out-of-range,
negative and huge numbers, strings of code; keys deleted and renamed), array by array (shape,
dtype, values, missing, pickled) and truncated at every 1/50th of the file.

- As saved (the digest as it was, a corrupted file): ``load`` raises ``SavedModelError``, or
  loads a model that computes exactly what the original does.
- As a hostile author writes them (the digest computed again): ``load`` raises
  ``SavedModelError``, or loads a model whose run raises nothing but numbagrad errors.

Never any other exception, never code run (a payload would create a marker file), never a file
written outside the kernel caches (the working directory and HOME are listed before and
after). Most runs use the ``interp`` backend (no compiling); a few go through ``cpu``'s code
generation."""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from _tamper import X_CONV, X_MLP, ConvNet, inputs, mlp, read, save_model, save_training, write

import numbagrad as ng
from numbagrad.backends.kernel_cache import cache_dir
from numbagrad.errors import NumbagradError, SavedModelError

SEED = 11
REPLACEMENTS_PER_PATH = 3


def _json_paths(value, path=()):
    """Every path into a JSON tree (the root and containers included), depth first."""
    yield path
    if isinstance(value, (dict, list)):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in list(children):
            yield from _json_paths(child, (*path, key))


def _code(marker: Path) -> list[str]:
    return [
        f"__import__('os').system('touch {marker}')",
        f"0\nimport os\nos.system('touch {marker}')\n#",
        f"{{0}}) or open('{marker}', 'w') or (1",
        "touch ran",
    ]


def _replacements(value, marker: Path) -> list:
    """Other values for a JSON value: every type, edge numbers, code, and near misses."""
    out = [None, True, 0, -1, 2**31, 2**63, -(2**63), 10**30, 0.5, -1e308, float("nan")]
    out += [float("inf"), "", "float32", *_code(marker), [], [0], [[1, 2]], {}, {"a": 1}]
    if type(value) is int:
        out += [value + 1, value - 1, -value, value * 1000]
    if type(value) is float:
        out += [value * 2, -value]
    if isinstance(value, list) and value:
        out += [value[:-1], value + value[-1:], value[::-1], [value]]
    if isinstance(value, str):
        out += [value + "x", value.upper()]
    return out


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _json_mutations(meta: dict, marker: Path, rng: random.Random, n_paths: int | None):
    """(description, edit(meta)) pairs: per path, a few replacements, and its deletion."""
    paths = list(_json_paths(meta))
    if n_paths is not None and n_paths < len(paths):
        paths = [()] + rng.sample(paths[1:], n_paths)
    for path in paths:
        value = _get(meta, path)
        chosen = rng.sample(_replacements(value, marker), REPLACEMENTS_PER_PATH)
        for new in chosen:
            yield f"{path} = {new!r}"[:200], _replace(path, new)
        if path:
            yield f"del {path}", _delete(path)
            if isinstance(path[-1], str):
                yield f"rename {path}", _rename(path)


def _replace(path, new):
    def edit(meta):
        if not path:
            return new
        _get(meta, path[:-1])[path[-1]] = new
        return meta

    return edit


def _delete(path):
    def edit(meta):
        del _get(meta, path[:-1])[path[-1]]
        return meta

    return edit


def _rename(path):
    def edit(meta):
        parent = _get(meta, path[:-1])
        parent[path[-1] + "x"] = parent.pop(path[-1])
        return meta

    return edit


def _array_mutations(arrays: dict[str, np.ndarray]):
    """(description, edit(arrays)) pairs: each array reshaped, retyped, refilled, removed,
    renamed or pickled, and one added."""
    edits = {
        "flat": lambda a: a.reshape(-1),
        "extra axis": lambda a: a[None],
        "float64": lambda a: a.astype(np.float64),
        "int64": lambda a: a.astype(np.int64),
        "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
        "bool": lambda a: a.astype(bool),
        "nan": lambda a: np.full_like(a, np.nan) if a.dtype.kind == "f" else a + 1,
        "huge": lambda a: np.full_like(a, 1e30) if a.dtype.kind == "f" else a * 2**40,
        "object": lambda a: np.array([None], dtype=object),
    }
    for key in sorted(arrays):
        for label, fn in edits.items():
            yield f"array {key}: {label}", _set_array(key, fn)
        yield f"array {key}: removed", lambda arrs, k=key: arrs.pop(k)
        yield f"array {key}: renamed", lambda arrs, k=key: arrs.__setitem__(k + "x", arrs.pop(k))
    yield "array added", lambda arrs: arrs.__setitem__("bound999", np.zeros(3, np.float32))


def _set_array(key, fn):
    return lambda arrays: arrays.__setitem__(key, fn(arrays[key]))


# --- running what loads -----------------------------------------------------------------------


class Case:
    """A saved file, how to run what loads from it, and what the original computes."""

    def __init__(self, path: Path, args: tuple, backend: str) -> None:
        self.path, self.args, self.backend = path, args, backend
        self.meta, self.arrays = read(path)

    @functools.cached_property
    def expected(self) -> list[np.ndarray]:
        return self.run(ng.load(self.path, backend=self.backend))

    def run(self, loaded) -> list[np.ndarray]:
        with np.errstate(all="ignore"):  # a hostile model may compute NaN: allowed
            out = loaded(*self.args)
            if isinstance(loaded, ng.aot.LoadedTrainingStep):
                out = [np.array(out), *loaded.state_dict().values(), loaded(*self.args)]
        return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def _check(case: Case, path: Path, hostile: bool, what: str, failures: list[str]) -> None:
    """Load ``path`` and run it; append to ``failures`` whatever breaks the rules."""
    try:
        loaded = ng.load(path, backend=case.backend)
    except SavedModelError as e:
        if "\n" in str(e):
            failures.append(f"{what}: a message of several lines: {e!r}")
        return
    except Exception as e:  # noqa: BLE001 - the point of the test
        failures.append(f"{what}: load raised {type(e).__name__}: {e}")
        return
    try:
        outputs = case.run(loaded)
    except NumbagradError:
        return
    except Exception as e:  # noqa: BLE001
        failures.append(f"{what}: the loaded model raised {type(e).__name__}: {e}")
        return
    same = len(outputs) == len(case.expected) and all(
        o.shape == e.shape and np.array_equal(o, e) for o, e in zip(outputs, case.expected)
    )
    if not hostile and not same:
        failures.append(f"{what}: a corrupted file loaded and computed something else")


def _listing(*roots: Path) -> set[str]:
    caches = [cache_dir().resolve()]
    if os.environ.get("NUMBA_CACHE_DIR"):
        caches.append(Path(os.environ["NUMBA_CACHE_DIR"]).resolve())
    files = set()
    for root in roots:
        for p in root.rglob("*"):
            if not any(p.resolve().is_relative_to(c) for c in caches):
                files.add(str(p))
    return files


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh working directory and HOME; the marker a payload would create."""
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    before = _listing(cwd, home)
    marker = cwd / "ran"
    yield tmp_path / "work", marker
    assert not marker.exists(), "a payload in a saved file ran"
    assert _listing(cwd, home) == before, "loading wrote files outside the caches"


def _fuzz(case: Case, work: Path, marker: Path, n_paths: int | None, seed: int) -> list[str]:
    work.mkdir(exist_ok=True)
    failures: list[str] = []
    rng = random.Random(seed)
    data = case.path.read_bytes()
    for k in range(50):
        cut = work / "cut.npz"
        cut.write_bytes(data[: k * len(data) // 50])
        _check(case, cut, False, f"truncated to {k}/50", failures)
    for hostile in (False, True):
        for what, edit in _json_mutations(case.meta, marker, rng, n_paths):
            meta = edit(json.loads(json.dumps(case.meta)))
            path = write(work / "m.npz", meta, dict(case.arrays), hostile)
            _check(case, path, hostile, f"{'hostile' if hostile else 'as saved'}: {what}", failures)
        for what, edit in _array_mutations(case.arrays):
            arrays = dict(case.arrays)
            edit(arrays)
            path = write(work / "a.npz", case.meta, arrays, hostile)
            _check(case, path, hostile, f"{'hostile' if hostile else 'as saved'}: {what}", failures)
    return failures


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    step, batch = save_training("interp", d / "step.npz")
    return {
        "mlp": Case(save_model(mlp(), X_MLP, "interp", d / "mlp.npz"), (inputs(X_MLP),), "interp"),
        "conv": Case(
            save_model(ConvNet(), X_CONV, "interp", d / "conv.npz"), (inputs(X_CONV),), "interp"
        ),
        "step": Case(step, batch, "interp"),
    }


# Every path of the inference files; a sample of the training step's (it has ~1100).
PATHS = {"mlp": None, "conv": None, "step": 120}


@pytest.mark.parametrize("name", PATHS)
def test_fuzzed_files_load_safely_or_are_refused(saved, sandbox, name):
    work, marker = sandbox
    failures = _fuzz(saved[name], work, marker, PATHS[name], SEED)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:25])


def test_fuzzed_attributes_refused_before_cpu_code_generation(saved, sandbox):
    """Code in the attributes of the conv net, loaded on cpu (where kernels are generated
    from attributes): refused, nothing run."""
    work, marker = sandbox
    work.mkdir()
    case = Case(saved["conv"].path, saved["conv"].args, "cpu")
    attr_paths = [
        p for p in _json_paths(case.meta) if "attrs" in p and len(p) > p.index("attrs") + 1
    ]
    rng = random.Random(SEED)
    failures: list[str] = []
    for path in rng.sample(attr_paths, 12):
        new = rng.choice(_code(marker))
        meta = _replace(path, new)(json.loads(json.dumps(case.meta)))
        _check(case, write(work / "m.npz", meta, case.arrays, True), True, f"{path}", failures)
    assert not failures, "\n".join(failures)
