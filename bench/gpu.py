"""numbagrad on backend="cuda" against PyTorch CUDA, in one run: training-step medians, their
ratio, and the achieved TFLOP/s of every convolution kernel (forward and both gradients)
against the device's FP32 peak, measured here.

    python bench/gpu.py                              # LeNet-5 at batch 256, ResNet-18 at 128
    python bench/gpu.py --models resnet18_bn         # the zoo's CIFAR ResNet-18 (BatchNorm)
    python bench/gpu.py --models lenet5 --repeat 50  # one model, more samples
    python bench/gpu.py --no-torch --json out.json   # numbagrad only, results saved
    python bench/gpu.py --no-torch --tile-sweep      # every conv kernel with every GEMM tile
    python bench/gpu.py --sim --models lenet5 --lenet-batch 1 --repeat 1 --warmup 0
                                                     # a smoke test on the CUDA simulator

Speed is PyTorch's step time over numbagrad's: above 1x, numbagrad is faster. numbagrad's
step is timed twice: launching its kernels one by one, and captured and replayed as CUDA graphs
(``NUMBAGRAD_CUDA_GRAPHS=1``, backends/cuda/graphs.py).
A step is what a training loop does: copy the batch in, forward, backward, SGD-momentum update,
and bring the loss scalar back (``float(loss)`` / ``loss.item()``, which waits for the GPU), so
both sides are timed the same way, wall clock, median of --repeat steps after --warmup steps.

``resnet18`` is the CIFAR variant (3x3 stem, no max-pool, [2, 2, 2, 2] basic blocks, 64..512
channels) defined here with numbagrad.nn without BatchNorm, so that the two sides run the
same convolutions and little else; ``resnet18_bn`` is the zoo's ``resnet18(small_input=True)``
with its BatchNorm layers, against the torchvision-style twin of tests/models/torch_zoo.py.

PyTorch runs in strict FP32 like numbagrad (``torch.backends.cudnn.allow_tf32 = False``): its
default lets cuDNN run convolutions on TF32 tensor cores, with 10-bit mantissas. That default
is timed too ("torch tf32"), to show what the tensor cores add.

Conv TFLOP/s: each conv kernel of the compiled step re-launched --repeat times on its own
buffers between ``cuda.synchronize()`` calls; FLOPs are 2*N*K*OH*OW*C/groups*KH*KW. The FP32
peak is measured by a kernel of independent fused multiply-add chains in registers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from gpu_models import setup  # bench/gpu_models.py

MODELS = ("lenet5", "resnet18", "resnet18_bn")
DEFAULT_MODELS = ("lenet5", "resnet18")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS))
    p.add_argument("--lenet-batch", type=int, default=256)
    p.add_argument("--resnet-batch", type=int, default=128)
    p.add_argument("--repeat", type=int, default=20, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation, caches)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    p.add_argument("--no-conv", action="store_true", help="skip the per-conv-kernel table")
    p.add_argument(
        "--tile-sweep", action="store_true", help="time every conv kernel with every GEMM tile"
    )
    p.add_argument("--sim", action="store_true", help="run on the CUDA simulator (tiny only)")
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args(argv)


# --- timing --------------------------------------------------------------------------------


def _median_ms(fn, repeat: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench_numbagrad(name: str, args) -> tuple[dict, object]:
    import numpy as np

    import numbagrad as ng
    from numbagrad import nn, optim

    model, _, shape, batch = setup(name, args)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    t0 = time.perf_counter()
    step = ng.compile_training(
        model,
        nn.CrossEntropyLoss(),
        optim.SGD(0.01, momentum=0.9),
        ng.Spec(x.shape),
        ng.Spec(y.shape, "int64"),
        backend="cuda",
    )
    compile_s = time.perf_counter() - t0
    ms = _median_ms(lambda: step(x, y), args.repeat, args.warmup)
    result = {"model": name, "batch": batch, "numbagrad_ms": ms, "compile_s": compile_s}
    if not args.sim:  # the same step again, captured and replayed as CUDA graphs
        from numbagrad.backends.cuda import graphs

        os.environ[graphs.ENV] = "1"
        try:
            result["graphs_ms"] = _median_ms(lambda: step(x, y), args.repeat, args.warmup)
        finally:
            del os.environ[graphs.ENV]
        if step.backward._graph is None:  # capture failed (it warned): no graph was timed
            result["graphs_ms"] = float("nan")
    return result, step


def bench_torch(name: str, args, tf32: bool) -> float:
    """PyTorch's step time, with cuDNN's TF32 convolutions allowed or not (strict FP32)."""
    import numpy as np
    import torch

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default for matmuls
    _, factory, shape, batch = setup(name, args)
    torch.manual_seed(0)
    model = factory().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, *shape)).astype(np.float32)).pin_memory()
    y = torch.from_numpy(rng.integers(0, 10, batch).astype(np.int64)).pin_memory()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
        loss.backward()
        opt.step()
        return loss.item()

    return _median_ms(step, args.repeat, args.warmup)


FMA_STEPS = 4096


def fp32_peak_tflops(args) -> float:
    """The device's FP32 throughput, measured: 8 blocks of 256 threads per multiprocessor,
    each thread ``CHAINS`` x ``steps`` fused multiply-adds (2 FLOPs each)."""
    import numpy as np
    from fma_peak import CHAINS, fma_chains  # bench/fma_peak.py
    from numba import cuda

    from numbagrad.backends.cuda.runtime import launcher, sm_count

    # The simulator runs a Python thread per GPU thread: one warp there, a few steps.
    threads, blocks, steps = (32, 1, 4) if args.sim else (256, 8 * sm_count(), FMA_STEPS)
    out = cuda.device_array(threads * blocks, np.float32)
    run = launcher(fma_chains, blocks, threads)

    def launch():
        run(out, np.float32(0.999), np.float32(1e-3), steps)
        cuda.synchronize()

    ms = _median_ms(launch, args.repeat, 1)
    return 2 * CHAINS * steps * threads * blocks / (ms * 1e-3) / 1e12


def conv_kernel_table(step, args) -> list[dict]:
    """Each conv kernel of the compiled step, timed alone on its own buffers."""
    from numba import cuda

    from numbagrad.graph.ops import TensorType, get_op

    rows = []
    for exe in (step.forward, step.backward):
        for k in exe.kernels:
            if not k.node.op.startswith("conv2d"):
                continue
            graph, node = exe.graph, k.node
            ins = [TensorType(graph[i].shape, graph[i].dtype) for i in node.inputs]
            flops = get_op(node.op).flops(ins, TensorType(node.shape, node.dtype), node.attrs)

            def launch(k=k):
                k.launch(k.inputs, k.out)
                cuda.synchronize()

            ms = _median_ms(launch, args.repeat, 1)
            plan = getattr(k.launch, "plan", None)
            rows.append(
                {
                    "layer": node.name,
                    "op": node.op,
                    "shape": "x".join(map(str, node.shape)),
                    "tile": "x".join(map(str, plan.tile[:3])) if plan is not None else "-",
                    "splits": plan.splits if plan is not None else 0,
                    "ms": ms,
                    "tflops": flops / (ms * 1e-3) / 1e12,
                }
            )
    return rows


def _conv_gemm(node, graph, tile):
    """The conv-family node's GEMM (an epilogue node's producer's), planned with ``tile``."""
    from numbagrad.backends.cuda import conv
    from numbagrad.graph.passes.epilogue import producer_node

    if node.op.endswith("_epilogue"):
        node = producer_node(node, graph)
    shapes = [graph[i].shape for i in node.inputs]
    if node.op == "conv2d":
        bias = len(shapes) == 3
        args = (*shapes[:2], node.shape, node.attrs, node.dtype, bias)
        return conv.forward_gemm(*args, tile=tile), len(node.inputs)
    build = {"conv2d_grad_input": conv.grad_input_gemm, "conv2d_grad_weight": conv.grad_weight_gemm}
    return build[node.op](*shapes, node.shape, node.attrs, node.dtype, tile=tile), 2


def tile_sweep(step, args) -> list[dict]:
    """Each conv kernel of the step re-planned with every GEMM tile and timed alone (its
    default split-K for that tile), writing into the step's own buffers."""
    from numba import cuda

    from numbagrad.backends.cuda.gemm import TILES
    from numbagrad.backends.cuda.runtime import flat

    rows = []
    for exe in (step.forward, step.backward):
        for k in exe.kernels:
            if not k.node.op.startswith("conv2d"):
                continue
            row = {"layer": k.node.name, "op": k.node.op, "chosen": k.launch.plan.tile}
            for name, tile in TILES.items():
                gemm, n_inputs = _conv_gemm(k.node, exe.graph, tile)
                ins, out = [flat(a) for a in k.inputs[:n_inputs]], flat(k.out)

                def launch(gemm=gemm, ins=ins, out=out):
                    gemm(*ins[:2], out, *ins[2:])
                    cuda.synchronize()

                row[name] = _median_ms(launch, args.repeat, 1)
            row["chosen"] = next(n for n, t in TILES.items() if t == row["chosen"])
            row["best"] = min(TILES, key=lambda n: row[n])
            rows.append(row)
    return rows


def _print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    widths = [max(len(h), *(len(fmt.format(r[key])) for r in rows)) for key, (h, fmt) in columns]
    print("  ".join(h.ljust(w) for (_, (h, _)), w in zip(columns, widths)))
    for r in rows:
        print("  ".join(fmt.format(r[key]).ljust(w) for (key, (_, fmt)), w in zip(columns, widths)))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.no_torch = True
    from numbagrad.backends import get_backend
    from numbagrad.errors import BackendError

    try:
        get_backend("cuda")
    except BackendError as e:
        print(f"bench/gpu.py: {e}", file=sys.stderr)
        return 2
    peak = fp32_peak_tflops(args)
    results, conv_rows, sweep_rows = [], [], []
    for name in args.models:
        result, step = bench_numbagrad(name, args)
        if not args.no_torch:
            for key, tf32 in (("torch_ms", False), ("torch_tf32_ms", True)):
                result[key] = bench_torch(name, args, tf32)
            # Speed relative to PyTorch: above 1, numbagrad's step is the faster.
            result["speed"] = result["torch_ms"] / result["numbagrad_ms"]
            result["speed_tf32"] = result["torch_tf32_ms"] / result["numbagrad_ms"]
            if "graphs_ms" in result:
                result["graphs_speed"] = result["torch_ms"] / result["graphs_ms"]
        results.append(result)
        if not args.no_conv:
            rows = conv_kernel_table(step, args)
            conv_rows += [{"model": name, **row, "of_peak": row["tflops"] / peak} for row in rows]
        if args.tile_sweep:
            sweep_rows += [{"model": name, **row} for row in tile_sweep(step, args)]
    print(f"\nFP32 peak, measured (FMA chains): {peak:.1f} TFLOP/s")
    columns = [
        ("model", ("model", "{}")),
        ("batch", ("batch", "{}")),
        ("numbagrad_ms", ("numbagrad ms/step", "{:.2f}")),
        ("compile_s", ("compile s", "{:.1f}")),
    ]
    if not args.sim:
        columns += [("graphs_ms", ("with CUDA graphs ms", "{:.2f}"))]
    if not args.no_torch:
        columns += [
            ("torch_ms", ("torch fp32 ms", "{:.2f}")),
            ("speed", ("speed vs fp32", "{:.2f}x")),
            ("torch_tf32_ms", ("torch tf32 ms", "{:.2f}")),
            ("speed_tf32", ("speed vs tf32", "{:.2f}x")),
            ("graphs_speed", ("graphs speed vs fp32", "{:.2f}x")),
        ]
    print("\ntraining step (median)")
    _print_table(results, columns)
    if conv_rows:
        print("\nconv kernels (numbagrad, each alone)")
        _print_table(
            conv_rows,
            [
                ("model", ("model", "{}")),
                ("layer", ("layer", "{}")),
                ("op", ("op", "{}")),
                ("shape", ("output", "{}")),
                ("tile", ("tile", "{}")),
                ("splits", ("splits", "{}")),
                ("ms", ("ms", "{:.3f}")),
                ("tflops", ("TFLOP/s", "{:.2f}")),
                ("of_peak", ("of peak", "{:.0%}")),
            ],
        )
    if sweep_rows:
        from numbagrad.backends.cuda.gemm import TILES

        print("\nGEMM tile sweep (ms per conv kernel, each alone)")
        columns = [("model", ("model", "{}")), ("layer", ("layer", "{}")), ("op", ("op", "{}"))]
        columns += [(name, (name, "{:.3f}")) for name in TILES]
        columns += [("chosen", ("chosen", "{}")), ("best", ("best", "{}"))]
        _print_table(sweep_rows, columns)
    if args.json:
        with open(args.json, "w") as f:
            data = {"fp32_peak_tflops": peak, "steps": results, "convs": conv_rows}
            json.dump({**data, "tile_sweep": sweep_rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
