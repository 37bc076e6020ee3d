"""Graph passes: pure functions ``pass_(graph, keep=frozenset()) -> Graph``, one per file.

``keep`` lists node ids that must survive with their value (values another graph reads by
id, such as a backward graph's saved activations). ``graph/pipeline.py`` runs them in order.
Importing this package registers the ``fused_elementwise`` op (see ``fuse.py``) and the
``<producer>_epilogue`` ops (see ``epilogue.py``).
"""

from .constant_folding import constant_folding
from .cse import cse
from .dce import dce
from .epilogue import EPILOGUE_OPS, fuse_epilogue
from .fold_1x1 import fold_conv_bn, merge_1x1_chain, merge_parallel
from .fuse import FUSED, compose_scalar, fuse_elementwise
from .schedule import schedule
from .simplify import simplify

PASSES = {
    "dce": dce,
    "constant_folding": constant_folding,
    "cse": cse,
    "simplify": simplify,
    "fold_conv_bn": fold_conv_bn,
    "merge_1x1_chain": merge_1x1_chain,
    "merge_parallel": merge_parallel,
    "fuse_elementwise": fuse_elementwise,
    "fuse_epilogue": fuse_epilogue,
    "schedule": schedule,
}
"""Every pass by name (``optimize(disable=...)`` and the CLI refer to passes by these names)."""

__all__ = [
    "EPILOGUE_OPS",
    "FUSED",
    "PASSES",
    "compose_scalar",
    "constant_folding",
    "cse",
    "dce",
    "fold_conv_bn",
    "fuse_elementwise",
    "fuse_epilogue",
    "merge_1x1_chain",
    "merge_parallel",
    "schedule",
    "simplify",
]
