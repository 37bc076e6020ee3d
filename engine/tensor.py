"""What users hold while tracing: ``Tensor`` (a symbolic value) and ``Spec`` (an input type)."""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import Value
from ..graph.ir import DTYPES, format_type

Tensor = Value


@dataclass(frozen=True)
class Spec:
    """The static type of a model input: shape and dtype (``"float32"``, ``"int64"``, ...)."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"Spec dtype must be one of {DTYPES}, not {self.dtype!r}")
        if any(d <= 0 for d in self.shape):
            raise ValueError(f"Spec shape must have positive dimensions, got {self.shape}")

    def __str__(self) -> str:
        return format_type(self.shape, self.dtype)
