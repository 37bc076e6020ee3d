"""``ng.summary(model, spec)``: the layer table of a model, as course material prints it.

One row per layer call (in execution order): name (the layer path), kind, kernels (feature
maps), kernel size, stride, output shape (per sample), connections and trainable
parameters. Connections are multiply-accumulates per sample, **counting the bias as one
connection** (LeCun et al. 1998): a conv's output unit has in/groups*kh*kw + 1 connections,
LeNet's subsampling unit kh*kw + 1, a pooling unit kh*kw.

Shapes come from tracing the model once (in eval mode) with each layer's ``forward``
wrapped to record what it received and returned; no kernel is compiled. Layers are the
modules without children, plus any module holding parameters of its own. Parameter-free
layers that neither compute connections nor change the element count (activations,
Dropout, Flatten) are left out unless ``all_layers=True``. The first axis of the first input
is the batch: connections are divided by it, and output shapes drop it when it leads. A
layer can describe itself by defining ``summary_info(in_shape, out_shape) -> (kernels,
kernel_size, stride, connections)``, connections counted over the whole call (all samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..tensor import Spec
from ..trace import trace
from .attention import MultiheadAttention
from .layers import AvgPool2d, Conv2d, Linear, MaxPool2d
from .lenet_layers import Subsampling
from .module import Module
from .norm import _BatchNorm
from .pooling import AdaptiveAvgPool2d, GlobalAvgPool2d, LocalResponseNorm
from .recurrent import LSTM


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    kernels: int | None
    kernel_size: tuple[int, int] | None
    stride: tuple[int, int] | None
    output_shape: tuple[int, ...]
    connections: int
    params: int


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _describe(m: Module, in_shape, out_shape):
    """(kernels, kernel size, stride, connections) of a built-in layer; connections over the
    whole call (every sample: the caller divides by the batch)."""
    units = math.prod(out_shape)
    hook = getattr(m, "summary_info", None)
    if hook is not None:
        return hook(in_shape, out_shape)
    if isinstance(m, Conv2d):
        per_position = m.weight.data.size + (m.out_channels if m.bias is not None else 0)
        positions = out_shape[0] * math.prod(out_shape[2:])  # a connection table: units differ
        return m.out_channels, m.kernel_size, _pair(m.stride), per_position * positions
    if isinstance(m, Linear):
        return None, None, None, (m.in_features + (m.bias is not None)) * units
    if isinstance(m, Subsampling):
        kh, kw = m.kernel_size
        return m.channels, (kh, kw), _pair(m.stride), (kh * kw + 1) * units
    if isinstance(m, (MaxPool2d, AvgPool2d)):
        k = _pair(m.kernel_size)
        s = _pair(m.kernel_size if m.stride is None else m.stride)
        return out_shape[1], k, s, k[0] * k[1] * units
    if isinstance(m, (GlobalAvgPool2d, AdaptiveAvgPool2d)):
        h, w = in_shape[2:]
        oh, ow = (1, 1) if isinstance(m, GlobalAvgPool2d) else m.output_size
        k = (-(-h // oh), -(-w // ow))  # the (largest) window
        return out_shape[1], k, None, k[0] * k[1] * units
    if isinstance(m, LocalResponseNorm):
        return None, None, None, m.size * units
    if isinstance(m, _BatchNorm):
        return None, None, None, units  # one multiply-add per element
    if isinstance(m, LSTM):  # per step and layer: 4H gates over [x, 1, h, 1]
        steps = math.prod(out_shape[:-1])  # (T, N) positions
        h, conns = m.hidden_size, 0
        for k in range(m.num_layers):
            fan_in = (m.input_size if k == 0 else h) + h + 2 * m.bias
            conns += 4 * h * fan_in * steps
        return None, None, None, conns
    if isinstance(m, MultiheadAttention):  # q, k, v projections + QK^T + weights V
        e = m.embed_dim
        tokens = math.prod(out_shape[:-1])
        if len(out_shape) == 2:  # unbatched (L, E)
            length = out_shape[0]
        else:  # self-attention: as many keys as queries
            length = out_shape[1] if m.batch_first else out_shape[0]
        projections = 3 * tokens * (e + (m.in_proj_bias is not None)) * e
        return None, None, None, projections + 2 * tokens * length * e
    return None, None, None, 0


def _per_sample(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    """The batch axis dropped where it leads; a leading N*T (a layer applied to the rows of
    every step) becomes T."""
    if shape[:1] == (batch,):
        return shape[1:]
    if shape and shape[0] % batch == 0:
        return (shape[0] // batch, *shape[1:])
    return shape


class Summary:
    """The rows of ``ng.summary``; ``str()`` is the table, ``total_params`` and
    ``total_connections`` its totals."""

    def __init__(self, name: str, input_shape, rows: list[LayerRow]) -> None:
        self.name, self.input_shape, self.rows = name, tuple(input_shape), rows

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_connections(self) -> int:
        return sum(r.connections for r in self.rows)

    def __getitem__(self, name: str) -> LayerRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        def fmt(t):
            return "" if t is None else "x".join(str(d) for d in t)

        header = ("layer", "kind", "kernels", "size", "stride", "output", "connections", "params")
        body = [
            (
                r.name,
                r.kind,
                "" if r.kernels is None else str(r.kernels),
                fmt(r.kernel_size),
                fmt(r.stride),
                fmt(r.output_shape),
                f"{r.connections:,}",
                f"{r.params:,}",
            )
            for r in self.rows
        ]
        total = ("total", "", "", "", "", "", f"{self.total_connections:,}")
        total += (f"{self.total_params:,}",)
        widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(8)]
        right = {2, 6, 7}

        def line(cells):
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        rule = "-" * len(line(header))
        title = f"{self.name} on input {fmt(self.input_shape[1:])} (per sample)"
        return "\n".join([title, line(header), rule, *map(line, body), rule, line(total)])

    def __repr__(self) -> str:
        return str(self)


def summary(model: Module, *specs: Spec, all_layers: bool = False) -> Summary:
    """Trace ``model`` on ``specs`` (eval mode) and return its layer table (see the module
    docstring). ``specs`` may also be bare shapes: ``ng.summary(model, (1, 1, 32, 32))``."""
    specs = tuple(s if isinstance(s, Spec) else Spec(tuple(s)) for s in specs)
    layers = [
        (path or type(m).__name__, m)
        for path, m in model.named_modules()
        if not m._modules or m._parameters
    ]
    calls: list[tuple[str, Module, tuple, tuple]] = []

    def recorder(path, module):
        original = module.forward

        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            first_in = next((a for a in args if hasattr(a, "shape")), None)
            first_out = out[0] if isinstance(out, (tuple, list)) else out
            calls.append((path, module, getattr(first_in, "shape", ()), first_out.shape))
            return out

        return forward

    modes = {id(m): m.training for _, m in model.named_modules()}
    model.eval()
    for path, m in layers:
        object.__setattr__(m, "forward", recorder(path, m))
    try:
        trace(model, *specs)
    finally:
        for _, m in layers:
            m.__dict__.pop("forward", None)
        for _, m in model.named_modules():
            object.__setattr__(m, "training", modes[id(m)])

    rows, counted = [], set()
    batch = specs[0].shape[0] if specs[0].shape else 1
    for path, m, in_shape, out_shape in calls:
        params = 0
        for p in m._parameters.values():
            if p is not None and p.requires_grad and id(p) not in counted:
                counted.add(id(p))
                params += p.data.size
        kernels, ksize, stride, conns = _describe(m, in_shape, out_shape)
        trivial = not params and not conns and math.prod(in_shape) == math.prod(out_shape)
        if trivial and not all_layers:
            continue
        shown = _per_sample(tuple(out_shape), batch)
        row = LayerRow(
            path, type(m).__name__, kernels, ksize, stride, shown, conns // batch, params
        )
        rows.append(row)
    return Summary(type(model).__name__, specs[0].shape, rows)


__all__ = ["LayerRow", "Summary", "summary"]
