"""Shape planning shared by the cpu and cuda code generators: both coalesce dimensions first
(size-1 axes dropped, neighbours that broadcast or reduce alike merged), so the generated
source depends only on the loop structure, not on the sizes."""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Sequence

# A float literal (1.0, .5, 2.5e-05, 1e-05) that is not part of a name such as a0 or in1.
_FLOAT_LITERAL = re.compile(
    r"(?<![\w.])(?:\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)"
)


def merge_dims(shape: Sequence[int], keys: Sequence) -> tuple[list[list[int]], list]:
    """Drop size-1 axes and merge neighbours whose ``keys`` are equal; return the axis groups
    and each group's key."""
    groups: list[list[int]] = []
    group_keys: list = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        if groups and group_keys[-1] == keys[d]:
            groups[-1].append(d)
        else:
            groups.append([d])
            group_keys.append(keys[d])
    return groups, group_keys


def typed_literals(expr: str, cast: str) -> str:
    """``expr`` with every float literal wrapped in ``cast(...)``. Numba types a bare ``1.0``
    as float64, which turns float32 arithmetic (and ``math.exp``) into float64; casting the
    literals to the output's type keeps a kernel in its own precision."""
    return _FLOAT_LITERAL.sub(lambda m: f"{cast}({m.group(0)})", expr)


def shared_terms(expr: str, prefix: str = "t") -> tuple[list[str], str]:
    """``expr`` with every subexpression it holds more than once computed once: assignments
    ``t0 = ...``, ``t1 = ...`` (innermost first) and the expression over them. A fused group's
    scalar template writes each operand out where a step uses it (a ReLU names its operand
    twice), so nested steps repeat text exponentially; LLVM did not merge the copies (ResNet's
    three-level BatchNorm + add + ReLU kernel: 0.89 ms, 0.53 with the terms shared). The
    expressions are pure, so computing a term where only one branch of a conditional used it
    changes no value."""
    tree = ast.parse(expr, mode="eval").body
    counts = Counter(ast.dump(n) for n in ast.walk(tree) if _is_term(n))
    names: dict[str, str] = {}
    assignments: list[str] = []

    def rewrite(node: ast.expr) -> ast.expr:
        key = ast.dump(node)
        if key in names:
            return ast.Name(names[key], ast.Load())
        for field, value in ast.iter_fields(node):
            if field == "func" or isinstance(value, ast.Attribute):
                continue
            if isinstance(value, ast.expr):
                setattr(node, field, rewrite(value))
            elif isinstance(value, list):
                setattr(node, field, [rewrite(v) if isinstance(v, ast.expr) else v for v in value])
        if counts[key] > 1 and _is_term(node):
            names[key] = f"{prefix}{len(names)}"
            assignments.append(f"{names[key]} = {ast.unparse(node)}")
            return ast.Name(names[key], ast.Load())
        return node

    return assignments, ast.unparse(rewrite(tree))


def _is_term(node: ast.AST) -> bool:
    return isinstance(node, ast.expr) and not isinstance(
        node, (ast.Name, ast.Constant, ast.Attribute)
    )


def kernel_args(n_inputs: int, *extra: str) -> str:
    """``in0, ..., in<n-1>, <extra>``: a generated kernel's parameters."""
    return ", ".join([f"in{k}" for k in range(n_inputs)] + list(extra))


def broadcast_plan(
    in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], list[tuple[bool, ...]], list[tuple[int, ...]]]:
    """Coalesce an elementwise op over broadcast inputs: the merged output shape, each input's
    mask (``masks[k][d]``: input k varies along merged axis d, else it is broadcast) and the
    shape to view each input as."""
    ndim = len(out_shape)
    aligned = [(1,) * (ndim - len(s)) + tuple(s) for s in in_shapes]
    varies = [tuple(s[d] == out_shape[d] for s in aligned) for d in range(ndim)]
    groups, keys = merge_dims(out_shape, varies)
    shape = tuple(math.prod(out_shape[d] for d in g) for g in groups) or (1,)
    masks = [tuple(key[k] for key in keys) or (False,) for k in range(len(in_shapes))]
    views = [tuple(n if m else 1 for n, m in zip(shape, mask)) for mask in masks]
    return shape, masks, views


def reduction_plan(
    shape: tuple[int, ...], axes: Sequence[int], mean: bool
) -> tuple[tuple[int, ...], list[bool], float]:
    """Coalesce a reduction over ``axes`` of ``shape``: the merged shape, which merged axes
    are reduced, and the scale of the sum (1/count for a mean)."""
    groups, keys = merge_dims(shape, [(d in axes,) for d in range(len(shape))])
    merged = tuple(math.prod(shape[d] for d in g) for g in groups) or (1,)
    reduced = [k[0] for k in keys] or [True]
    count = math.prod(shape[d] for d in axes)
    scale = 1.0 / count if mean and count else 1.0
    return merged, reduced, scale
