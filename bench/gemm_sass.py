"""The CUDA GEMM/conv kernels' machine code, without a GPU: each tile's implicit-GEMM conv
kernel compiled for sm_90 (Numba -> PTX -> nvJitLink -> SASS, disassembled by nvdisasm), and
its hot loop (the basic block with the most FFMA) counted: how much of it is arithmetic.

    pip install "nvidia-cuda-nvdisasm==13.*"   # once; the dev extra has the rest
    python bench/gemm_sass.py                  # the forward conv of a ResNet-18 3x3 layer
    python bench/gemm_sass.py --op grad_weight --dump /tmp/sass

A speed-of-light proxy, not a timing: a SIMT SGEMM loop at 80-90% FFMA is what hand-tuned
kernels reach; each FFMA is 2 FLOPs of the FP32 peak that bench/gpu.py measures on a GPU.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "backends"))
import cuda_compile_check as check  # noqa: E402  (its host stand-ins for device memory)

OPS = ("forward", "grad_input", "grad_weight")


def nvdisasm() -> str:
    """The nvdisasm binary: on PATH, or from the nvidia-cuda-nvdisasm wheel."""
    found = shutil.which("nvdisasm")
    if found:
        return found
    import nvidia

    for root in nvidia.__path__:
        for path in Path(root).glob("cu*/bin/nvdisasm"):
            return str(path)
    sys.exit("bench/gemm_sass.py: nvdisasm not found (pip install 'nvidia-cuda-nvdisasm==13.*')")


def hot_loop(sass: str) -> collections.Counter:
    """Opcode counts of the basic block with the most FFMA instructions."""
    blocks: list[list[str]] = [[]]
    for line in sass.splitlines():
        if re.match(r"\s*\.L_x_\d+:", line):
            blocks.append([])
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.\w+)*", line)
        if m:
            blocks[-1].append(m.group(1) + (".128" if ".128" in line else ""))
    return collections.Counter(max(blocks, key=lambda b: b.count("FFMA")))


def conv_kernels(op: str, x, w, y) -> list[tuple[str, str, object]]:
    """(tile name, PTX, resources) of the conv ``op``'s GEMM kernel for every tile."""
    from numba import cuda, typeof
    from numba.cuda import compile_ptx

    check._stand_in_memory(cuda)
    from numbagrad.backends.cuda import conv, gemm, runtime

    captured: list[str] = []

    def compile_launch(configured, *args):
        sig = tuple(typeof(a.host if isinstance(a, check.StandInArray) else a) for a in args)
        if not captured:  # the main kernel, not a split-K reduction
            captured.append(compile_ptx(configured.kernel.py_func, sig, cc=check.CC)[0])

    runtime.launcher.__call__ = compile_launch
    attrs = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    size = {"x": x, "w": w, "y": y}
    operands = {"forward": "xwy", "grad_input": "ywx", "grad_weight": "xyw"}[op]
    buffers = [check.StandInArray(np.zeros(math.prod(size[k]), np.float32)) for k in operands]
    result = []
    for name, tile in gemm.TILES.items():
        captured.clear()
        if op == "forward":
            plan = conv.forward_gemm(x, w, y, attrs, "float32", False, tile=tile, splits=1)
        elif op == "grad_input":
            plan = conv.grad_input_gemm(y, w, x, attrs, "float32", tile=tile, splits=1)
        else:
            plan = conv.grad_weight_gemm(x, y, w, attrs, "float32", tile=tile, splits=1)
        plan(*buffers)
        result.append((name, captured[0], check.sass_resources(captured[0])))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--op", choices=OPS, default="forward")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--side", type=int, default=16)
    p.add_argument("--dump", type=Path, help="also write each tile's PTX and SASS here")
    args = p.parse_args(argv)
    tool = nvdisasm()
    n, c, s = args.batch, args.channels, args.side
    x, w, y = (n, c, s, s), (c, c, 3, 3), (n, c, s, s)
    print(f"conv {args.op}, x {x}, w {w}, sm_{check.CC[0]}{check.CC[1]}: the hot loop per tile")
    header = ("tile", "regs", "instrs", "FFMA", "share", "LDS", "LDS.128")
    print(f"{header[0]:6} " + " ".join(f"{h:>{max(4, len(h))}}" for h in header[1:]))
    for name, ptx, resources in conv_kernels(args.op, x, w, y):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kernel.cubin"
            path.write_bytes(check.assemble(ptx)[0])
            sass = subprocess.run([tool, "-c", str(path)], capture_output=True, text=True).stdout
        if args.dump is not None:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / f"{args.op}_{name}.ptx").write_text(ptx)
            (args.dump / f"{args.op}_{name}.sass").write_text(sass)
        ops = hot_loop(sass)
        total, ffma = sum(ops.values()), ops["FFMA"]
        lds = ops["LDS"] + ops["LDS.128"]
        print(
            f"{name:6} {resources['regs']:>4} {total:>6} {ffma:>4} {ffma / total:>5.0%} "
            f"{lds:>4} {ops['LDS.128']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
