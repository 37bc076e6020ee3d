"""The references of the hand-written kernels against PyTorch on NaN and +-Inf inputs (issue
11): values and gradients (torch autograd), on interp and on the optimized (fused) cpu backend,
with inputs built to hit the corner cases: several NaNs in one pooling window (the last wins),
ties of +Inf (the first wins), an all -Inf window beside padding, softmax rows with +Inf, -Inf
or only -Inf, a NaN pixel under a convolution, ..."""

from __future__ import annotations

import nonfinite_cases as nc
import numpy as np
import op_cases as oc
import pytest

from numbagrad.graph import Builder
from numbagrad.graph import ops as O

torch = pytest.importorskip("torch")
TF = torch.nn.functional
pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

import _op_harness as h  # noqa: E402  (tests/engine's harness; imports torch)

NAN, INF = nc.NAN, nc.INF


def distinct(shape, seed=0) -> np.ndarray:
    """Distinct finite values in [-2, 2) (no accidental max-pool ties), float64."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n).reshape(shape) / n - 0.5) * 4


def pool_input() -> np.ndarray:
    x = distinct((1, 2, 6, 6))
    x[0, 0, 0, :2] = NAN  # two NaNs and
    x[0, 0, 1, 1] = NAN  # a third in the first 2x2 window: the last NaN wins
    x[0, 0, 2, 3] = x[0, 0, 3, 2] = INF  # a tie of +Inf: the first wins
    x[0, 0, 5, 5] = -INF
    x[0, 1, :2, :2] = -INF  # a window of -Inf only (with padding: padding must not win)
    x[0, 1, 4, :] = INF
    x[0, 1, 5, 0] = NAN
    return x


def softmax_input(rows: int = 6, cols: int = 5) -> np.ndarray:
    x = distinct((rows, cols), seed=1)
    x[0, 1] = INF  # +Inf: inf - inf is NaN, the row is NaN (as torch)
    x[1, :2] = -INF  # -Inf entries: probability 0
    x[2, :] = -INF  # only -Inf: NaN
    x[3, 2] = NAN
    x[4, :2] = INF  # two +Inf: NaN too
    return x


def conv_input() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = distinct((2, 2, 6, 5))
    x[0, 0, 2, 2] = NAN  # one NaN pixel, inside
    x[0, 1, 0, 4] = INF  # +Inf on a corner, under the padding
    x[1, 0, 5, 0] = -INF
    w, b = distinct((3, 2, 3, 3), seed=2), distinct((3,), seed=3)
    return x, w, b


def _nan_weight(wb):
    w, b = wb
    w = w.copy()
    w[1, 0, 0, 0] = NAN
    w[2, 1, 2, 1] = INF
    return w, b


X_POOL, X_SOFT, (X_CONV, W_CONV, B_CONV) = pool_input(), softmax_input(), conv_input()
W_NAN, _ = _nan_weight((W_CONV, B_CONV))
LOGITS = softmax_input(6, 4)
TARGETS = np.array([1, 0, 3, 2, 2, 1])  # row 1's target has logit -Inf: the loss is +Inf
A_MM = distinct((3, 4))
A_MM[0, 1], A_MM[2, 3] = NAN, INF

CASES = [  # (id, op-API function, torch function, operands)
    ("max_pool2", lambda x: O.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), [X_POOL]),
    (
        "max_pool3s2p1",
        lambda x: O.max_pool2d(x, 3, 2, 1),
        lambda x: TF.max_pool2d(x, 3, 2, 1),
        [X_POOL],
    ),
    (
        "max_pool2_d2",
        lambda x: O.max_pool2d(x, 2, 1, 0, 2),
        lambda x: TF.max_pool2d(x, 2, 1, 0, 2),
        [X_POOL],
    ),
    (
        "avg_pool3s2p1_exclude",
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        lambda x: TF.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        [X_POOL],
    ),
    ("avg_pool2", lambda x: O.avg_pool2d(x, 2), lambda x: TF.avg_pool2d(x, 2), [X_POOL]),
    (
        "conv2d_relu_pool",  # the epilogue (bias + relu) and pooling of a LeNet layer
        lambda x, w, b: O.max_pool2d(O.relu(O.conv2d(x, w, b, padding=1)), 2),
        lambda x, w, b: TF.max_pool2d(torch.relu(TF.conv2d(x, w, b, padding=1)), 2),
        [X_CONV, W_CONV, B_CONV],
    ),
    (
        "conv2d_nan_weight",
        lambda x, w, b: O.conv2d(x, w, b, padding=1),
        lambda x, w, b: TF.conv2d(x, w, b, padding=1),
        [distinct(X_CONV.shape), W_NAN, B_CONV],
    ),
    (
        "conv2d_s2_d2",
        lambda x, w: O.conv2d(x, w, stride=2, padding=2, dilation=2),
        lambda x, w: TF.conv2d(x, w, stride=2, padding=2, dilation=2),
        [X_CONV, W_CONV],
    ),
    (
        "matmul_bias_tanh",
        lambda a, b, c: O.tanh(O.matmul(a, b) + c),
        lambda a, b, c: torch.tanh(a @ b + c),
        [A_MM, distinct((4, 5)), distinct((5,))],
    ),
    ("softmax", lambda x: O.softmax(x, 1), lambda x: torch.softmax(x, 1), [X_SOFT]),
    ("softmax_axis0", lambda x: O.softmax(x, 0), lambda x: torch.softmax(x, 0), [X_SOFT]),
    ("log_softmax", lambda x: O.log_softmax(x), lambda x: torch.log_softmax(x, -1), [X_SOFT]),
    (
        "log_softmax_long_rows",
        lambda x: O.log_softmax(x),
        lambda x: torch.log_softmax(x, -1),
        [softmax_input(5, 150)],
    ),
    (
        "cross_entropy",  # the fused softmax + cross-entropy op
        O.cross_entropy,
        lambda x, t: TF.cross_entropy(x, t),
        [LOGITS, TARGETS],
    ),
    (
        "cross_entropy_finite_rows",  # -Inf off the targets: a finite loss
        O.cross_entropy,
        lambda x, t: TF.cross_entropy(x, t),
        [
            np.where([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], -INF, distinct((3, 4), 4)),
            [3, 0, 1],
        ],
    ),
    ("sum", lambda x: O.sum(x, 1), lambda x: torch.sum(x, 1), [X_SOFT]),
    ("mean", lambda x: O.mean(x, 0), lambda x: torch.mean(x, 0), [X_SOFT]),
    (
        "mse_loss",
        lambda a, b: O.mse_loss(a, b),
        lambda a, b: TF.mse_loss(a, b),
        [X_SOFT[3:], distinct((3, 5))],
    ),
    (
        "local_response_norm",  # a NaN or Inf spreads over its neighbours' channel windows
        lambda x: O.local_response_norm(x, 3, alpha=0.5, beta=0.75, k=1.0),
        lambda x: TF.local_response_norm(x, 3, alpha=0.5, beta=0.75, k=1.0),
        [X_POOL[:, :, 3:, 3:].repeat(2, axis=1)],
    ),
    (
        "upsample_nearest",
        lambda x: O.upsample2d(x, 2),
        lambda x: TF.interpolate(x, scale_factor=2),
        [X_POOL[:, :, :3, :3]],
    ),
    (
        "upsample_bilinear",
        lambda x: O.upsample2d(x, (2, 3), "bilinear"),
        lambda x: TF.interpolate(x, scale_factor=(2, 3), mode="bilinear"),
        [X_POOL[:, :, 3:, 3:]],
    ),
]


@pytest.mark.parametrize("backend", ["interp", "cpu"])
@pytest.mark.parametrize(
    ("fn", "torch_fn", "operands"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_values_and_gradients_match_torch_on_nan_and_inf(backend, fn, torch_fn, operands):
    """Forward and every gradient (a finite upstream gradient, so a NaN gradient can only come
    from the op itself) agree with torch, NaN for NaN and Inf for Inf."""
    operands = [np.ascontiguousarray(a) for a in operands]
    shape = torch_fn(*(torch.from_numpy(a) for a in operands)).shape
    weights = np.linspace(0.5, 1.5, int(np.prod(shape))).reshape(shape)
    out, grads = h.forward_backward(fn, operands, weights, backend=backend)
    t_out, t_grads = h.torch_forward_backward(torch_fn, operands, weights)
    nc.assert_same(out, t_out, "forward", 1e-10, 1e-12)
    for k, (g, t) in enumerate(zip(grads, t_grads)):
        if operands[k].dtype.kind == "f":
            nc.assert_same(g, t, f"gradient of operand {k}", 1e-10, 1e-12)


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_max_pool_indices_match_torch_on_nan_and_inf(backend):
    """The argmax as torch's return_indices picks it: the last NaN of a window, else the first
    maximum among the taps inside the input."""
    for k, s, p in ((2, 2, 0), (3, 2, 1), (3, 1, 1)):
        b = Builder()
        x = b.leaf("input", X_POOL.shape, "float64", "x")
        graph = b.build([O.max_pool2d_indices(x, k, s, p)])
        (got,), _ = oc.run(backend, graph, {x.id: X_POOL})
        _, expected = TF.max_pool2d(torch.from_numpy(X_POOL), k, s, p, return_indices=True)
        np.testing.assert_array_equal(got, expected.numpy(), err_msg=f"kernel {k} stride {s}")
