"""Graph passes: pure functions ``pass_(graph, keep=frozenset()) -> Graph``, one per file.

``keep`` lists node ids that must survive with their value (values another graph reads by
id, such as a backward graph's saved activations). ``graph/pipeline.py`` runs them in order.
Importing this package registers the ``fused_elementwise`` op (see ``fuse.py``).
"""

from .constant_folding import constant_folding
from .cse import cse
from .dce import dce
from .fuse import FUSED, compose_scalar, fuse_elementwise
from .simplify import simplify

PASSES = {
    "dce": dce,
    "constant_folding": constant_folding,
    "cse": cse,
    "simplify": simplify,
    "fuse_elementwise": fuse_elementwise,
}
"""Every pass by name (``optimize(disable=...)`` and the CLI refer to passes by these names)."""

__all__ = [
    "FUSED",
    "PASSES",
    "compose_scalar",
    "constant_folding",
    "cse",
    "dce",
    "fuse_elementwise",
    "simplify",
]
