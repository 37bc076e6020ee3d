"""The op registry: every op is declared once, with everything true of it on any backend."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ...errors import OpError

CATEGORIES = ("elementwise", "reduction", "shape", "opaque")


class TensorType(NamedTuple):
    shape: tuple[int, ...]
    dtype: str


InferFn = Callable[[Sequence[TensorType], Mapping[str, Any]], TensorType]
FlopsFn = Callable[[Sequence[TensorType], TensorType, Mapping[str, Any]], int]


def _default_flops(ins: Sequence[TensorType], out: TensorType, attrs: Mapping[str, Any]) -> int:
    return math.prod(out.shape)


@dataclass(frozen=True)
class OpDef:
    """What an op is.

    - ``attrs``: the accepted attributes and their defaults; ``normalize`` may canonicalize
      them (e.g. ``stride=2`` -> ``(2, 2)``) and raise ``OpError`` on bad values.
    - ``infer``: output type from input types, raising ``ShapeError``/``DTypeError``.
    - ``reference``: the NumPy definition, ``reference(*arrays, **attrs) -> ndarray``.
    - ``vjp``: ``vjp(ctx, g) -> [grad or None per input]``, written with the op API.
    - ``scalar``: for elementwise ops, the per-element expression in Python syntax, with
      ``{0}, {1}, ...`` for the operands and ``{name}`` for attributes (finite floats, written
      in as literals); backends generate fused kernels from it.
    - ``derived``: attributes ``normalize`` computes from the others (a fused node's
      ``scalar``); any value given is replaced, and saved files never store them.
    - ``origin``: for a custom op (``numbagrad.library``), the module that defined it; empty
      for the built-in ops.
    """

    name: str
    arity: tuple[int, int]
    infer: InferFn
    reference: Callable[..., np.ndarray]
    vjp: Callable | None = None
    category: str = "opaque"
    attrs: Mapping[str, Any] = field(default_factory=dict)
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    scalar: str | None = None
    flops: FlopsFn = _default_flops
    doc: str = ""
    derived: tuple[str, ...] = ()
    origin: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise OpError(f"op {self.name!r}: category must be one of {CATEGORIES}")
        if self.category == "elementwise" and self.scalar is None:
            raise OpError(f"elementwise op {self.name!r} needs a scalar expression")

    def make_attrs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(given) - set(self.attrs)
        if unknown:
            raise OpError(
                f"op {self.name!r} has no attribute(s) {sorted(unknown)}; "
                f"it takes {sorted(self.attrs) or 'none'}"
            )
        attrs = {**self.attrs, **given}
        return self.normalize(attrs) if self.normalize else attrs


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef, replace: bool = False) -> OpDef:
    """Add an op to the registry (``numbagrad.library`` does this for custom ops). Names are
    unique: ``replace`` lets a custom op take the place of one of the same name."""
    known = _REGISTRY.get(opdef.name)
    if opdef.name == "leaf" or (known is not None and not (replace and known.origin)):
        raise OpError(f"an op named {opdef.name!r} is already registered")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    if "::" in name:
        hint = "custom ops are registered when the module that defines them is imported"
    else:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see all_ops() for the ops"
    raise OpError(f"unknown op {name!r}; {hint}")


def scalar_expression(op: str, attrs: Mapping[str, Any], arity: int) -> str:
    """An elementwise node's scalar expression over operands ``a0, a1, ...``. The template is
    per node for fused groups (``attrs["scalar"]``), else the registry's; a template may name
    the node's attributes (``{negative_slope}``), which are written in as literals."""
    template = attrs.get("scalar") or get_op(op).scalar
    return template.format(*(f"a{k}" for k in range(arity)), **attrs)


def all_ops(custom: bool = False) -> dict[str, OpDef]:
    """The built-in ops by name; with ``custom``, the custom ops registered so far too."""
    return {name: op for name, op in _REGISTRY.items() if custom or not op.origin}
