"""Concatenation along channels: Inception's merge of parallel branches."""

from __future__ import annotations

from ...errors import ShapeError
from ...graph.ops import concat
from .module import Module


class Concat(Module):
    """Apply each branch to the same input and concatenate the results along ``dim``
    (channels by default), as an Inception module merges its branches. Branches are children
    named ``0``, ``1``, ... (like ``Sequential``)."""

    def __init__(self, *branches: Module, dim: int = 1) -> None:
        super().__init__()
        if not branches:
            raise ShapeError("Concat needs at least one branch")
        self.dim = dim
        for i, branch in enumerate(branches):
            setattr(self, str(i), branch)

    def forward(self, x):
        return concat([branch(x) for branch in self.children()], self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
