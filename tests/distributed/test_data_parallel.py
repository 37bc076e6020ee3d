"""Data-parallel training (distributed.py, graph/ops/collective.py, backends/collective.py).

In this process: buckets, sharding, a world of one. Under ``mpiexec -n 2`` (mpi_worker.py,
skipped without mpi4py and a launcher): two processes at batch 16 against this process at
batch 32, the failures that must end the job instead of hanging it, save and resume, the cuda
lowering on the simulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mpi_cases
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import numbagrad as ng
from numbagrad import data, distributed, nn, optim
from numbagrad.backends import collective
from numbagrad.errors import DataError, DistributedError
from numbagrad.graph.ops.collective import BUCKET_SCOPE, buckets
from numbagrad.models import mlp

WORKER = Path(__file__).parent / "mpi_worker.py"
ATOL = 1e-5


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else None


def _have_mpi4py() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


needs_mpi4py = pytest.mark.skipif(not _have_mpi4py(), reason="needs mpi4py (the mpi extra)")
needs_mpi = pytest.mark.skipif(
    not _have_mpi4py() or _mpiexec() is None, reason="needs mpi4py and mpiexec (the mpi extra)"
)


def run_mpi(case: str, out: Path, timeout: float = 240, env=None, processes: int = 2):
    """``mpiexec -n PROCESSES python mpi_worker.py CASE OUT``; the CompletedProcess."""
    command = [_mpiexec(), "-n", str(processes), sys.executable, str(WORKER), case, str(out)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


# --- in this process ---------------------------------------------------------------------------


def test_buckets_close_when_full_and_a_big_tensor_is_alone():
    assert buckets([10, 10, 10, 30, 5], 20) == [[0, 1], [2], [3], [4]]
    assert buckets([5, 5], 100) == [[0, 1]]


@given(st.lists(st.integers(1, 100), max_size=30), st.integers(1, 150))
def test_buckets_keep_order_and_stay_under_the_cap_unless_one_tensor_is_over(sizes, cap):
    runs = buckets(sizes, cap)
    assert [i for run in runs for i in run] == list(range(len(sizes)))
    for k, run in enumerate(runs):
        total = sum(sizes[i] for i in run)
        assert total <= cap or len(run) == 1
        if k + 1 < len(runs):  # a bucket closes only when the next tensor would overflow it
            assert total + sizes[runs[k + 1][0]] > cap


def _mlp_step(bucket_mb: float, **options):
    ng.manual_seed(0)
    return ng.compile_training(
        mlp(mpi_cases.MLP_SIZES),
        nn.CrossEntropyLoss(),
        optim.SGD(0.1),
        inputs=ng.Spec((4, mpi_cases.MLP_SIZES[0])),
        targets=ng.Spec((4,), "int64"),
        distributed=True,
        bucket_mb=bucket_mb,
        **options,
    )


def _name(node) -> str:
    return node.name


@needs_mpi4py
def test_gradients_are_bucketed_last_layer_first_into_the_arena():
    # Gradients last layer first: bias 10, weight 240, bias 24, weight 480 float32 values;
    # 1000-byte buckets take (10 + 240) * 4, then 24 * 4, then 480 * 4 alone.
    step = _mlp_step(1000 / 2**20)
    # (the schedule pass may run the buckets in another order: every rank runs the same one)
    reduces = sorted((n for n in step.backward_graph.ops() if n.op == "allreduce"), key=_name)
    assert [n.shape for n in reduces] == [(250,), (24,), (480,)]
    assert [n.name for n in reduces] == [f"{BUCKET_SCOPE}{k}" for k in range(3)]
    plan = step.report.plans["backward"]
    assert all(n.id in plan.offsets for n in reduces)  # one contiguous block of the arena each
    one = _mlp_step(25.0)
    assert [n.shape for n in one.backward_graph.ops() if n.op == "allreduce"] == [(754,)]


@needs_mpi4py
@pytest.mark.parametrize("model, opt", [("mlp", "sgd"), ("mlp", "adam"), ("lenet5", "sgd")])
def test_a_world_of_one_is_exactly_the_step_without_distribution(model, opt):
    losses, weights = mpi_cases.train(model, opt)
    d_losses, d_weights = mpi_cases.train(model, opt, distributed=True)
    np.testing.assert_array_equal(d_losses, losses)
    for name, value in weights.items():
        np.testing.assert_array_equal(d_weights[name], value, err_msg=name)


def test_shards_are_disjoint_and_make_the_global_batch():
    x, y = np.arange(30.0).reshape(30, 1), np.arange(30)
    whole = list(data.iterate_minibatches(x, y, 12, rng=5))
    shards = [
        list(data.iterate_minibatches(x, y, 4, rng=5, rank=r, world_size=3)) for r in (0, 1, 2)
    ]
    assert len(whole) == 2 and all(len(s) == 2 for s in shards)
    for k, (xb, yb) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[k][0] for s in shards]), xb)
        np.testing.assert_array_equal(np.concatenate([s[k][1] for s in shards]), yb)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 2, "world_size": 2}, "0 <= rank < world_size"),
        ({"rank": 0, "world_size": 2, "drop_last": False}, "needs drop_last=True"),
        ({"rank": 0, "world_size": 8}, "no full batch of 32"),
    ],
)
def test_sharding_refuses_what_would_desynchronize_the_processes(kwargs, message):
    x, y = np.zeros((20, 1)), np.zeros(20)
    with pytest.raises(DataError, match=message):
        data.iterate_minibatches(x, y, 4, **kwargs)


def test_distributed_without_mpi4py_is_one_sentence(monkeypatch):
    monkeypatch.setattr(collective, "_WORLD", collective._World())
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    assert distributed.init() == 1  # a world of one needs no MPI ...
    with pytest.raises(DistributedError, match=r"needs MPI: pip install 'numbagrad\[mpi\]'"):
        _mlp_step(25.0)  # ... but asking for data-parallel training does


def test_a_plain_import_and_a_world_of_one_load_no_mpi():
    code = (
        "import sys; from numbagrad import distributed as d; "
        "print(d.rank(), d.world_size(), d.is_main(), 'mpi4py' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in collective.LAUNCHER_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["0", "1", "True", "False"], out.stderr


# --- two processes ------------------------------------------------------------------------------


@needs_mpi
def test_two_processes_at_batch_16_match_one_at_batch_32(tmp_path):
    reference = {case: mpi_cases.train(*case) for case in mpi_cases.CASES}  # warms the caches
    done = run_mpi("equivalence", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    for (model, opt), (losses, weights) in reference.items():
        key = f"{model}.{opt}"
        global_losses = (ranks[0][f"{key}.losses"] + ranks[1][f"{key}.losses"]) / 2
        np.testing.assert_allclose(global_losses, losses, rtol=0, atol=ATOL, err_msg=key)
        for name, value in weights.items():
            np.testing.assert_allclose(ranks[0][f"{key}.{name}"], value, rtol=0, atol=ATOL)
            np.testing.assert_array_equal(ranks[1][f"{key}.{name}"], ranks[0][f"{key}.{name}"])


@needs_mpi
def test_three_processes_average_over_three(tmp_path):
    losses, weights = mpi_cases.train("mlp", "sgd", global_batch=48)
    done = run_mpi("three", tmp_path, processes=3)
    assert done.returncode == 0, done.stderr[-3000:]
    result = np.load(tmp_path / "rank0.npz")
    np.testing.assert_allclose(result["losses"], losses, rtol=0, atol=ATOL)
    for name, value in weights.items():
        np.testing.assert_allclose(result[name], value, rtol=0, atol=ATOL, err_msg=name)


@needs_mpi
def test_processes_that_compiled_different_steps_fail_on_every_rank(tmp_path):
    done = run_mpi("mismatch", tmp_path, timeout=120)
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}: error: the processes compiled different training steps" in (
            done.stderr
        ), done.stderr[-3000:]
    assert "rank 1: inputs f32[8,20] i64[8]" in done.stderr


@needs_mpi
@pytest.mark.parametrize(
    "case, message",
    [
        ("raise", "rank 0: error: rank 1 stopped (ValueError: simulated failure), so rank 0 "
         f"stops in the allreduce of {BUCKET_SCOPE}0"),
        ("exit", f"rank 0: error: rank 0 waited 3 s for the allreduce of {BUCKET_SCOPE}0"),
        ("kill", None),
    ],
)  # fmt: skip
def test_a_process_that_stops_ends_the_job_instead_of_hanging_it(tmp_path, case, message):
    done = run_mpi(case, tmp_path, timeout=120, env={"NUMBAGRAD_MPI_TIMEOUT": "3"})
    assert done.returncode != 0
    if message is not None:
        assert message in done.stderr, done.stderr[-3000:]


@needs_mpi
def test_rank_0_saves_and_every_process_resumes_from_the_file(tmp_path):
    done = run_mpi("save", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    for result in ranks:  # the loaded step takes the same step as the one that saved it
        assert result["losses"][0] == result["losses"][1]
    for name in ranks[0].files:
        if name != "losses":
            np.testing.assert_array_equal(ranks[0][name], ranks[1][name])
    assert ng.load(tmp_path / "step.npz").step_count == 2


@needs_mpi
@pytest.mark.cuda
def test_the_cuda_lowering_stages_the_bucket_through_the_host(tmp_path):
    done = run_mpi("cuda", tmp_path, env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    expected = np.concatenate([np.full(6, 1.5), np.arange(4) * 1.5]).astype(np.float32)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npz")["result"], expected)


# --- the command line ---------------------------------------------------------------------------

INTERP = ["--backend", "interp", "--eval-batch-size", "500", "--bundled"]  # nothing to compile
TRAIN = ["-m", "numbagrad", "train", "lenet5", "--limit", "1024", "--epochs", "1", *INTERP]


def _accuracy(stdout: str) -> float:
    (line,) = [s for s in stdout.splitlines() if s.startswith("epoch 1/1:")]
    return float(line.split("test accuracy ")[1].split(",")[0])


@needs_mpi
def test_cli_trains_data_parallel_like_one_process_at_the_doubled_batch(tmp_path):
    run = {"capture_output": True, "text": True, "timeout": 300, "cwd": tmp_path}
    one = subprocess.run([sys.executable, *TRAIN, "--batch-size", "32"], **run)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, *TRAIN, "--batch-size", "16", "--distributed"],
        **run,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("data-parallel: 2 processes x batch 16 = global batch 32") == 1
    assert two.stdout.count("epoch 1/1:") == 1  # rank 0 alone prints
    assert abs(_accuracy(two.stdout) - _accuracy(one.stdout)) <= 0.01


@needs_mpi
def test_cli_checkpoints_from_rank_0_and_resumes_on_every_rank(tmp_path):
    run = {"capture_output": True, "text": True, "timeout": 300, "cwd": tmp_path}
    args = ["-m", "numbagrad", "train", "lenet5", "--limit", "256", "--epochs", "2", *INTERP]
    args += ["--batch-size", "16"]
    mpi = [_mpiexec(), "-n", "2", sys.executable, *args, "--distributed"]
    whole = subprocess.run([*mpi, "--checkpoint", "ck"], **run)
    assert whole.returncode == 0, whole.stderr[-3000:]
    shutil.rmtree(tmp_path / "ck" / "epoch-0002")  # as if killed during epoch 2
    resumed = subprocess.run([*mpi, "--resume", "ck"], **run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = [s for s in whole.stdout.splitlines() if s.startswith("epoch 2/2:")]
    again = [s for s in resumed.stdout.splitlines() if s.startswith("epoch 2/2:")]
    assert last[0].split(", ")[:2] == again[0].split(", ")[:2]  # loss and accuracy
    alone = subprocess.run([sys.executable, *args, "--resume", "ck"], **run)
    assert alone.returncode == 1
    assert "trained with --distributed over 2 process(es)" in alone.stderr


@needs_mpi
def test_cli_profile_shows_each_bucket_and_its_allreduce_time(tmp_path):
    command = [_mpiexec(), "-n", "2", sys.executable, "-m", "numbagrad", "profile", "lenet5"]
    command += ["--training", "--distributed", "--bucket-mb", "0.1", "--batch-size", "4"]
    command += ["--backend", "interp", "--steps", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gradient allreduce over 2 processes") == 1
    rows = [s.split() for s in done.stdout.splitlines() if f"  {BUCKET_SCOPE}" in s]
    table = [r for r in rows if len(r) == 5]  # ms, %, MB, tensors, bucket
    assert sorted(r[4] for r in table) == [f"{BUCKET_SCOPE}{k}" for k in range(3)]
    assert sum(int(r[3]) for r in table) == 10  # LeNet-5's 10 gradients
