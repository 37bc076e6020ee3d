"""``numbagrad compile MODEL.onnx --input-shape 1,3,224,224 --save model.npz``: import an ONNX
model, optimize and compile it ahead of time, and save it for ``numbagrad.load``."""

from __future__ import annotations

import argparse
import time

from ..compiler import compile as compile_model
from ..engine import Spec
from ..errors import NumbagradError
from .onnx_model import input_shape, load_onnx, parse_shape


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "compile",
        help="compile an ONNX model ahead of time and save it (.npz) for numbagrad.load",
        description="Import an ONNX model, run the graph passes, compile its kernels and save "
        "the compiled model, so a later process loads it with numbagrad.load (or numbagrad "
        "eval) without compiling again.",
    )
    add = parser.add_argument
    add("model", help="an .onnx file")
    add("--input-shape", type=parse_shape, metavar="N,C,H,W",
        help="the input's shape (default: the shape the file declares, batch 1)")  # fmt: skip
    add("--save", metavar="FILE", required=True, help="where to write the compiled model (.npz)")
    add("--backend", default="cpu", choices=("cpu", "cuda", "interp"))
    parser.set_defaults(run=compile_command)


def compile_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    model = load_onnx(args.model)
    shape = input_shape(model, args.input_shape)
    compiled = compile_model(model, Spec(shape), backend=args.backend)
    try:
        saved = compiled.save(args.save)
    except OSError as e:
        raise NumbagradError(f"cannot save the model to {args.save}: {e.strerror}") from None
    report = compiled.report
    print(f"compiled {args.model} for input {'x'.join(map(str, shape))} on {compiled.backend}: "
          f"{report.kernels_before} -> {report.kernels_after} kernels in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    print(f"saved the compiled model: {saved} (numbagrad.load)", flush=True)
    return 0
