"""The CUDA backend, op by op, against the NumPy references (the interp backend), under the
CUDA simulator (or on a real GPU with NUMBAGRAD_TEST_REAL_GPU=1). Shapes are tiny: the
simulator runs every GPU thread as a Python thread."""

from __future__ import annotations

import os

import pytest

REAL_GPU = os.environ.get("NUMBAGRAD_TEST_REAL_GPU") == "1"
if not REAL_GPU:
    # Must precede the first import of numba.cuda in this process. It is left set on purpose:
    # numba.cuda stays the simulator for the whole process anyway, and @cuda.jit reads the
    # variable again (via Numba's config reload) each time it compiles; CPU Numba ignores it.
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
pytest.importorskip("numba_cuda")

import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from numbagrad.backends import get_backend, interp  # noqa: E402
from numbagrad.errors import BackendError  # noqa: E402
from numbagrad.graph import Builder  # noqa: E402
from numbagrad.graph import ops as O  # noqa: E402
from numbagrad.graph.ops import all_ops  # noqa: E402

try:
    cuda_backend = get_backend("cuda")
except BackendError as e:  # pragma: no cover - depends on the machine
    pytest.skip(str(e), allow_module_level=True)

from numbagrad.backends.cuda import conv, gemm, lowering  # noqa: E402
from numbagrad.backends.cuda.codegen import reduction_launch  # noqa: E402
from numbagrad.backends.cuda.runtime import flat, load_cuda  # noqa: E402

pytestmark = [pytest.mark.cuda] + ([pytest.mark.gpu] if REAL_GPU else [])
cuda = load_cuda()
X4 = (2, 3, 5, 4)

# (case id, input specs [(shape, kind)], fn building the op from input Values), as in
# test_backend_ops.py; kinds: "f" float, "pos" positive float, "cls<C>" class indices below C.
CASES = [
    ("add_bcast", [((2, 3, 4), "f"), ((3, 1), "f")], lambda a, b: a + b),
    ("sub_scalar", [((5, 4), "f")], lambda a: 1.5 - a),
    ("mul", [((2, 3, 4), "f"), ((4,), "f")], lambda a, b: a * b),
    ("div", [((3, 4), "f"), ((3, 4), "pos")], lambda a, b: a / b),
    ("neg", [((7,), "f")], lambda a: -a),
    ("exp", [((3, 5), "f")], O.exp),
    ("log", [((3, 5), "pos")], O.log),
    ("sqrt", [((3, 5), "pos")], O.sqrt),
    ("abs", [((3, 5), "f")], O.abs),
    ("sign", [((3, 5), "f")], O.sign),
    ("relu", [(X4, "f")], O.relu),
    ("relu_grad", [(X4, "f"), (X4, "f")], O.relu_grad),
    ("tanh", [(X4, "f")], O.tanh),
    ("sigmoid", [(X4, "f")], O.sigmoid),
    ("broadcast_to", [((3, 1), "f")], lambda a: O.broadcast_to(a, (2, 3, 4))),
    ("sum_all", [(X4, "f")], lambda a: O.sum(a)),
    ("sum_023", [(X4, "f")], lambda a: O.sum(a, (0, 2, 3))),
    ("sum_keep", [(X4, "f")], lambda a: O.sum(a, 1, keepdims=True)),
    ("sum_0", [((6, 5), "f")], lambda a: O.sum(a, 0)),
    ("mean_23", [(X4, "f")], lambda a: O.mean(a, (2, 3))),
    ("reshape", [(X4, "f")], lambda a: O.reshape(a, (6, 20))),
    ("transpose", [(X4, "f")], lambda a: O.transpose(a, (0, 2, 3, 1))),
    ("transpose_2d", [((5, 3), "f")], O.transpose),
    ("matmul", [((5, 4), "f"), ((4, 3), "f")], O.matmul),
    ("matmul_tt", [((4, 5), "f"), ((3, 4), "f")], lambda a, b: O.matmul(a, b, True, True)),
    ("matmul_3d", [((2, 5, 4), "f"), ((2, 3, 4), "f")], lambda a, b: O.matmul(a, b, False, True)),
    ("conv2d", [((1, 2, 6, 6), "f"), ((3, 2, 3, 3), "f"), ((3,), "f")], O.conv2d),
    (
        "conv2d_s2_p1_d2",
        [((2, 3, 7, 6), "f"), ((4, 3, 2, 3), "f")],
        lambda x, w: O.conv2d(x, w, stride=2, padding=1, dilation=2),
    ),
    (
        "conv2d_groups",
        [((2, 4, 6, 5), "f"), ((6, 2, 3, 3), "f")],
        lambda x, w: O.conv2d(x, w, padding=(1, 0), groups=2),
    ),
    ("conv2d_1x1", [((2, 3, 4, 4), "f"), ((5, 3, 1, 1), "f"), ((5,), "f")], O.conv2d),
    ("max_pool", [(X4, "f")], lambda x: O.max_pool2d(x, 2)),
    ("max_pool_3s2p1", [(X4, "f")], lambda x: O.max_pool2d(x, 3, 2, 1)),
    ("avg_pool", [(X4, "f")], lambda x: O.avg_pool2d(x, 2)),
    (
        "avg_pool_pad_exclude",
        [(X4, "f")],
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    ),
    ("softmax", [((4, 6), "f")], O.softmax),
    ("softmax_long_rows", [((2, 40), "f")], O.softmax),
    ("softmax_axis1", [(X4, "f")], lambda x: O.softmax(x, 1)),
    ("log_softmax", [((4, 6), "f")], O.log_softmax),
    ("log_softmax_axis0", [((4, 6), "f")], lambda x: O.log_softmax(x, 0)),
    ("softmax_grad", [((4, 6), "f"), ((4, 6), "pos")], O.softmax_grad),
    ("cross_entropy", [((5, 7), "f"), ((5,), "cls7")], O.cross_entropy),
    ("cross_entropy_long_rows", [((2, 40), "f"), ((2,), "cls40")], O.cross_entropy),
    ("mse_loss", [((3, 4), "f"), ((3, 4), "f")], O.mse_loss),
]
# Backward ops through their forward op's VJP, in float64.
GRAD_CASES = {
    "conv2d_grad": ("conv2d_s2_p1_d2", ("conv2d_grad_input", "conv2d_grad_weight")),
    "conv2d_groups_grad": ("conv2d_groups", ("conv2d_grad_input", "conv2d_grad_weight")),
    "conv2d_1x1_grad": ("conv2d_1x1", ("conv2d_grad_input", "conv2d_grad_weight")),
    "max_pool_grad": ("max_pool_3s2p1", ("max_pool2d_grad",)),
    "avg_pool_grad": ("avg_pool_pad_exclude", ("avg_pool2d_grad",)),
    "log_softmax_grad": ("log_softmax", ("log_softmax_grad",)),
    "softmax_grad_long_rows": ("softmax_long_rows", ("softmax_grad",)),
    "cross_entropy_grad": ("cross_entropy", ("cross_entropy_grad",)),
    "matmul_grad": ("matmul_3d", ("matmul",)),
}
_BY_ID = {case[0]: case for case in CASES}


def _array(shape, kind, dtype, rng):
    if kind.startswith("cls"):
        return rng.integers(0, int(kind[3:]), shape).astype(np.int64)
    # Distinct values keep max-pool ties (where any argmax is right) out of the comparison.
    values = rng.permutation(int(np.prod(shape))).reshape(shape) / max(np.prod(shape), 1)
    values = (values - 0.5) * 4 if kind == "f" else values * 2 + 0.5
    return values.astype(dtype)


def _build(case, dtype):
    _, specs, fn = case
    b = Builder()
    leaves = [
        b.leaf(
            "input",
            shape,
            "int64" if kind.startswith("cls") else dtype,
            f"in{i}",
        )
        for i, (shape, kind) in enumerate(specs)
    ]
    return b.build([fn(*leaves)]), leaves


def _feeds(specs, leaves, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {v.id: _array(shape, kind, dtype, rng) for v, (shape, kind) in zip(leaves, specs)}


def _run(graph, feeds, bindings=None):
    exe = cuda_backend.compile(graph, bindings)
    for node_id, array in feeds.items():
        exe.set_input(node_id, array)
    exe.run()
    return [a.copy() for a in exe.output_arrays()], exe


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference(case):
    graph, leaves = _build(case, "float32")
    feeds = _feeds(case[1], leaves, "float32")
    (expected,) = interp.evaluate(graph, feeds)
    (got,), exe = _run(graph, feeds)
    assert exe.impl_counts().get("reference", 0) == 0, "op fell back to its NumPy reference"
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_backward_ops_match_reference(name):
    from numbagrad.engine.autodiff import build_backward

    forward_case, grad_ops = GRAD_CASES[name]
    _, specs, fn = _BY_ID[forward_case]
    b = Builder()
    params = [
        b.leaf("input", s, "int64", f"in{i}")
        if k.startswith("cls")
        else b.leaf("param", s, "float64", f"in{i}")
        for i, (s, k) in enumerate(specs)
    ]
    out = fn(*params)
    r = b.leaf("input", out.shape, out.dtype, "r")  # distinct weights per output element
    fwd = b.build([O.sum(out * r)])
    builder, _, grads = build_backward(fwd)
    bwd = builder.build(list(grads.values()))
    assert {n.op for n in bwd.ops()} >= set(grad_ops)
    feeds = _feeds(specs, params, "float64")
    feeds[r.id] = np.random.default_rng(1).standard_normal(out.shape)
    fwd_exe = interp.compile(fwd)
    for k, v in feeds.items():
        np.copyto(fwd_exe.buffers[k], v)
    fwd_exe.run()
    bfeeds = {}
    for n in bwd.leaves():
        if "saved_from" in n.attrs:
            bfeeds[n.id] = fwd_exe.buffers[n.attrs["saved_from"]]
        elif n.role == "param":
            bfeeds[n.id] = fwd_exe.buffers[fwd.by_name(n.name, role="param").id]
        elif n.role == "input":
            bfeeds[n.id] = np.ones(n.shape)
    expected = interp.evaluate(bwd, bfeeds)
    got, exe = _run(bwd, bfeeds)
    assert exe.impl_counts().get("reference", 0) == 0
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-10)


def test_every_registered_op_has_a_cuda_lowering():
    """The registry x backend table: elementwise ops (fused groups included) go through the
    code generator; reshape aliases its input; everything else needs an entry."""
    missing = {
        name
        for name, op in all_ops().items()
        if name not in lowering.LOWERINGS and op.category != "elementwise" and name != "reshape"
    }
    assert missing == set(), "ops that would run their NumPy reference on the host"
    covered = {n.op for case in CASES for n in _build(case, "float32")[0].ops()}
    covered |= {op for _, ops in GRAD_CASES.values() for op in ops}
    covered.add("fused_elementwise")  # test_fused_elementwise_group
    assert set(all_ops()) - covered == set(), "ops without a cuda test case here"


def test_fused_elementwise_group():
    from numbagrad.graph.passes import fuse_elementwise

    b = Builder()
    x, w, c = (
        b.leaf("input", s, "float32", n) for s, n in [((3, 4), "x"), ((4,), "w"), ((3, 1), "c")]
    )
    graph = fuse_elementwise(b.build([O.tanh(O.relu(x * w + c) - 0.5)]))
    assert [n.op for n in graph.ops()] == ["fused_elementwise"]
    feeds = _feeds([((3, 4), "f"), ((4,), "f"), ((3, 1), "f")], [x, w, c], "float32")
    (expected,) = interp.evaluate(graph, feeds)
    (got,), exe = _run(graph, feeds)
    assert exe.impl_counts() == {"cuda": 1}
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


# --- kernels under each of their plans -----------------------------------------------------


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(a).ravel())


@pytest.mark.parametrize(
    "tile, splits, shapes",
    [
        ("large", 1, ((64, 16), (16, 64))),  # the real 64x64 tile, 4x4 outputs a thread
        ("wide", 1, ((5, 20), (20, 130))),
        ("small", 2, ((17, 40), (40, 18))),  # split K: partial tiles + a second pass
        ("tiny", 3, ((3, 70), (70, 33))),
    ],
)
def test_gemm_tiles_and_split_k(tile, splits, shapes):
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    plan = gemm.matmul_gemm(a.shape, b.shape, False, False, "float32", tile=gemm.TILES[tile])
    assert plan.tile == gemm.TILES[tile]
    split = gemm.matmul_gemm(a.shape, b.shape, False, False, "float32", splits=splits)
    assert split.splits == splits
    for p in (plan, split):
        c = cuda.device_array(a.shape[0] * b.shape[1], np.float32)
        p(_dev(a), _dev(b), c)
        np.testing.assert_allclose(
            c.copy_to_host().reshape(len(a), -1), a @ b, rtol=1e-5, atol=1e-5
        )


def test_conv_weight_gradient_split_over_the_batch():
    attrs = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    g = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w_shape = (3, 2, 3, 3)
    expected = O.get_op("conv2d_grad_weight").reference(x, g, weight_shape=w_shape, **attrs)
    plan = conv.grad_weight_gemm(x.shape, g.shape, w_shape, attrs, "float32", splits=2)
    assert plan.splits == 2
    dw = cuda.device_array(int(np.prod(w_shape)), np.float32)
    plan(_dev(x), _dev(g), dw)
    np.testing.assert_allclose(dw.copy_to_host().reshape(w_shape), expected, rtol=1e-5, atol=1e-5)


def test_reduction_split_into_partial_sums():
    x = np.random.default_rng(4).standard_normal((2, 3000)).astype(np.float32)
    launch = reduction_launch("a0", 1, x.shape, (1,), mean=True)
    out = cuda.device_array(2, np.float32)
    launch([cuda.to_device(x)], out)
    np.testing.assert_allclose(out.copy_to_host(), x.mean(axis=1), rtol=1e-5, atol=1e-6)


# --- the device executable -----------------------------------------------------------------


def _affine_graph():
    b = Builder()
    x = b.leaf("input", (2, 3), "float32", "x")
    w = b.leaf("param", (3, 3), "float32", "w")
    y = O.matmul(x, w)
    return b.build([y], updates=[(w, w * 0.5)]), x, w


def test_bindings_are_uploaded_once_shared_and_synced_on_demand():
    graph, x, w = _affine_graph()
    host_w = np.arange(9, dtype=np.float32).reshape(3, 3)
    first = cuda_backend.compile(graph, {w.id: host_w})
    second = cuda_backend.compile(graph, {w.id: host_w})
    assert first.buffers[w.id] is second.buffers[w.id], "one device copy per host array"
    assert not isinstance(first.buffers[x.id], np.ndarray)  # buffers live on the device
    first.set_input(x.id, np.ones((2, 3)))  # same-kind casting, as np.copyto
    first.run()
    (y,) = first.output_arrays()
    np.testing.assert_allclose(y, np.ones((2, 3)) @ np.arange(9).reshape(3, 3))
    assert host_w[2, 2] == 8, "the host copy is only written by a sync"
    first.sync_bindings_to_host()
    assert host_w[2, 2] == 4
    host_w[...] = 1.0
    first.sync_bindings_to_device()
    np.testing.assert_allclose(second.read(w.id), np.ones((3, 3)))


def test_bad_targets_are_refused_on_the_host_and_nan_on_the_device():
    graph, leaves = _build(_BY_ID["cross_entropy"], "float32")
    logits, targets = leaves
    exe = cuda_backend.compile(graph)
    with pytest.raises(ValueError, match="not a class index"):
        exe.set_input(targets.id, np.array([0, 1, 7, 2, 3]))
    # Targets bound as a device array skip the host check; the kernel must not read past.
    bad = cuda.to_device(np.array([0, 1, 9, 2, 3], dtype=np.int64))
    exe = cuda_backend.compile(graph, {targets.id: bad})
    exe.set_input(logits.id, np.zeros((5, 7), np.float32))
    exe.run()
    assert np.isnan(exe.output_arrays()[0])


def test_an_op_without_lowering_runs_its_reference_on_the_host(monkeypatch):
    monkeypatch.delitem(lowering.LOWERINGS, "transpose")
    case = _BY_ID["transpose"]
    graph, leaves = _build(case, "float32")
    feeds = _feeds(case[1], leaves, "float32")
    (got,), exe = _run(graph, feeds)
    assert exe.impl_counts() == {"reference": 1}
    np.testing.assert_array_equal(got, interp.evaluate(graph, feeds)[0])


def test_generated_kernels_are_files_in_the_cache_dir(tmp_path, monkeypatch):
    from numbagrad.backends.cuda.codegen import elementwise_launch

    monkeypatch.setenv("NUMBAGRAD_CACHE_DIR", str(tmp_path))
    expr = "(a0 * 3.25 - 0.125)"  # a source no other test generates
    launch = elementwise_launch(expr, [(4,)], (4,))
    (path,) = (tmp_path / "cuda_kernels").glob("k_*.py")
    assert expr in path.read_text()
    out = cuda.device_array(4, np.float32)
    launch([cuda.to_device(np.arange(4, dtype=np.float32))], out)
    np.testing.assert_allclose(out.copy_to_host(), np.arange(4) * 3.25 - 0.125)
    assert flat(out).shape == (4,)


@pytest.mark.skipif(REAL_GPU, reason="a real GPU is there")
@pytest.mark.parametrize(
    "setup, message",
    [
        ("os.environ.pop('NUMBA_ENABLE_CUDASIM', None)", "found no usable CUDA GPU"),
        ("sys.modules['numba_cuda'] = None", "needs the numba-cuda package"),
    ],
)
def test_unavailable_backend_fails_at_compile_time_in_one_sentence(setup, message):
    code = (
        f"import os, sys; {setup}\n"
        "import numbagrad\n"  # importing numbagrad never needs CUDA
        "from numbagrad.backends import get_backend\n"
        "from numbagrad.errors import BackendError\n"
        "try:\n    get_backend('cuda')\nexcept BackendError as e:\n    print('ERROR:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("ERROR:")]
    assert message in line and line.count(". ") == 0, line
