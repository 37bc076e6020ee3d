"""numbagrad: a deep-learning compiler on Numba.

Trace a model into a static graph, differentiate it into a second graph, optimize both, and
lower them to Numba kernels::

    import numbagrad as ng
    from numbagrad import nn, optim
    step = ng.compile_training(model, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(lr=0.05),
                               inputs=ng.Spec((64, 1, 32, 32)), targets=ng.Spec((64,), "int64"))
    loss = step(x, y)
"""

from . import distributed, errors, library
from .aot import load
from .compiler import compile, compile_grad, compile_training
from .engine import Spec, Tensor, backward, functional, nn, optim, trace
from .engine.nn.init import manual_seed
from .engine.nn.summary import summary
from .graph import Graph, Node
from .library_checks import gradcheck

__version__ = "0.1.0"


def __getattr__(name: str):
    # ONNX interchange (from_onnx, to_onnx) imports the optional onnx package only when it is
    # used; the names stay out of __all__ so that ``import *`` works without it.
    if name in ("from_onnx", "to_onnx"):
        try:
            from . import interop
        except ImportError as e:
            raise ImportError(
                f"numbagrad.{name} needs the onnx package: pip install numbagrad[onnx] ({e})"
            ) from None
        return getattr(interop, name)
    raise AttributeError(f"module 'numbagrad' has no attribute {name!r}")


__all__ = [
    "Graph",
    "Node",
    "Spec",
    "Tensor",
    "backward",
    "compile",
    "compile_grad",
    "compile_training",
    "distributed",
    "errors",
    "functional",
    "gradcheck",
    "library",
    "load",
    "manual_seed",
    "nn",
    "optim",
    "summary",
    "trace",
]
