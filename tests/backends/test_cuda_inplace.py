"""In-place execution on the cuda backend (simulator): a dropout planned over the input that
dies at it (graph/memory.py ``may_overwrite``) computes what the NumPy reference does."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_setup import require_cuda_backend  # first: it chooses the simulator

from numbagrad.backends import interp
from numbagrad.graph import Builder
from numbagrad.graph import ops as O
from numbagrad.graph.memory import plan_memory, verify_plan

cuda = require_cuda_backend()

# The simulator runs dropout's 64-bit hash in NumPy scalars, which warn as they wrap around.
pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore:overflow encountered")]


def test_dropout_over_its_dying_input_matches_the_reference():
    b = Builder()
    x = b.leaf("input", (3, 10), "float32", "x")
    step = b.leaf("input", (), "float64", "step")
    h = O.sigmoid(x)
    d = O.dropout(h, step, p=0.3, seed=11)
    g = b.build([d * 2.0])
    plan = plan_memory(g)
    verify_plan(g, plan)
    assert plan.inplace.get(d.id) == h.id
    feeds = {x.id: np.linspace(-3, 3, 30, dtype=np.float32).reshape(3, 10), step.id: np.array(2.0)}
    expected = interp.evaluate(g, feeds)[0]
    assert 0 < np.count_nonzero(expected) < expected.size
    exe = cuda.compile(g, feeds, plan)
    exe.run()
    out = exe.output_arrays()[0]
    np.testing.assert_allclose(getattr(out, "copy_to_host", lambda: out)(), expected, rtol=1e-6)
