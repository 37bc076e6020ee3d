"""GFLOP/s of the Numba conv2d kernels (forward, backward-input, backward-weight) next to PyTorch.

    python bench/conv_kernels.py                 # LeNet-5 layers at batch 64, a 64->64 3x3 layer
    python bench/conv_kernels.py --resnet        # CIFAR ResNet-18's 3x3 and 1x1 layers, batch 32
    python bench/conv_kernels.py --extra         # + batch-1 LeNet and wider VGG/ResNet layers
    python bench/conv_kernels.py --all           # every applicable algorithm, not just the choice
    python bench/conv_kernels.py --quick         # smoke run: 3 timed calls each

FLOPs are 2 * N * K * OH * OW * C/groups * KH * KW for each of the three kernels; times are
medians of --repeat calls after warm-up (Numba compilation excluded). The kernels run as the
CPU executable runs them: on Numba's threads with BLAS at one thread
(backends/cpu/threads.single_threaded_blas). "% peak" is GFLOP/s over the float32 GEMM peak
measured at the start of the same run: a 2048^3 product through kernels/linalg.matmul under
the same setting, which is the packed micro-kernel where BLAS runs narrower vectors than the
CPU (kernels/packed_gemm.py; NumPy's own ``a @ b``, on its BLAS's threads, is printed for
reference).
PyTorch runs in a child process that never imports numbagrad (bench/paired.py), with as
many threads as Numba: F.conv2d and the two gradients alone (aten.convolution_backward with
one output requested, as autograd calls it). "vs torch" is numbagrad's time over PyTorch's
(below 1: numbagrad is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import paired  # bench/paired.py (this folder is sys.path[0])

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
    ("3x3 256->256 2x2 b64", (64, 256, 2, 2), (256, 256, 3, 3), 1, 1),  # the CLI model's layer3
]
# CIFAR ResNet-18 (models.resnet18(small_input=True)) at batch 32: the stem, each stage's
# 3x3 conv, and the stride-2 3x3 convs and 1x1 downsamples between the stages.
RESNET = [
    ("R18 stem 3->64 32px", (32, 3, 32, 32), (64, 3, 3, 3), 1, 1),
    ("R18 3x3 64 32px", (32, 64, 32, 32), (64, 64, 3, 3), 1, 1),
    ("R18 3x3 64->128 s2", (32, 64, 32, 32), (128, 64, 3, 3), 2, 1),
    ("R18 1x1 64->128 s2", (32, 64, 32, 32), (128, 64, 1, 1), 2, 0),
    ("R18 3x3 128 16px", (32, 128, 16, 16), (128, 128, 3, 3), 1, 1),
    ("R18 3x3 128->256 s2", (32, 128, 16, 16), (256, 128, 3, 3), 2, 1),
    ("R18 1x1 128->256 s2", (32, 128, 16, 16), (256, 128, 1, 1), 2, 0),
    ("R18 3x3 256 8px", (32, 256, 8, 8), (256, 256, 3, 3), 1, 1),
    ("R18 3x3 256->512 s2", (32, 256, 8, 8), (512, 256, 3, 3), 2, 1),
    ("R18 1x1 256->512 s2", (32, 256, 8, 8), (512, 256, 1, 1), 2, 0),
    ("R18 3x3 512 4px", (32, 512, 4, 4), (512, 512, 3, 3), 1, 1),
]
KINDS = ("forward", "backward_input", "backward_weight")
GEMM_N = 2048


def median_time(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _out_side(side: int, k: int, s: int, p: int) -> int:
    return (side + 2 * p - k) // s + 1


def flops(xs, ws, s, p) -> int:
    """Multiply-adds x 2 of one of the three kernels."""
    oh, ow = _out_side(xs[2], ws[2], s, p), _out_side(xs[3], ws[3], s, p)
    return 2 * xs[0] * ws[0] * oh * ow * ws[1] * ws[2] * ws[3]


def _arrays(xs, ws, s, p):
    """Random x, w, bias and output gradient for one layer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    b = rng.standard_normal(ws[0], dtype=np.float32)
    oh, ow = _out_side(xs[2], ws[2], s, p), _out_side(xs[3], ws[3], s, p)
    gy = rng.standard_normal((xs[0], ws[0], oh, ow), dtype=np.float32)
    return x, w, b, gy


def gemm_peaks(repeat: int) -> tuple[float, float]:
    """GFLOP/s of a float32 GEMM_N^3 product: kernels/linalg.matmul with BLAS at one thread
    (the kernels' setting), and NumPy's ``a @ b``."""
    from numbagrad.backends.cpu.kernels import linalg
    from numbagrad.backends.cpu.threads import single_threaded_blas

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    flops = 2 * GEMM_N**3
    numpy = median_time(lambda: a @ b, repeat, 1)
    # NumPy's BLAS threads spin for a while after its last call and take the cores from
    # Numba's: the first kernel timed right after ran 40x slower (8 ms a call) in some runs.
    time.sleep(1.0)
    with single_threaded_blas():
        kernel = median_time(lambda: linalg.matmul(a, b, out, False, False), repeat, 1)
    return flops / kernel / 1e9, flops / numpy / 1e9


def bench_numbagrad(xs, ws, s, p, repeat, warmup, all_algos):
    """{kind: {algorithm: seconds, 'chosen': algorithm}} for one layer."""
    from numbagrad.backends.cpu.kernels import conv

    x, w, b, gy = _arrays(xs, ws, s, p)
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
            a: median_time(lambda a=a, f=calls[kind]: f(a), repeat, warmup) for a in algos
        }
        rows[kind]["chosen"] = chosen
    return rows


def _torch_layer(xs, ws, s, p, repeat, warmup) -> dict[str, float]:
    import torch

    x, w, b, gy = _arrays(xs, ws, s, p)
    xt, wt, bt, gyt = (torch.from_numpy(v) for v in (x, w, b, gy))
    conv_bw = torch.ops.aten.convolution_backward
    st, pt = [s, s], [p, p]

    def grad(mask):
        return lambda: conv_bw(gyt, xt, wt, None, st, pt, [1, 1], False, [0, 0], 1, mask)

    calls = {
        "forward": lambda: torch.nn.functional.conv2d(xt, wt, bt, s, p),
        "backward_input": grad([True, False, False]),
        "backward_weight": grad([False, True, False]),
    }
    return {k: median_time(calls[k], repeat, warmup) for k in KINDS}


def torch_setup(child: paired.Child):
    """The PyTorch child: times every layer of the case while setting up (the results go
    back in child.info) and hands paired.child_main nothing to time."""
    case = child.case
    layers = [layer for layer in all_layers() if layer[0] in case["layers"]]
    child.info["seconds"] = {
        name: _torch_layer(xs, ws, s, p, case["repeat"], case["warmup"])
        for name, xs, ws, s, p in layers
    }
    return lambda: None


def torch_in_child(layers, repeat: int, warmup: int) -> dict | None:
    """The PyTorch child's result ({layer name: {kind: seconds}} in ["info"]["seconds"]);
    None without torch."""
    if not paired.torch_available():
        print("(torch not installed: no PyTorch columns)")
        return None
    case = {"layers": [layer[0] for layer in layers], "repeat": repeat, "warmup": warmup}
    impl = paired.Impl("torch eager", "torch")
    try:
        r = paired.run_child(os.path.abspath(__file__), impl, case, 0, 0)
    except paired.ChildFailed as e:
        print(f"(PyTorch columns skipped: the child failed, {e})")
        return None
    return r


def all_layers():
    return LAYERS + EXTRA + RESNET


def print_rows(name, rows, n_flops, peak, ref, mark_chosen) -> None:
    for kind in KINDS:
        r = dict(rows[kind])
        chosen = r.pop("chosen")
        for algo, sec in sorted(r.items(), key=lambda kv: kv[0] != chosen):
            gf = n_flops / sec / 1e9
            mark = "*" if mark_chosen and algo == chosen else ""
            line = f"{name:<24} {kind:<15} {algo + mark:<12} {sec * 1e3:9.3f} {gf:8.1f} "
            line += f"{gf / peak:7.0%}"
            if ref:
                t = ref[name][kind]
                line += f" {t * 1e3:9.3f} {n_flops / t / 1e9:8.1f} {sec / t:8.2f}"
            print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, help="timed calls per kernel (15)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls first (3)")
    ap.add_argument("--resnet", action="store_true", help="CIFAR ResNet-18's layers instead")
    ap.add_argument("--extra", action="store_true", help="more layers (batch 1, wider)")
    ap.add_argument("--all", action="store_true", help="time every applicable algorithm")
    ap.add_argument("--quick", action="store_true", help="3 timed calls after 1 warm-up")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        return paired.child_main(opts.child, torch_setup)
    if opts.quick:
        opts.repeat, opts.warmup = 3, 1
    layers = (RESNET if opts.resnet else LAYERS) + (EXTRA if opts.extra else [])
    child = None if opts.no_torch else torch_in_child(layers, opts.repeat, opts.warmup)
    ref = child and child["info"]["seconds"]
    from numbagrad.backends.cpu.threads import single_threaded_blas

    peak, numpy_peak = gemm_peaks(max(3, opts.repeat // 3))
    paired.print_machine({**paired.numbagrad_facts(), **(child["facts"] if child else {})})
    print(
        f"float32 GEMM {GEMM_N}^3: {peak:.1f} GFLOP/s through kernels/linalg.matmul (Numba "
        f"threads, the kernels' GEMM: the peak below); NumPy's a @ b {numpy_peak:.1f}"
    )
    head = f"{'layer':<24} {'pass':<15} {'algorithm':<12} {'ms':>9} {'GFLOP/s':>8} {'% peak':>7}"
    if ref:
        head += f" {'torch ms':>9} {'GFLOP/s':>8} {'vs torch':>8}"
    print(head)
    print("-" * len(head))
    for name, xs, ws, s, p in layers:
        with single_threaded_blas():
            rows = bench_numbagrad(xs, ws, s, p, opts.repeat, opts.warmup, opts.all)
        print_rows(name, rows, flops(xs, ws, s, p), peak, ref, opts.all)
    if opts.all:
        print("* = the algorithm the dispatch picks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
