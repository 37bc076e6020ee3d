"""LeNet-5 training-step and inference times: numbagrad backends next to PyTorch eager.

    python bench/lenet.py                          # cpu backend, batches 1, 64, 256, 30 repeats
    python bench/lenet.py --backends cpu,interp    # several backends in one table
    python bench/lenet.py --quick                  # smoke run: batches 1 and 64, 5 repeats

Every implementation starts from the same weights (numbagrad's LeNet-5 at seed 0, copied into
PyTorch via state_dict) and trains with SGD(lr 0.01, momentum 0.9, weight decay 5e-4) on one
fixed random batch. "compile" is ng.compile_training / ng.compile in this process (warm on-disk
caches, if any); "first" is the first call, which includes lazy JIT compilation; then a few
warm-up calls, then --repeat timed calls: median, interquartile range and min. "vs torch" is
numbagrad median / PyTorch median (below 1 means numbagrad is faster). Last, the cold and warm
start of a training step in a fresh process: a child Python runs import + compile_training +
the first step twice, first with empty NUMBAGRAD_CACHE_DIR / NUMBA_CACHE_DIR, then with the
caches the first run left; a third child loads the step the others saved (ng.load, "load" row:
the compile column is the load).
"""

from __future__ import annotations

import os

# Before numpy/scipy/torch load their thread pools: see backends/cpu/kernels/_env.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad import models, nn, optim  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the table just loses its PyTorch rows
    torch = None

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
SHAPE = (1, 32, 32)


def batch(b: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(b)
    return rng.standard_normal((b, *SHAPE), dtype=np.float32), rng.integers(0, 10, b)


def fresh_model():
    ng.manual_seed(0)
    return models.lenet5()


def torch_lenet5():
    t = torch.nn
    model = t.Sequential(
        t.Conv2d(1, 6, 5), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(6, 16, 5), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(16, 120, 5), t.ReLU(), t.Flatten(),
        t.Linear(120, 84), t.ReLU(), t.Linear(84, 10),
    )  # fmt: skip
    state = {k: torch.from_numpy(v) for k, v in fresh_model().state_dict().items()}
    model.load_state_dict(state)
    return model


def compile_train_step(model, b: int, **kw):
    """The compiled training step of ``model`` at batch ``b``: cross-entropy, SGD(LR, MOMENTUM,
    WEIGHT_DECAY); ``kw`` goes to ng.compile_training (backend, passes, ...)."""
    return ng.compile_training(
        model,
        loss=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(LR, MOMENTUM, weight_decay=WEIGHT_DECAY),
        inputs=ng.Spec((b, *SHAPE)),
        targets=ng.Spec((b,), "int64"),
        **kw,
    )


def torch_train_step(model, x, y):
    """A PyTorch eager training step on the tensors x, y with the same loss and optimizer."""
    opt = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def measure(fn, repeat: int, warmup: int) -> dict:
    """Time the first call, run ``warmup`` more, then ``repeat`` timed calls (milliseconds)."""
    t0 = time.perf_counter()
    first_out = fn()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q25, med, q75 = np.percentile(times, [25, 50, 75])
    return {
        "first": first * 1e3,
        "median": med * 1e3,
        "q25": q25 * 1e3,
        "q75": q75 * 1e3,
        "min": min(times) * 1e3,
        "out": first_out,
    }


def bench_numbagrad(backend: str, kind: str, b: int, repeat: int, warmup: int) -> dict:
    x, y = batch(b)
    model = fresh_model()
    t0 = time.perf_counter()
    if kind == "train":
        step = compile_train_step(model, b, backend=backend)
        fn = lambda: step(x, y)  # noqa: E731
    else:
        predict = ng.compile(model, ng.Spec((b, *SHAPE)), backend=backend)
        fn = lambda: predict(x)  # noqa: E731
    compile_s = time.perf_counter() - t0
    return {"compile": compile_s, **measure(fn, repeat, warmup)}


def bench_torch(kind: str, b: int, repeat: int, warmup: int) -> dict:
    x, y = (torch.from_numpy(a) for a in batch(b))
    model = torch_lenet5()
    if kind == "train":
        fn = torch_train_step(model, x, y)
    else:
        model.eval()

        def fn():
            with torch.no_grad():
                return model(x).numpy()

    return {"compile": None, **measure(fn, repeat, warmup)}


# argv: backend, batch, the file a compiled step is saved to (after its first step), and
# "load" to load that file instead of tracing and compiling.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, numbagrad as ng
from numbagrad import models, nn, optim
t1 = time.perf_counter()
backend, b, path, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if how == "load":
    step = ng.load(path)
else:
    ng.manual_seed(0)
    step = ng.compile_training(models.lenet5(), loss=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(0.01, 0.9, weight_decay=5e-4), inputs=ng.Spec((b, 1, 32, 32)),
        targets=ng.Spec((b,), "int64"), backend=backend)
t2 = time.perf_counter()
rng = np.random.default_rng(0)
step(rng.standard_normal((b, 1, 32, 32), dtype=np.float32), rng.integers(0, 10, b))
t3 = time.perf_counter()
if how != "load":
    step.save(path)
print(json.dumps({"import": t1 - t0, "compile": t2 - t1, "first": t3 - t2}))
"""


def compile_times(backend: str, b: int) -> None:
    """Cold then warm start of a training step, each in a fresh child process, then the
    step that the warm run saved, loaded (ng.load: no tracing, no passes) with warm caches."""
    with tempfile.TemporaryDirectory(prefix="numbagrad-bench-") as tmp:
        env = {**os.environ, "NUMBAGRAD_CACHE_DIR": f"{tmp}/numbagrad", "NUMBA_CACHE_DIR": tmp}
        for label, how in (("cold", "compile"), ("warm", "compile"), ("load", "load")):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, backend, str(b), f"{tmp}/step.npz", how],
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
                print(f"{backend:<8} {label:<5} child failed (exit {proc.returncode}): {tail}")
                return
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"{backend:<8} {label:<5} {r['import']:8.2f} {r['compile']:9.2f} "
                f"{r['first']:9.2f} {r['compile'] + r['first']:9.2f} {wall:9.2f}"
            )


def fmt(v, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="cpu", help="comma-separated (default cpu)")
    ap.add_argument("--batches", default="1,64,256", help="comma-separated (default 1,64,256)")
    ap.add_argument("--repeat", type=int, default=30, help="timed calls per row (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls after the first (3)")
    ap.add_argument("--quick", action="store_true", help="batches 1,64; 5 repeats; 1 warm-up")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--no-cold-start", action="store_true", help="skip the child-process runs")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.batches, opts.repeat, opts.warmup = "1,64", 5, 1
    backends = [s for s in opts.backends.split(",") if s]
    batches = [int(s) for s in opts.batches.split(",") if s]
    use_torch = torch is not None and not opts.no_torch

    print(f"numbagrad {ng.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    if use_torch:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (default)")
    elif torch is None:
        print("torch not importable: no PyTorch rows")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (other work skews the times)")
    print(f"{opts.repeat} timed calls after {opts.warmup} warm-up calls")
    head = (
        f"{'kind':<6} {'batch':>5} {'impl':<8} {'compile s':>9} {'first ms':>9} "
        f"{'median ms':>10} {'IQR ms':>17} {'min ms':>8} {'img/s':>9} {'vs torch':>8}"
    )
    print(head)
    print("-" * len(head))
    broken: dict[str, str] = {}
    losses: list[str] = []
    for kind in ("train", "infer"):
        for b in batches:
            rows = {}
            if use_torch:
                rows["torch"] = bench_torch(kind, b, opts.repeat, opts.warmup)
            for be in backends:
                if be in broken:
                    continue
                try:
                    rows[be] = bench_numbagrad(be, kind, b, opts.repeat, opts.warmup)
                except Exception as e:  # an unfinished backend must not stop the others
                    broken[be] = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                    print(f"backend {be} unavailable, skipped from here on: {broken[be]}")
            ref = rows.get("torch", {}).get("median")
            for impl in [*backends, "torch"]:
                r = rows.get(impl)
                if r is None:
                    continue
                ratio = None if ref is None or impl == "torch" else r["median"] / ref
                iqr = f"{r['q25']:.3f}-{r['q75']:.3f}"
                print(
                    f"{kind:<6} {b:>5} {impl:<8} {fmt(r['compile'], '.2f', 9)} "
                    f"{r['first']:9.2f} {r['median']:10.3f} {iqr:>17} {r['min']:8.3f} "
                    f"{b / r['median'] * 1e3:9.0f} {fmt(ratio, '.2f', 8)}"
                )
            if kind == "train":
                losses.append(
                    f"batch {b}: "
                    + ", ".join(f"{k} {float(r['out']):.5f}" for k, r in rows.items())
                )
    if losses:
        print("first-step losses (same weights and data, should agree):")
        for line in losses:
            print("  " + line)

    live = [be for be in backends if be not in broken]
    if live and not opts.no_cold_start:
        b = 64 if 64 in batches else batches[0]
        print(f"\ntraining-step start in a fresh process, batch {b} (seconds):")
        print(f"{'backend':<8} {'cache':<5} {'import':>8} {'compile':>9} {'1st step':>9} "
              f"{'total':>9} {'process':>9}")  # fmt: skip
        for be in live:
            compile_times(be, b)
    return 1 if broken and not live else 0


if __name__ == "__main__":
    sys.exit(main())
