"""Class-index targets: ``check_class_indices`` (the host-side refusal every backend runs), the
opaque ``class_indices`` op that carries it into a graph, and ``one_hot`` built on it. The
class losses (``loss.py``) read their targets through these."""

from __future__ import annotations

import numpy as np

from ...errors import ClassIndexError, DTypeError, OpError
from ..builder import Value, as_value
from .elementwise import equal
from .registry import OpDef, TensorType, register


def check_class_indices(
    targets: np.ndarray,
    classes: int,
    what: str = "cross_entropy",
    ignore_index: int | None = None,
) -> None:
    """Refuse class indices outside [0, classes) (other than ``ignore_index``) before they
    index out of bounds (or, in a one-hot, silently match no class); ``what`` names the op or
    loss in the message."""
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        bad = (targets < 0) | (targets >= classes)
        if ignore_index is not None:
            bad &= targets != ignore_index
        if bad.any():
            also = "" if ignore_index is None else f" nor the ignore_index {ignore_index}"
            raise ClassIndexError(
                f"{what}: target {targets[bad][0]} is not a class index in [0, {classes}) "
                f"({classes} classes){also}"
            )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _normalize_classes(attrs: dict) -> dict:
    classes, ignore = attrs["num_classes"], attrs["ignore_index"]
    if not _is_int(classes) or classes < 1:
        raise OpError(f"num_classes must be a positive integer, got {classes!r}")
    if not isinstance(attrs["what"], str):
        raise OpError(f"what must name the op or loss, got {attrs['what']!r}")
    if ignore is not None and not _is_int(ignore):
        raise OpError(f"{attrs['what']}: ignore_index must be an integer, got {ignore!r}")
    ignore = None if ignore is None else int(ignore)
    return {"num_classes": int(classes), "what": attrs["what"], "ignore_index": ignore}


def _infer_classes(types, attrs) -> TensorType:
    (t,) = types
    if t.dtype != "int64":
        raise DTypeError(f"targets must be int64 class indices, not {t.dtype}")
    return t


def _classes_ref(targets, num_classes, what, ignore_index):
    check_class_indices(targets, num_classes, what, ignore_index)
    return targets.copy()


# Opaque, so it never fuses into the elementwise one-hot that reads it: backends check it
# (cpu: before the copy; cuda: on the host, as the targets are fed).
register(
    OpDef(
        name="class_indices",
        arity=(1, 1),
        infer=_infer_classes,
        reference=_classes_ref,
        vjp=lambda ctx, g: [None],  # integer indices: no gradient
        attrs={"num_classes": None, "what": "one_hot", "ignore_index": None},
        normalize=_normalize_classes,
        doc="identity on int64 class indices that refuses any outside [0, num_classes) "
        "other than ``ignore_index``, naming ``what`` (the op or loss reading them)",
    )
)


def class_indices(
    targets, num_classes: int, what: str = "one_hot", ignore_index: int | None = None
) -> Value:
    """Int64 class indices, unchanged; running the graph refuses any outside [0, C) other
    than ``ignore_index``."""
    t = as_value(targets)
    return t.builder.emit(
        "class_indices", [t], num_classes=num_classes, what=what, ignore_index=ignore_index
    )


def _one_hot(
    t: Value, num_classes: int, dtype: str, what: str, axis: int = 1, ignore_index=None
) -> Value:
    """One-hot (classes along ``axis``); a target equal to ``ignore_index`` gets a zero row."""
    if t.dtype != "int64":
        raise DTypeError(f"{what}: targets must be int64 class indices, not {t.dtype}")
    shape = (*t.shape[:axis], 1, *t.shape[axis:])
    classes = np.arange(num_classes).reshape((num_classes,) + (1,) * (len(shape) - axis - 1))
    t = class_indices(t, num_classes, what, ignore_index).reshape(shape)
    q = equal(t, t.builder.const(classes, "int64"), dtype=dtype)
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        q = q * (1.0 - equal(t, t.builder.const(ignore_index, "int64"), dtype=dtype))
    return q


def one_hot(targets, num_classes: int, dtype: str = "float32", axis: int = 1) -> Value:
    """Int64 class indices (N, *d) -> one-hot (N, C, *d) (classes along ``axis`` = 1), as
    ``equal(targets, arange(C))`` with broadcasting: elementwise, so it fuses. Indices outside
    [0, C) are refused when the graph runs (they would match no class)."""
    return _one_hot(as_value(targets), num_classes, dtype, "one_hot", axis)
