"""GFLOP/s of the Numba conv2d kernels (forward, backward-input, backward-weight) next to PyTorch.

    python bench/conv_kernels.py                 # LeNet-5 layers at batch 64, a 64->64 3x3 layer
    python bench/conv_kernels.py --all           # every applicable algorithm, not just the choice
    python bench/conv_kernels.py --extra         # + batch-1 LeNet and wider VGG/ResNet layers

FLOPs are 2 * N * K * OH * OW * C/groups * KH * KW for each of the three kernels. Times are medians
of --repeat runs after warm-up (Numba compilation excluded). PyTorch runs in a child process with
its own default thread-pool settings (the kernels tune libgomp's, which PyTorch shares).
"""

from __future__ import annotations

import os

if not os.environ.get("_NUMBAGRAD_BENCH_TORCH_CHILD"):
    # Before numpy/scipy/torch load their thread pools: see backends/cpu/kernels/_env.py.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# name, (N, C, H, W), (K, C/g, KH, KW), stride, padding
LAYERS = [
    ("LeNet C1 b64", (64, 1, 32, 32), (6, 1, 5, 5), 1, 0),
    ("LeNet C3 b64", (64, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    ("LeNet C5 b64", (64, 16, 5, 5), (120, 16, 5, 5), 1, 0),
    ("3x3 64->64 32x32 b8", (8, 64, 32, 32), (64, 64, 3, 3), 1, 1),
]
EXTRA = [
    ("LeNet C1 b1", (1, 1, 32, 32), (6, 1, 5, 5), 1, 0),
    ("LeNet C3 b1", (1, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    ("LeNet C5 b1", (1, 16, 5, 5), (120, 16, 5, 5), 1, 0),
    ("3x3 3->64 32x32 b8", (8, 3, 32, 32), (64, 3, 3, 3), 1, 1),
    ("3x3 16->16 32x32 b32", (32, 16, 32, 32), (16, 16, 3, 3), 1, 1),
    ("3x3 32->32 16x16 b32", (32, 32, 16, 16), (32, 32, 3, 3), 1, 1),
    ("3x3 128->128 16x16 b8", (8, 128, 16, 16), (128, 128, 3, 3), 1, 1),
    ("3x3 256->256 8x8 b8", (8, 256, 8, 8), (256, 256, 3, 3), 1, 1),
    ("3x3 64->128 s2 32x32 b8", (8, 64, 32, 32), (128, 64, 3, 3), 2, 1),
    ("1x1 256->64 16x16 b8", (8, 256, 16, 16), (64, 256, 1, 1), 1, 0),
    ("7x7 3->64 s2 64x64 b8", (8, 3, 64, 64), (64, 3, 7, 7), 2, 3),
]
KINDS = ("forward", "backward_input", "backward_weight")


def median_time(fn, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _arrays(xs, ws, s, p):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    b = rng.standard_normal(ws[0], dtype=np.float32)
    oh = (xs[2] + 2 * p - ws[2]) // s + 1
    ow = (xs[3] + 2 * p - ws[3]) // s + 1
    gy = rng.standard_normal((xs[0], ws[0], oh, ow), dtype=np.float32)
    flops = 2 * xs[0] * ws[0] * oh * ow * ws[1] * ws[2] * ws[3]
    return x, w, b, gy, flops


def bench_numbagrad(xs, ws, s, p, repeat, all_algos):
    """{kind: {algorithm: GFLOP/s, 'chosen': algorithm}} for one layer."""
    from numbagrad.backends.cpu.kernels import conv

    x, w, b, gy, flops = _arrays(xs, ws, s, p)
    out, gx, gw = np.empty_like(gy), np.empty_like(x), np.empty_like(w)
    args = (s, s, p, p, 1, 1, 1)
    calls = {
        "forward": lambda a: conv.conv2d_forward(x, w, b, out, *args, algorithm=a),
        "backward_input": lambda a: conv.conv2d_backward_input(gy, w, gx, *args, algorithm=a),
        "backward_weight": lambda a: conv.conv2d_backward_weight(x, gy, gw, *args, algorithm=a),
    }
    rows = {}
    for kind in KINDS:
        chosen = conv.choose_algorithm(kind, xs, ws, (s, s), (p, p), (1, 1), 1)
        algos = conv.applicable_algorithms(kind, xs, ws, (s, s), (p, p), (1, 1), 1)
        algos = algos if all_algos else [chosen]
        rows[kind] = {
            a: flops / median_time(lambda a=a, f=calls[kind]: f(a), repeat) / 1e9 for a in algos
        }
        rows[kind]["chosen"] = chosen
    return rows


def _torch_layer(torch, xs, ws, s, p, repeat):
    x, w, b, gy, flops = _arrays(xs, ws, s, p)
    xt, wt, bt, gyt = (torch.from_numpy(v) for v in (x, w, b, gy))
    conv_bw = torch.ops.aten.convolution_backward
    st, pt = [s, s], [p, p]
    calls = {
        "forward": lambda: torch.nn.functional.conv2d(xt, wt, bt, s, p),
        "backward_input": lambda: conv_bw(
            gyt, xt, wt, None, st, pt, [1, 1], False, [0, 0], 1, [True, False, False]
        ),
        "backward_weight": lambda: conv_bw(
            gyt, xt, wt, None, st, pt, [1, 1], False, [0, 0], 1, [False, True, False]
        ),
    }
    return {k: flops / median_time(calls[k], repeat) / 1e9 for k in KINDS}


def bench_torch(layers, repeat):
    """{layer name: {kind: GFLOP/s}} for F.conv2d and its two gradients (aten directly)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    return {name: _torch_layer(torch, xs, ws, s, p, repeat) for name, xs, ws, s, p in layers}


def torch_in_child(extra, repeat):
    """Run bench_torch in a fresh interpreter with the default environment; None without
    torch."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT",)}
    env["_NUMBAGRAD_BENCH_TORCH_CHILD"] = "1"
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-json", "--repeat", str(repeat)]
    proc = subprocess.run(
        cmd + (["--extra"] if extra else []), env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"(PyTorch column skipped: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--all", action="store_true", help="time every applicable algorithm")
    ap.add_argument("--extra", action="store_true", help="more layers (batch 1, wider)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    ap.add_argument("--torch-json", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    layers = LAYERS + (EXTRA if opts.extra else [])
    if opts.torch_json:
        print(json.dumps(bench_torch(layers, opts.repeat)))
        return
    ref = None if opts.no_torch else torch_in_child(opts.extra, opts.repeat)
    head = f"{'layer':<26} {'pass':<16} {'algorithm':<12} {'GFLOP/s':>8}"
    print(head + (f" {'torch':>8} {'ratio':>6}" if ref else ""))
    print("-" * (len(head) + (16 if ref else 0)))
    for name, xs, ws, s, p in layers:
        rows = bench_numbagrad(xs, ws, s, p, opts.repeat, opts.all)
        for kind in KINDS:
            r = rows[kind]
            chosen = r.pop("chosen")
            for algo, gf in sorted(r.items(), key=lambda kv: kv[0] != chosen):
                mark = "*" if opts.all and algo == chosen else ""
                line = f"{name:<26} {kind:<16} {algo + mark:<12} {gf:8.1f}"
                if ref:
                    tgf = ref[name][kind]
                    line += f" {tgf:8.1f} {gf / tgf:6.2f}"
                print(line)
    if opts.all:
        print("* = the algorithm the dispatch picks")


if __name__ == "__main__":
    main()
