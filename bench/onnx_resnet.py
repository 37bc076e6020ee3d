"""Inference of an imported ResNet-18: numbagrad cpu next to onnxruntime, in one run.

    python bench/onnx_resnet.py                 # 3x224x224, batch 1 and 32
    python bench/onnx_resnet.py --size 64 --runs 3
    python bench/onnx_resnet.py --source torch  # the file torch.onnx.export writes

The ONNX file is the zoo's ResNet-18 (1000 classes) written by ``ng.to_onnx``, or with
``--source torch`` torchvision's ResNet-18 (tests/models/torch_zoo.py) written by
``torch.onnx.export`` in a child process (torch's thread pool would slow numbagrad's kernels in
this one). Per batch size: numbagrad's
compile time (``ng.from_onnx`` + ``ng.compile`` + the first call, which compiles what the
kernel caches do not hold: run with empty NUMBAGRAD_CACHE_DIR / NUMBA_CACHE_DIR for a cold
number), then the median latency over ``--runs`` calls of numbagrad and of an onnxruntime
session on the same machine with as many threads, and the largest output difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


TORCH_EXPORT = """
import sys, torch
sys.path.insert(0, {zoo!r})
import torch_zoo
model = torch_zoo.resnet18(num_classes=1000).eval()
torch.onnx.export(model, (torch.randn({shape}),), {path!r}, input_names=["input"], dynamo=False)
"""


def _export(source: str, shape, path: Path) -> None:
    if source == "numbagrad":
        import numbagrad as ng
        from numbagrad import models

        ng.manual_seed(0)
        ng.to_onnx(models.resnet18(num_classes=1000, in_channels=3), ng.Spec(shape), path=path)
        return
    zoo = str(Path(__file__).resolve().parents[1] / "tests" / "models")
    script = TORCH_EXPORT.format(zoo=zoo, shape=tuple(shape), path=str(path))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source", choices=("numbagrad", "torch"), default="numbagrad")
    args = parser.parse_args()

    import onnxruntime as ort

    import numbagrad as ng

    threads = len(os.sched_getaffinity(0))
    folder = Path(tempfile.mkdtemp())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads

    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        x = np.random.default_rng(0).standard_normal((batch, 3, args.size, args.size), np.float32)
        path = folder / f"resnet18_b{batch}.onnx"  # the batch onnxruntime's input declares
        _export(args.source, x.shape, path)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        t0 = time.perf_counter()
        compiled = ng.compile(ng.from_onnx(path), ng.Spec(x.shape))
        ours = compiled(x)
        compile_s = time.perf_counter() - t0
        ng_ms = _median_ms(lambda c=compiled, x=x: c(x), args.runs)
        (theirs,) = session.run(None, {"input": x})
        ort_ms = _median_ms(lambda s=session, x=x: s.run(None, {"input": x}), args.runs)
        diff = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
        rows.append((batch, compile_s, ng_ms, ort_ms, diff))

    load = os.getloadavg()[0]
    print(f"ResNet-18 exported by {args.source}, imported; 3x{args.size}x{args.size}, {threads} "
          f"threads, median of {args.runs} runs, load average {load:.1f}")  # fmt: skip
    print(f"{'batch':>5}  {'compile s':>9}  {'numbagrad ms':>12}  {'onnxruntime ms':>14}  "
          f"{'ratio':>5}  {'max rel diff':>12}")  # fmt: skip
    for batch, compile_s, ng_ms, ort_ms, diff in rows:
        print(f"{batch:>5}  {compile_s:>9.1f}  {ng_ms:>12.1f}  {ort_ms:>14.1f}  "
              f"{ng_ms / ort_ms:>5.2f}  {diff:>12.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
