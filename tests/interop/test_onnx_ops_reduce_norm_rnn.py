"""ONNX reductions (ReduceMax/Min/SumSquare/L1/L2, ArgMax/ArgMin), InstanceNormalization,
GroupNormalization (opset 21: onnx.checker refuses opset 18's as deprecated), and LSTM/GRU
in every direction, on one-node models against onnxruntime (interp, and cpu for one case of
each family), with float64 gradients against finite differences where they are
differentiable."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx_one_node import check, gradcheck, i64, one_node_model, rand  # noqa: E402

import numbagrad as ng  # noqa: E402
from numbagrad.errors import OnnxError  # noqa: E402

REDUCE_CASES = [  # (op, input shape, attrs, axes input or None, opset)
    ("ReduceMax", (2, 3, 4, 5), {}, i64(1, 3), 18),
    ("ReduceMax", (2, 3, 4), {"axes": [2], "keepdims": 0}, None, 17),
    ("ReduceMax", (2, 3, 4), {"keepdims": 0}, None, 18),
    ("ReduceMin", (2, 3, 4), {}, i64(-1), 18),
    ("ReduceMin", (2, 3, 4, 5), {"keepdims": 0}, i64(0, 2), 18),
    ("ReduceSumSquare", (2, 3, 4), {}, i64(1), 18),
    ("ReduceL1", (2, 3, 4), {"keepdims": 0}, i64(0, 2), 18),
    ("ReduceL2", (2, 3, 4), {}, i64(2), 18),
]


@pytest.mark.parametrize("op, shape, attrs, axes, opset", REDUCE_CASES)
def test_reductions(op, shape, attrs, axes, opset):
    check(op, shape, attrs, [] if axes is None else [axes], opset=opset)


@pytest.mark.parametrize(
    "op, attrs", [("ArgMax", {"axis": 1}), ("ArgMin", {"axis": -1, "keepdims": 0})]
)
def test_arg_max_min(op, attrs):
    check(op, (2, 3, 4), attrs)


def test_reductions_on_cpu():
    check("ReduceMax", (2, 3, 4, 5), {}, [i64(1, 3)], backends=("cpu",))
    check("ArgMax", (2, 3, 4), {"axis": 1, "keepdims": 0}, backends=("cpu",))


@pytest.mark.parametrize("op, axes", [("ReduceMax", i64(1, 2)), ("ReduceMin", i64(0)),
                                      ("ReduceL2", i64(1))])  # fmt: skip
def test_reduction_gradients(op, axes):
    assert gradcheck(op, (2, 3, 2), {}, [axes])


NORM_CASES = {  # name -> (op, input shape, attrs, weights, opset)
    "instance": ("InstanceNormalization", (2, 3, 4, 5), {"epsilon": 1e-3},
                 [rand(3), rand(3, seed=2)], 18),
    "instance_1d": ("InstanceNormalization", (2, 3, 6), {}, [rand(3), rand(3, seed=2)], 18),
    "group": ("GroupNormalization", (2, 6, 3, 2), {"num_groups": 3, "epsilon": 1e-3},
              [rand(6), rand(6, seed=2)], 21),
}  # fmt: skip


@pytest.mark.parametrize("name", list(NORM_CASES))
def test_normalizations(name):
    op, shape, attrs, weights, opset = NORM_CASES[name]
    check(op, shape, attrs, weights, opset=opset, out_shape=shape)


def test_normalizations_on_cpu():
    op, shape, attrs, weights, opset = NORM_CASES["instance"]
    check(op, shape, attrs, weights, opset=opset, backends=("cpu",))


@pytest.mark.parametrize("name", ["instance", "group"])
def test_normalization_gradients(name):
    op, shape, attrs, weights, opset = NORM_CASES[name]
    shape = shape[:2] + (2, 2)
    assert gradcheck(op, shape, attrs, weights, opset=opset, out_shape=shape)


def _rnn_weights(op, directions, size, hidden, seed=1):
    gates = 4 if op == "LSTM" else 3
    return [rand(directions, gates * hidden, size, seed=seed),
            rand(directions, gates * hidden, hidden, seed=seed + 1),
            rand(directions, 2 * gates * hidden, seed=seed + 2)]  # fmt: skip


RNN_CASES = {  # name -> (op, attrs, with initial states)
    "lstm_forward": ("LSTM", {}, False),
    "lstm_reverse": ("LSTM", {"direction": "reverse"}, True),
    "lstm_bidirectional": ("LSTM", {"direction": "bidirectional"}, True),
    "gru_forward": ("GRU", {}, False),
    "gru_reset_after": ("GRU", {"linear_before_reset": 1, "direction": "reverse"}, True),
    "gru_bidirectional": ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}, True),
}


def _rnn_case(name, steps=5, batch=2, size=4, hidden=3, layout=0):
    op, attrs, with_states = RNN_CASES[name]
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    weights = _rnn_weights(op, directions, size, hidden)
    if with_states:
        state = (batch, directions, hidden) if layout else (directions, batch, hidden)
        weights += [None] + [rand(*state, seed=s) for s in range(4, 4 + (op == "LSTM") + 1)]
    x_shape = (batch, steps, size) if layout else (steps, batch, size)
    attrs = {**attrs, "hidden_size": hidden, "layout": layout}
    return op, x_shape, attrs, weights, 3 if op == "LSTM" else 2


@pytest.mark.parametrize("name", list(RNN_CASES))
def test_recurrent(name):
    op, x_shape, attrs, weights, n_out = _rnn_case(name)
    check(op, x_shape, attrs, weights, n_out=n_out)


@pytest.mark.parametrize("name", ["lstm_bidirectional", "gru_bidirectional"])
def test_recurrent_batch_first(name):
    """onnxruntime has no batch-first (layout=1) LSTM or GRU: onnx's reference evaluator."""
    op, x_shape, attrs, weights, n_out = _rnn_case(name, layout=1)
    check(op, x_shape, attrs, weights, n_out=n_out, oracle="reference")


def test_recurrent_on_cpu():
    op, x_shape, attrs, weights, n_out = _rnn_case("gru_bidirectional", steps=3)
    check(op, x_shape, attrs, weights, n_out=n_out, backends=("cpu",))


@pytest.mark.parametrize("name", ["lstm_bidirectional", "gru_forward", "gru_reset_after"])
def test_recurrent_gradients(name):
    op, x_shape, attrs, weights, _ = _rnn_case(name, steps=3, size=2, hidden=2)
    assert gradcheck(op, x_shape, attrs, weights)  # through Y, every step's hidden state


@pytest.mark.parametrize(
    "op, x_shape, attrs, weights, words",
    [("ArgMax", (2, 3), {"select_last_index": 1}, [], "select_last_index"),
     ("LSTM", (3, 2, 4), {"hidden_size": 3, "clip": 1.0}, _rnn_weights("LSTM", 1, 4, 3), "clip"),
     ("GRU", (3, 2, 4), {"hidden_size": 3, "activations": ["Relu", "Tanh"]},
      _rnn_weights("GRU", 1, 4, 3), "activations")],
)  # fmt: skip
def test_unsupported_variants_are_refused_naming_the_node(op, x_shape, attrs, weights, words):
    model = one_node_model(op, x_shape, attrs, weights, n_out=1)
    with pytest.raises(OnnxError) as info:
        ng.compile(ng.from_onnx(model), ng.Spec(x_shape), backend="interp")
    message = str(info.value)
    assert "\n" not in message and "'node'" in message and op in message and words in message
