"""The optimizer base: hyperparameters and per-parameter groups, gradient clipping by global
norm, host-fed per-step scalars, and the ``build`` walk that asks a subclass for each
parameter's updates. The algorithms (SGD, Adam, ...) live in ``optim.py``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from functools import partial, reduce
from typing import Any

from ..errors import NumbagradError
from ..graph import Builder, Value
from ..graph import ops as _ops
from ..graph.ops import relu, sign, sqrt

LR_NAME = "lr"
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ divides by (total_norm + 1e-6)

Updates = list[tuple[Value, Value]]
_NONNEGATIVE = ("lr", "weight_decay", "l1", "eps", "lr_decay", "momentum")


def maximum(a: Value, b: Value) -> Value:
    """Elementwise max; the registry's op when there is one, else ``b + relu(a - b)`` (exact
    whenever a <= b)."""
    op = getattr(_ops, "maximum", None)
    return op(a, b) if op is not None else b + relu(a - b)


class Optimizer:
    """Base class. ``build`` returns the (state leaf, new value) updates of one step; a
    subclass writes ``update`` for one parameter with its resolved hyperparameters."""

    def __init__(
        self,
        lr: float,
        *,
        groups: Sequence[Mapping[str, Any]] | None = None,
        clip_grad_norm: float | None = None,
        **defaults: Any,
    ) -> None:
        self.defaults: dict[str, Any] = {"lr": lr, **defaults}
        self._check(self.defaults, type(self).__name__)
        self.groups = [self._group(g, i) for i, g in enumerate(groups or ())]
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise NumbagradError(
                f"{type(self).__name__}: clip_grad_norm must be > 0, got {clip_grad_norm}"
            )
        self.clip_grad_norm = clip_grad_norm
        self.__dict__.update(self.defaults)  # read-only views: opt.lr, opt.momentum, ...
        self._host_values: dict[str, Value] = {}

    # --- hyperparameters and groups -----------------------------------------------------------

    def _check(self, opts: Mapping[str, Any], where: str) -> None:
        """Refuse invalid hyperparameters; subclasses add their own checks."""
        for key in _NONNEGATIVE:
            if key in opts and not opts[key] >= 0:
                raise NumbagradError(f"{where}: {key} must be >= 0, got {opts[key]}")

    def _group(self, group: Mapping[str, Any], index: int) -> tuple[list[str], dict[str, Any]]:
        where = f"{type(self).__name__} group {index}"
        if not isinstance(group, Mapping) or "params" not in group:
            raise NumbagradError(f"{where}: a group is a dict with a 'params' list of names")
        unknown = sorted(set(group) - {"params"} - set(self.defaults))
        if unknown:
            raise NumbagradError(
                f"{where}: unknown option(s) {unknown}; a group may set {sorted(self.defaults)}"
            )
        patterns = group["params"]
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise NumbagradError(f"{where}: 'params' must be state_dict names or patterns")
        opts = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check(opts, where)
        return patterns, opts

    def options(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The hyperparameters of each named parameter (its group's, or the defaults)."""
        result = {}
        for name in names:
            hits = [i for i, (pats, _) in enumerate(self.groups) if _matches(name, pats)]
            if len(hits) > 1:
                raise NumbagradError(f"parameter {name!r} matches several groups: {hits}")
            result[name] = self.groups[hits[0]][1] if hits else self.defaults
        for i, (patterns, _) in enumerate(self.groups):
            for pattern in patterns:
                if not any(fnmatchcase(n, pattern) for n in names):
                    raise NumbagradError(
                        f"{type(self).__name__} group {i}: {pattern!r} matches no trainable "
                        f"parameter; they are {list(names)}"
                    )
        return result

    def _group_lr(self, lr: Value, opts: Mapping[str, Any]) -> Value:
        """A group's lr is a fixed multiple of the runtime lr, so schedules scale every group."""
        if opts["lr"] == self.defaults["lr"]:
            return lr
        if self.defaults["lr"] == 0:
            raise NumbagradError("a group lr needs a nonzero default lr (it is kept as a ratio)")
        return lr * (opts["lr"] / self.defaults["lr"])

    # --- host-fed scalars ---------------------------------------------------------------------

    def host_scalar(self, builder: Builder, kind: str, arg: float, dtype: str) -> Value:
        """A scalar graph input named ``kind(arg)`` that the host sets to
        ``HOST_SCALARS[kind](arg, step)`` before each step (1-based)."""
        if kind not in HOST_SCALARS:
            raise NumbagradError(f"unknown host scalar {kind!r}; known: {sorted(HOST_SCALARS)}")
        name = f"{kind}({float(arg)!r})"
        if name not in self._host_values:
            self._host_values[name] = builder.leaf("input", (), dtype, name)
        return self._host_values[name]

    def scalar_inputs(self, step: int) -> dict[str, float]:
        """The scalar inputs (besides ``lr``) that step number ``step`` (1 for the first) reads,
        by input name. ``TrainingStep`` feeds them; whoever runs a built graph by hand must."""
        return {name: host_scalar_fn(name)(step) for name in self._host_values}

    # --- the graph ----------------------------------------------------------------------------

    def regularized(self, param: Value, grad: Value, opts: Mapping[str, Any] | None = None):
        """The gradient with the L2 (weight decay) and L1 penalties' gradients added."""
        opts = self.defaults if opts is None else opts
        if opts.get("weight_decay"):
            grad = grad + param * opts["weight_decay"]
        if opts.get("l1"):
            grad = grad + sign(param) * opts["l1"]
        return grad

    def clipped(self, grads: Mapping[str, Value]) -> dict[str, Value]:
        """``clip_grad_norm_``: g *= min(1, max_norm / (||g||_2 + 1e-6)) over all gradients,
        written as max_norm / max(norm + 1e-6, max_norm) (equal, with no clamp op)."""
        if self.clip_grad_norm is None:
            return dict(grads)
        squares = [(g * g).sum() for g in grads.values()]
        norm = sqrt(reduce(lambda a, b: a + b, squares))
        max_norm = self.clip_grad_norm
        coef = max_norm / maximum(norm + CLIP_EPS, norm.builder.const(max_norm, norm.dtype))
        return {name: g * coef for name, g in grads.items()}

    def build(
        self, builder: Builder, params: Mapping[str, Value], grads: Mapping[str, Value], lr: Value
    ) -> Updates:
        self._host_values = {}
        opts = self.options(list(params))
        grads = self.clipped({name: grads[name] for name in params})
        updates: Updates = []
        for name, p in params.items():
            o = opts[name]
            updates += self.update(builder, name, p, grads[name], self._group_lr(lr, o), o)
        return updates

    def update(self, builder: Builder, name: str, p: Value, g: Value, lr: Value, o) -> Updates:
        """The updates of parameter ``p`` (named ``name``) from its gradient ``g``."""
        raise NotImplementedError

    @staticmethod
    def state(builder: Builder, param: Value, name: str, slot: str) -> Value:
        """A zero-initialized state leaf shaped like ``param``, named ``<param>.<slot>``."""
        return builder.leaf("state", param.shape, param.dtype, f"{name}.{slot}")

    def momentum_update(
        self, builder: Builder, param: Value, name: str, step: Value, momentum: float
    ) -> tuple[Value, Value]:
        """The momentum buffer of ``param`` and its next value, ``buf * momentum + step``."""
        buf = self.state(builder, param, name, "momentum_buffer")
        return buf, buf * momentum + step

    def running_average(
        self, builder: Builder, param: Value, name: str, slot: str, value: Value, decay: float
    ) -> tuple[Value, Value]:
        """The state ``slot`` of ``param``, a running average, and its next value:
        ``s * decay + value * (1 - decay)``."""
        s = self.state(builder, param, name, slot)
        return s, s * decay + value * (1 - decay)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        extra = f", groups={len(self.groups)}" if self.groups else ""
        if self.clip_grad_norm is not None:
            extra += f", clip_grad_norm={self.clip_grad_norm}"
        return f"{type(self).__name__}({args}{extra})"


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


# Host-fed scalars by kind: f(arg, step). The input's name ``kind(arg)`` says all there is to
# compute it, so a training step loaded from a file (``numbagrad.load``) feeds it too.
HOST_SCALARS: dict[str, Callable[[float, int], float]] = {}
_HOST_NAME = re.compile(r"(?P<kind>[\w.]+)\((?P<arg>[^()]*)\)")


def host_scalar_fn(name: str) -> Callable[[int], float] | None:
    """step -> value of the host-fed scalar input ``name`` (steps are 1-based), or None when
    ``name`` is not one (see ``HOST_SCALARS``). Parsed once; called at every step."""
    match = _HOST_NAME.fullmatch(name)
    if match is None or match["kind"] not in HOST_SCALARS:
        return None
    return partial(HOST_SCALARS[match["kind"]], float(match["arg"]))
