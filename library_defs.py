"""What ``numbagrad.library``'s ops share: reading a definition (inputs and attributes from the
reference's signature, an elementwise template checked as code), validating attribute values
and shape-rule results, and fingerprinting a definition's source."""

from __future__ import annotations

import ast
import hashlib
import inspect
import marshal
import math
import re
import string
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import OpError
from .graph.ir import DTYPES
from .graph.ops import TensorType

NAME = re.compile(r"[A-Za-z_][\w.]*::[A-Za-z_<][\w.<>]*")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_TEMPLATE_NAMES = {"math", "abs"}  # what the generated kernels' modules provide
NON_FINITE = (math.nan, math.inf, -math.inf, 0.0, -0.0)  # what templates must treat as NumPy does


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > 200:
        raise OpError(
            f"a custom op is named 'namespace::name' (e.g. 'mylib::softsign'), not {name!r}"
        )
    return name


def signature(fn: Callable, name: str) -> tuple[int, dict[str, Any]]:
    """(number of inputs, attribute defaults): inputs are the positional parameters, attributes
    the keyword-only ones, each with a default of a type numbagrad can save."""
    inputs, attrs = 0, {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in _POSITIONAL and p.default is p.empty:
            inputs += 1
        elif p.kind == p.KEYWORD_ONLY and p.default is not p.empty:
            attrs[p.name] = _default(p.default, name, p.name)
        else:
            raise OpError(
                f"{name}: {fn.__name__} must take the op's inputs as positional parameters and its "
                f"attributes as keyword-only ones with defaults (after *), not {p}"
            )
    if inputs == 0:
        raise OpError(f"{name}: {fn.__name__} takes no input (positional parameter)")
    return inputs, attrs


def _default(value: Any, name: str, key: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)) and all(type(v) is int for v in value):
        return tuple(value)
    raise OpError(
        f"{name}: attribute {key!r} defaults to {value!r}; attributes are None, bool, int, "
        "float, str or a tuple of ints"
    )


def attr_value(key: str, value: Any, default: Any, literal: bool) -> Any:
    """``value`` for attribute ``key``, of its default's type (``literal``: written into a
    template, so a finite number)."""
    if isinstance(value, np.generic):
        value = value.item()
    ok, out = True, value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = type(value) is int
    elif isinstance(default, float):
        ok = type(value) in (int, float)
        out = float(value) if ok else value
        ok = ok and (math.isfinite(out) or not literal)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, (tuple, list)) and all(type(v) is int for v in value)
        out = tuple(value) if ok else value
    elif default is None:
        ok = value is None or isinstance(value, (bool, int, float, str))
    if not ok:
        kind = "a finite number" if literal else f"of the type of its default {default!r}"
        raise OpError(f"attribute {key}={value!r} must be {kind}")
    return out


def template(text: Any, name: str, inputs: int, attrs: Mapping[str, Any]) -> tuple[str, set[str]]:
    """The elementwise template, checked (fields name inputs or number attributes; it parses
    as an expression over its operands, ``math.*`` and ``abs``), parenthesized as a whole and
    around each attribute so it composes with any neighbour; and the attributes it names."""
    if not isinstance(text, str):
        raise OpError(f"{name}: elementwise= takes a template string, not {text!r}")
    out, named = [], set()
    for literal, field, spec, conversion in string.Formatter().parse(text):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if spec or conversion:
            raise OpError(
                f"{name}: template field {{{field}}} has a format; write just {{{field}}}"
            )
        if field.isdigit() and int(field) < inputs:
            out.append(f"{{{field}}}")
        elif field in attrs and type(attrs[field]) in (bool, int, float):
            out.append(f"({{{field}}})")
            named.add(field)
        else:
            raise OpError(
                f"{name}: template field {{{field}}} is neither an input {{0}}..{{{inputs - 1}}} "
                "nor a number attribute of the op"
            )
    wrapped = "(" + "".join(out) + ")"
    _parse(wrapped, name, inputs, attrs)
    return wrapped, named


def _parse(wrapped: str, name: str, inputs: int, attrs: Mapping[str, Any]) -> None:
    operands = [f"a{k}" for k in range(inputs)]
    expr = wrapped.format(*operands, **{k: repr(v) for k, v in attrs.items()})
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise OpError(f"{name}: the template does not compile as an expression ({e.msg})") from None
    allowed = _TEMPLATE_NAMES | set(operands)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in allowed:
            raise OpError(
                f"{name}: the template uses {node.id!r}; templates use their operands, number "
                "attributes, math.* and abs() (kernels are generated from them)"
            )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not (
            isinstance(node.value, ast.Name)
            and node.value.id == "math"
            and hasattr(math, node.attr)
        ):
            raise OpError(f"{name}: the template uses .{node.attr}, which is not a math function")


def checked_type(out: Any) -> TensorType:
    """A shape rule's result as a TensorType, or an OpError."""
    try:
        shape, dtype = out
        shape = tuple(int(d) for d in shape)
        dtype = str(np.dtype(dtype))
        ok = all(d >= 0 for d in shape) and dtype in DTYPES
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OpError(
            f"its shape rule returned {out!r}; return TensorType(shape, dtype) with a "
            f"dtype of {', '.join(DTYPES)}"
        )
    return TensorType(shape, dtype)


def source(fn: Callable | None) -> str:
    """The source of ``fn`` (a Numba function's Python one), or its bytecode where the source
    is not available (a function made by exec)."""
    if fn is None:
        return ""
    fn = getattr(fn, "py_func", None) or getattr(fn, "fn", None) or fn
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return marshal.dumps(code).hex() if code is not None else repr(fn)


def fingerprint(*parts: Any) -> str:
    """``sha256:<16 hex>`` of the parts' text."""
    digest = hashlib.sha256("\n\0".join(map(str, parts)).encode()).hexdigest()
    return f"sha256:{digest[:16]}"


def positional_count(fn: Callable) -> int | None:
    """How many positional parameters ``fn`` (a Numba function's Python one) takes."""
    fn = getattr(fn, "py_func", None) or getattr(fn, "fn", None) or fn
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(p.kind in _POSITIONAL for p in params)
