"""One NaN pixel through LeNet-5 compiled on cpu (issue 11's regression): the image's logits are
NaN, as on interp (and in PyTorch), not a finite row that the cpu ReLU made by mapping NaN to
0; the other images are untouched; a training step's loss is NaN rather than finite while the
first conv's weights silently turn NaN."""

from __future__ import annotations

import numpy as np
import pytest

import numbagrad as ng
from numbagrad import nn, optim
from numbagrad.models import lenet5

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN is the point

BATCH = 3
SPECS = dict(inputs=ng.Spec((BATCH, 1, 32, 32)), targets=ng.Spec((BATCH,), "int64"))


def _batch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((BATCH, 1, 32, 32)).astype(np.float32)
    return x, np.array([3, 1, 4], np.int64)


@pytest.fixture(scope="module")
def model():
    ng.manual_seed(0)
    return lenet5()


@pytest.mark.parametrize("special", [np.nan, np.inf])
def test_a_nan_or_inf_pixel_gives_nan_logits_on_cpu_like_interp(model, special):
    x, _ = _batch()
    clean = ng.compile(model, SPECS["inputs"], backend="interp")(x)
    x[1, 0, 13, 17] = special
    got = ng.compile(model, SPECS["inputs"], backend="cpu")(x)
    expected = ng.compile(model, SPECS["inputs"], backend="interp")(x)
    assert np.isnan(expected[1]).all()  # inf - inf meets the Inf pixel by the second conv
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[[0, 2]], clean[[0, 2]], rtol=1e-4, atol=1e-5)


def test_gradients_of_a_batch_with_a_nan_pixel_match_interp(model):
    x, y = _batch()
    x[2, 0, 0, 31] = np.nan  # on a corner: under the padding of no conv, in one pool window
    results = {
        b: ng.compile_grad(model, nn.CrossEntropyLoss(), **SPECS, backend=b)(x, y)
        for b in ("cpu", "interp")
    }
    (loss, grads), (ref_loss, ref_grads) = results["cpu"], results["interp"]
    assert np.isnan(loss) and np.isnan(ref_loss)
    assert set(grads) == set(ref_grads)
    for name, g in grads.items():
        np.testing.assert_array_equal(np.isnan(g), np.isnan(ref_grads[name]), err_msg=name)
        finite = ~np.isnan(g)
        np.testing.assert_allclose(g[finite], ref_grads[name][finite], rtol=1e-4, atol=1e-6)
    assert np.isnan(grads["0.weight"]).all()


def test_a_training_step_on_a_nan_pixel_reports_a_nan_loss():
    ng.manual_seed(1)
    net = lenet5()
    step = ng.compile_training(net, nn.CrossEntropyLoss(), optim.SGD(lr=0.05), **SPECS)
    x, y = _batch()
    assert np.isfinite(step(x, y))
    x[0, 0, 5, 5] = np.nan
    assert np.isnan(step(x, y))
    assert np.isnan(net.state_dict()["0.weight"]).all()
