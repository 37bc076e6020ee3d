"""The shape planning and source helpers both code generators share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numbagrad.backends.codegen_common import shared_terms, typed_literals


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


def _relu(e: str) -> str:
    return f"(0.0 if {e} <= 0.0 else {e})"


# A fused group's template: three BatchNorm + add + ReLU steps, each operand written out twice
_INNER = _relu("(a4 * a2)")
_MIDDLE = _relu(f"((a3 - a1) * a2 + {_INNER})")
NESTED = _relu(f"((a0 - a1) * a2 + {_MIDDLE})")
EXPRESSIONS = [NESTED, "(a0 + a1)", "(a0 if a1 > 0 else a0 * 2) + (a1 > 0)", "math.exp(a0) * 2"]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_shared_terms_compute_each_repeated_subexpression_once(expr):
    terms, rewritten = shared_terms(expr)
    body = [*terms, f"out = {rewritten}"]
    text = "\n".join(body)
    for term in terms:  # each named term's expression appears nowhere else
        assert text.count(term.split(" = ", 1)[1]) == 1
    rng = np.random.default_rng(0)
    for values in rng.standard_normal((50, 5)).tolist() + [[np.nan, 1.0, -1.0, 0.0, np.inf]]:
        env = {"math": math, **{f"a{k}": v for k, v in enumerate(values)}}
        expected = eval(expr, env)  # noqa: S307 (test-built expressions)
        exec(text, env)  # noqa: S102
        assert env["out"] == expected or (np.isnan(env["out"]) and np.isnan(expected))


def test_nested_steps_compute_each_operation_once():
    terms, rewritten = shared_terms(NESTED)
    text = "\n".join([*terms, rewritten])
    assert NESTED.count("*") == 14  # written out: the inner steps 4 and 8 times
    assert (text.count("*"), text.count("-"), text.count("+")) == (3, 2, 2)
