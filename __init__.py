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
