"""Reading JSON data and arrays from a file that may be corrupted or written by someone hostile
(a saved model, ``numbagrad.load``): every value is checked for its type and range before
anything uses it, and a value that fails is refused with a one-sentence ``SavedModelError``
that says where it is (``where``) and what is wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import numpy as np

from ..errors import SavedModelError
from .ir import format_type

T = TypeVar("T")

MAX_INT = 2**62  # ids, sizes and counts: far beyond any model, far from int64 overflow
MAX_DIM = 2**31
MAX_ELEMENTS = 2**48  # per tensor: its byte size and index arithmetic stay inside int64
MAX_NDIM = 16
MAX_STR = 1000  # names, op names, attribute strings
MAX_ATTR_DEPTH = 8  # attribute values nest (a fused body: step, attributes, pair, value)
_WORD = re.compile(r"[\w.]+")


def refuse(where: str, problem: str) -> NoReturn:
    # One line, whatever text from the file reached the message.
    message = f"{where}: {problem}".replace("\n", "\\n").replace("\r", "\\r")
    raise SavedModelError(message)


def describe(value: Any) -> str:
    """A value as a message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def word(text: str) -> str:
    """A name from the file (an op, a role) as a message shows it: as is when it is a plain
    name, else as ``describe`` shows it."""
    return text if _WORD.fullmatch(text) and len(text) <= 60 else describe(text)


def _got(value: Any) -> str:
    """What a JSON value is, as a message says it: ``a list``, ``a string 'x'``, ``null``."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return f"{'a string' if isinstance(value, str) else 'a number'} {describe(value)}"


def fields(value: Any, keys: Sequence[str], where: str) -> dict:
    """``value``, a JSON object with exactly ``keys``."""
    if not isinstance(value, dict):
        refuse(where, f"expected a JSON object, got {_got(value)}")
    missing = [k for k in keys if k not in value]
    if missing:
        refuse(where, f"the key {missing[0]!r} is missing")
    extra = sorted(str(k) for k in value if k not in keys)
    if extra:
        refuse(where, f"unexpected key {describe(extra[0])}")
    return value


def integer(value: Any, where: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(value) is not int:
        refuse(where, f"expected an integer, got {_got(value)}")
    if not lo <= value <= hi:
        refuse(where, f"{describe(value)} is outside {lo}..{hi}")
    return value


def string(value: Any, where: str, choices: Sequence[str] | None = None) -> str:
    if type(value) is not str:
        refuse(where, f"expected a string, got {_got(value)}")
    if len(value) > MAX_STR:
        refuse(where, f"a string of {len(value)} characters is longer than {MAX_STR}")
    if choices is not None and value not in choices:
        refuse(where, f"{describe(value)} is not one of {', '.join(map(repr, choices))}")
    return value


def boolean(value: Any, where: str) -> bool:
    if type(value) is not bool:
        refuse(where, f"expected true or false, got {_got(value)}")
    return value


def number(value: Any, where: str) -> float:
    """A JSON number (an integer or a float, not true/false)."""
    if type(value) not in (int, float):
        refuse(where, f"expected a number, got {_got(value)}")
    return value


def items(value: Any, where: str, item: Callable[[Any, str], T], unique: bool = False) -> list[T]:
    """``value``, a JSON list, each element read by ``item``."""
    if not isinstance(value, list):
        refuse(where, f"expected a list, got {_got(value)}")
    result = [item(v, f"{where}[{k}]") for k, v in enumerate(value)]
    if unique:
        repeated = [v for k, v in enumerate(result) if v in result[:k]]
        if repeated:
            refuse(where, f"{describe(repeated[0])} appears twice")
    return result


def shape(value: Any, where: str) -> tuple[int, ...]:
    dims = items(value, where, lambda d, w: integer(d, w, 0, MAX_DIM))
    if len(dims) > MAX_NDIM:
        refuse(where, f"{len(dims)} dimensions are more than {MAX_NDIM}")
    if math.prod(dims) > MAX_ELEMENTS:
        refuse(where, f"{math.prod(dims)} elements are more than {MAX_ELEMENTS}")
    return tuple(dims)


def attr_value(value: Any, where: str, depth: int = 0) -> Any:
    """A node attribute from JSON: lists become tuples (as saved); numbers must be finite."""
    if depth > MAX_ATTR_DEPTH:
        refuse(where, f"the value nests deeper than {MAX_ATTR_DEPTH} levels")
    if isinstance(value, list):
        return tuple(attr_value(v, where, depth + 1) for v in value)
    if type(value) is float and not math.isfinite(value):
        refuse(where, f"{value} is not a finite number")
    if type(value) is str:
        return string(value, where)
    if value is None or type(value) in (bool, int, float):
        return value
    refuse(where, f"an attribute value cannot be {_got(value)}")


class ArrayStore:
    """A file's arrays by key, each checked against the shape and dtype its user expects when
    taken; ``unused`` lists the keys nothing took."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = dict(arrays)
        self._taken: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...], dtype: str, where: str) -> np.ndarray:
        """The array ``key``, which must be ``dtype[shape]``, C-contiguous and writable."""
        if key not in self._arrays:
            refuse(where, f"its array {key!r} is missing")
        array = self._arrays[key]
        if array.shape != tuple(shape) or str(array.dtype) != dtype:
            got = format_type(array.shape, str(array.dtype))
            refuse(where, f"its array {key!r} is {got}, not {format_type(shape, dtype)}")
        self._taken.add(key)
        return np.require(array, requirements=("C", "A", "W"))  # copies only when it must

    def take_any(self, key: str, where: str) -> np.ndarray:
        """The array ``key`` of any numeric dtype and shape (a model's other state)."""
        if key not in self._arrays:
            refuse(where, f"its array {key!r} is missing")
        array = self._arrays[key]
        if array.dtype.kind not in "biuf" or not array.dtype.isnative:
            refuse(where, f"its array {key!r} has dtype {array.dtype}, not a number type")
        self._taken.add(key)
        return np.require(array, requirements=("C", "A", "W"))

    def unused(self) -> list[str]:
        return sorted(set(self._arrays) - self._taken)
