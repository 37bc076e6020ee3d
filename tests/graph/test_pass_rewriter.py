"""The Rewriter: stable ids, remapped uses, re-sorting, and the ``keep`` contract."""

from __future__ import annotations

import numpy as np
import pytest

from numbagrad.backends import interp
from numbagrad.graph import Builder, Node
from numbagrad.graph import ops as O
from numbagrad.graph.rewriter import Rewriter


def _graph():
    b = Builder("g")
    x = b.leaf("input", (2, 3), "float32", "x")
    s = b.leaf("state", (2, 3), "float32", "s")
    y = O.exp(x)
    z = y * 2.0
    w = z + s
    return b.build([w, z], updates=[(s, w)], output_names=["w", "z"]), (x, s, y, z, w)


def test_unchanged_rewriter_returns_the_same_graph():
    g, _ = _graph()
    assert Rewriter(g).build() is g


def test_replace_remaps_users_outputs_and_updates():
    g, (x, s, y, z, w) = _graph()
    rw = Rewriter(g)
    t = rw.add("tanh", [x.id], name="t")
    assert t.id == max(n.id for n in g) + 1
    rw.replace(y.id, t.id)
    g2 = rw.build()
    assert y.id not in g2 and g2[z.id].inputs[0] == t.id
    assert [n.id for n in g2].index(t.id) < [n.id for n in g2].index(z.id)
    rw = Rewriter(g2)
    rw.replace(w.id, z.id)  # an output and an update value
    g3 = rw.build()
    assert g3.outputs == (z.id, z.id) and g3.updates == ((s.id, z.id),)
    assert g3.output_names == ("w", "z")


def test_set_keeps_the_id_and_resorts_when_needed():
    g, (x, s, y, z, w) = _graph()
    rw = Rewriter(g)
    late = rw.add("neg", [w.id])  # sorts after w
    rw.set(Node(y.id, "sigmoid", (x.id,), {}, y.shape, y.dtype))
    rw.replace(late.id, late.id)  # no-op
    g2 = rw.build()
    assert g2[y.id].op == "sigmoid" and late.id in g2
    # a node redefined to read a later node forces a topological re-sort
    rw = Rewriter(g2)
    n = rw.add("relu", [x.id])
    rw.set(Node(z.id, "mul", (n.id, y.id), {}, z.shape, z.dtype))
    g3 = rw.build()
    order = [node.id for node in g3]
    assert order.index(n.id) < order.index(z.id)
    feeds = {x.id: np.ones((2, 3), np.float32), s.id: np.zeros((2, 3), np.float32)}
    out = interp.evaluate(g3, feeds)
    np.testing.assert_allclose(out[1], np.ones((2, 3)) / (1 + np.exp(-1.0)), rtol=1e-6)


def test_keep_refuses_replace_and_remove():
    g, (x, s, y, z, w) = _graph()
    rw = Rewriter(g, keep={y.id})
    with pytest.raises(ValueError, match="kept"):
        rw.replace(y.id, x.id)
    with pytest.raises(ValueError, match="kept"):
        rw.remove(y.id)
    with pytest.raises(ValueError, match="graph input"):
        Rewriter(g).replace(x.id, y.id)


def test_type_mismatch_and_dangling_reads_are_refused():
    g, (x, s, y, z, w) = _graph()
    rw = Rewriter(g)
    c = rw.add_const(np.zeros(3), "float32")
    with pytest.raises(ValueError, match="cannot stand for"):
        rw.replace(y.id, c.id)
    rw = Rewriter(g)
    rw.remove(y.id)
    with pytest.raises(ValueError, match="reads removed"):
        rw.build()
