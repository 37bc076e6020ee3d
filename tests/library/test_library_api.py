"""Custom ops through the public API only (issue 13): custom_demo.py's elementwise op, opaque op
(cpu kernel, and cuda kernel on the CUDA simulator) and custom_vjp function pass opcheck and
gradcheck, train a small model with compile_training on interp and cpu alike, and a saved
training step resumes in a fresh process that imports the defining module, with identical
losses (and, before that import, is refused naming the op and its module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cuda_setup  # noqa: F401  (first: the CUDA simulator, before custom_demo imports numba.cuda)
import custom_demo as demo
import numpy as np
import pytest

import numbagrad as ng
from numbagrad import functional as F
from numbagrad import library, nn, optim
from numbagrad.errors import BackendError, OpError

RNG = np.random.default_rng(0)
X, Y = (
    RNG.standard_normal((5, 4)).astype(np.float32),
    RNG.standard_normal((5, 3)).astype(np.float32),
)


def _cuda_runs() -> bool:
    try:
        ng.compile(nn.Linear(1, 1), ng.Spec((1, 1)), backend="cuda")
    except BackendError:
        return False
    return True


def test_each_op_passes_opcheck():
    x = RNG.standard_normal((3, 5))
    assert library.opcheck(demo.softsign, x) == ["shape rule", "template", "vjp", "save/load"]
    for reverse in (False, True):
        checks = library.opcheck(demo.cumsum_last, x.astype(np.float32), reverse=reverse)
        kernels = ["cpu kernel", "cuda kernel"] if _cuda_runs() else ["cpu kernel"]
        assert checks == ["shape rule", *kernels, "vjp", "save/load"]
    assert library.opcheck(demo.smooth_abs, x, eps=0.5) == ["vjp", "save/load"]


def test_called_on_arrays_they_compute_their_definitions():
    x = RNG.standard_normal((2, 3))
    np.testing.assert_array_equal(demo.softsign(x), x / (1 + np.abs(x)))
    np.testing.assert_allclose(demo.cumsum_last(x, reverse=True)[:, 0], x.sum(axis=1))
    np.testing.assert_allclose(demo.smooth_abs(x, eps=0.25), np.sqrt(x * x + 0.25))


def test_gradcheck_of_the_model_and_of_a_function():
    ng.manual_seed(1)
    assert ng.gradcheck(demo.DemoNet(), X)
    x = RNG.standard_normal((2, 4))
    assert ng.gradcheck(lambda a, b: demo.cumsum_last(demo.softsign(a) * b) * a, x, x[::-1])


def _train(backend: str, steps: int) -> tuple[list[float], object]:
    ng.manual_seed(0)
    step = ng.compile_training(
        demo.DemoNet(),
        nn.MSELoss(),
        optim.Adam(0.05),
        ng.Spec(X.shape),
        ng.Spec(Y.shape),
        backend=backend,
        strict=backend != "interp",  # every op has a kernel there: no reference runs
    )
    return [step(X, Y) for _ in range(steps)], step


BACKENDS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_agrees_with_interp(backend):
    if backend == "cuda" and not _cuda_runs():
        pytest.skip("the cuda backend cannot run here")
    expected, _ = _train("interp", 6)
    losses, step = _train(backend, 6)
    np.testing.assert_allclose(losses, expected, rtol=2e-5)
    assert losses[-1] < 0.8 * losses[0]
    assert step.forward.impl_counts().get("reference", 0) == 0


RESUME = """
import json, sys
import numpy as np
import numbagrad as ng
from numbagrad.errors import SavedModelError

path, x, y = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
try:
    ng.load(path)
except SavedModelError as e:
    refusal = str(e)
import custom_demo  # noqa: F401  (registers the ops)
step = ng.load(path)
print(json.dumps({"refusal": refusal, "losses": [step(x, y) for _ in range(3)]}))
"""


def test_saved_step_resumes_in_a_fresh_process_with_identical_losses(tmp_path):
    _, step = _train("cpu", 3)
    path = step.save(tmp_path / "step.npz")
    expected = [step(X, Y) for _ in range(3)]
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    script = tmp_path / "resume.py"
    script.write_text(textwrap.dedent(RESUME))
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(demo.__file__).parent), env.get("PYTHONPATH", "")]
    )
    files = [str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    done = subprocess.run(
        [sys.executable, str(script), *files], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["losses"] == expected
    assert "custom op 'testlib::" in result["refusal"]
    assert "defined in module custom_demo, which this process has not imported" in result["refusal"]


def test_template_attributes_are_checked_literals():
    @library.custom_op("testlib::leaky", elementwise="({0} if {0} > 0.0 else {0} * {slope})")
    def leaky(x, *, slope=0.01):
        return np.where(x > 0, x, x * slope)

    leaky.register_vjp(lambda ctx, g: [F.select(ctx.input(0) > 0.0, g, g * ctx.attrs["slope"])])
    x = RNG.standard_normal((3, 4))
    assert "template" in library.opcheck(leaky, x, slope=-2)  # an int: written as -2.0
    with pytest.raises(
        OpError, match=r"testlib::leaky: attribute slope=nan must be a finite number"
    ):
        leaky(x, slope=float("nan"))
    with pytest.raises(OpError, match=r"testlib::leaky: attribute slope='a' must be a finite"):
        library.custom_vjp(name="testlib::wraps_leaky")(lambda v: leaky(v, slope="a"))(x)
