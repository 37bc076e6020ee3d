"""The CUDA backend, op by op, against the NumPy references (the interp backend), under the
CUDA simulator (or on a real GPU with NUMBAGRAD_TEST_REAL_GPU=1). Shapes are tiny: the
simulator runs every GPU thread as a Python thread."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from cuda_setup import REAL_GPU, require_cuda_backend  # first: it chooses the simulator

from numbagrad.backends import interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O

cuda_backend = require_cuda_backend()

from numbagrad.backends.cuda import conv, gemm, lowering  # noqa: E402
from numbagrad.backends.cuda.codegen import reduction_launch  # noqa: E402
from numbagrad.backends.cuda.runtime import flat, load_cuda  # noqa: E402

pytestmark = [pytest.mark.cuda] + ([pytest.mark.gpu] if REAL_GPU else [])
cuda = load_cuda()


# The op cases and checks shared with test_backend_ops.py.
import op_cases as oc  # noqa: E402  (a sibling helper: tests/conftest.py)

# A smaller NCHW input than on cpu, and a smaller plain conv2d: the simulator runs each thread.
CASES = oc.op_cases(
    x4=(2, 3, 5, 4), specs={"conv2d": [((1, 2, 6, 6), "f"), ((3, 2, 3, 3), "f"), ((3,), "f")]}
)
_BY_ID = {case[0]: case for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_reference(case):
    oc.check_op("cuda", case, "float32")


@pytest.mark.parametrize("name", list(oc.GRAD_CASES))
def test_backward_ops_match_reference(name):
    forward_case, grad_ops = oc.GRAD_CASES[name]
    oc.check_backward("cuda", _BY_ID[forward_case], grad_ops)


def test_every_registered_op_has_a_cuda_lowering():
    """The registry x backend table: every op has a cuda test case here and a lowering."""
    assert oc.unlowered_ops(lowering.LOWERINGS) == set(), "ops that would run on the host"
    assert oc.uncovered_ops(CASES) == set(), "ops without a cuda test case here"


def test_fused_elementwise_group():
    from numbagrad.graph.passes import fuse_elementwise

    b = Builder()
    x, w, c = (
        b.leaf("input", s, "float32", n) for s, n in [((3, 4), "x"), ((4,), "w"), ((3, 1), "c")]
    )
    graph = fuse_elementwise(b.build([O.tanh(O.relu(x * w + c) - 0.5)]))
    assert [n.op for n in graph.ops()] == ["fused_elementwise"]
    feeds = oc.feeds([((3, 4), "f"), ((4,), "f"), ((3, 1), "f")], [x, w, c], "float32")
    (expected,) = interp.evaluate(graph, feeds)
    (got,), exe = oc.run("cuda", graph, feeds)
    assert exe.impl_counts() == {"cuda": 1}
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


# --- kernels under each of their plans -----------------------------------------------------


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(a).ravel())


@pytest.mark.parametrize(
    "tile, splits, shapes",
    [
        ("huge", 1, ((130, 9), (9, 128))),  # 128x128, 8x8 outputs a thread, a partial tile
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
    graph, leaves = oc.build(_BY_ID["cross_entropy"], "float32")
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


def test_composed_class_losses_refuse_bad_targets_on_the_host():
    # nll_loss (like smoothed or unreduced cross_entropy) reads its targets through a one-hot,
    # which would match no class for a bad index: refused as the host feeds the targets.
    graph, (_, targets) = oc.build(_BY_ID["nll_loss"], "float32")
    exe = cuda_backend.compile(graph)
    for bad in (7, -1):
        with pytest.raises(ValueError, match=f"nll_loss: target {bad} is not a class index"):
            exe.set_input(targets.id, np.array([0, 1, bad, 2, 3]))
    # Targets the graph computes are never fed: checked on the host when the op runs.
    b = Builder()
    t = b.leaf("input", (5, 1), "int64", "t")
    graph = b.build([O.class_indices(O.reshape(t, (5,)), 7, "nll_loss")])
    exe = cuda_backend.compile(graph)
    assert exe.impl_counts() == {"reference": 1}
    exe.set_input(t.id, np.array([[0], [7], [1], [2], [3]]))
    with pytest.raises(ValueError, match="nll_loss: target 7 is not a class index"):
        exe.run()


def test_an_ignored_target_index_passes_the_host_check():
    b = Builder()
    t = b.leaf("input", (4,), "int64", "t")
    exe = cuda_backend.compile(b.build([O.class_indices(t, 3, "nll_loss", ignore_index=-100)]))
    exe.set_input(t.id, np.array([0, -100, 2, -100]))
    exe.run()
    np.testing.assert_array_equal(exe.output_arrays()[0], [0, -100, 2, -100])
    with pytest.raises(ValueError, match="target -1 is not a class index .* nor the ignore_index"):
        exe.set_input(t.id, np.array([0, -1, 2, 1]))


def test_an_op_without_lowering_runs_its_reference_on_the_host(monkeypatch):
    monkeypatch.delitem(lowering.LOWERINGS, "transpose")
    case = _BY_ID["transpose"]
    graph, leaves = oc.build(case, "float32")
    feeds = oc.feeds(case[1], leaves, "float32")
    (got,), exe = oc.run("cuda", graph, feeds)
    assert exe.impl_counts() == {"reference": 1}
    np.testing.assert_array_equal(got, interp.evaluate(graph, feeds)[0])


def test_generated_kernels_are_files_in_the_cache_dir(tmp_path, monkeypatch):
    from numbagrad.backends.cuda.codegen import elementwise_launch

    monkeypatch.setenv("NUMBAGRAD_CACHE_DIR", str(tmp_path))
    expr = "(a0 * 3.25 - 0.125)"  # a source no other test generates
    launch = elementwise_launch(expr, [(4,)], (4,))
    (path,) = (tmp_path / "cuda_kernels").glob("k_*.py")
    assert "(a0 * T(3.25) - T(0.125))" in path.read_text()  # literals in the output's type
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
