"""The shape planning and source helpers both code generators share."""

from __future__ import annotations

import pytest

from numbagrad.backends.codegen_common import typed_literals


@pytest.mark.parametrize(
    "expr, typed",
    [
        ("(1.0 / (1.0 + math.exp(-a0)))", "(T(1.0) / (T(1.0) + math.exp(-a0)))"),
        ("(a0 ** (-1.5))", "(a0 ** (-T(1.5)))"),
        ("a0 * 1e-05 + a10 * .5 - 2.5E+3", "a0 * T(1e-05) + a10 * T(.5) - T(2.5E+3)"),
        # Names with digits, integer literals and comparisons with them stay as they are.
        ("(a0 if a12 > 0 else a3 * 2)", "(a0 if a12 > 0 else a3 * 2)"),
        ("math.log1p(a0)", "math.log1p(a0)"),
    ],
)
def test_float_literals_are_cast_and_nothing_else(expr, typed):
    assert typed_literals(expr, "T") == typed
