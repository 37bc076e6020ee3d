"""The IR (Graph, Node), the builder, the op registry, printing and the passes."""

from . import ops, passes
from .builder import Builder, Value, as_value, as_values
from .ir import Graph, Node, format_type

__all__ = [
    "Builder",
    "Graph",
    "Node",
    "Value",
    "as_value",
    "as_values",
    "format_type",
    "ops",
    "passes",
]
