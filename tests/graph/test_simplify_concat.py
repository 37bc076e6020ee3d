"""simplify's concat identities: a sum of concats whose pieces line up is a concat of sums
(zero pieces add nothing), and a slice that takes one piece of a concat is that piece; what
autodiff gives a value read by two slices (BatchNorm's (2, C) statistics) becomes plain."""

from __future__ import annotations

import numpy as np

from numbagrad.backends import interp
from numbagrad.engine import backward
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.passes import constant_folding, dce, simplify


def _ops(graph) -> list[str]:
    return [n.op for n in graph.ops()]


def _simplified(graph):
    return dce(simplify(constant_folding(graph)))


def _same_values(before, after):
    rng = np.random.default_rng(0)
    feeds = {
        n.id: rng.standard_normal(n.shape).astype(n.dtype)
        for n in before.leaves()
        if n.role != "const"
    }
    for a, b in zip(interp.evaluate(before, feeds), interp.evaluate(after, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _leaves(b, *shapes):
    return [b.leaf("input", s, "float32", f"x{k}") for k, s in enumerate(shapes)]


def test_gradient_of_two_slices_needs_no_concat():
    b = Builder()
    s = b.leaf("param", (2, 3), "float32", "s")
    r = b.leaf("input", (1, 3), "float32", "r")
    loss = O.sum(O.exp(O.slice_(s, 0, 1)) * r) + O.sum(O.slice_(s, 1, 2) * r)
    grads = backward(b.build([loss]))
    assert {"concat", "add"} <= set(_ops(grads))
    plain = _simplified(grads)
    assert "add" not in _ops(plain) and _ops(plain).count("concat") == 1
    _same_values(grads, plain)


def test_sum_of_lined_up_concats_and_a_slice_of_one_piece():
    b = Builder()
    a1, a2, b1, b2 = _leaves(b, (1, 3), (2, 3), (1, 3), (2, 3))
    total = O.concat([a1, a2]) + O.concat([b1, b2])
    g = b.build([O.slice_(total, 1, 3) * 2.0, total])
    plain = _simplified(g)
    assert sorted(_ops(plain)) == ["add", "add", "concat", "mul"]  # the slice is a2 + b2
    _same_values(g, plain)


def test_concats_that_do_not_line_up_and_slices_across_pieces_stay():
    b = Builder()
    a1, a2, b1, b2 = _leaves(b, (1, 3), (2, 3), (2, 3), (1, 3))
    total = O.concat([a1, a2]) + O.concat([b1, b2])
    g = b.build([O.slice_(O.concat([a1, a2]), 0, 2), total])
    plain = _simplified(g)
    assert sorted(_ops(plain)) == ["add", "concat", "concat", "concat", "slice"]
    _same_values(g, plain)
