"""Each ONNX operator numbagrad imports, on one-node models built with onnx.helper, against
onnxruntime (interp backend): the attribute cases exporters write (auto_pad, uneven pads,
ceil_mode, groups, dilation, opset differences) and constant folding of shape arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnx_oracle import rel_err, run_ort, sample  # noqa: E402

import numbagrad as ng  # noqa: E402


def _check(op, x_shape, attrs=None, weights=(), opset=18, n_out=1, x=None, oracle="ort"):
    """Import a model of one ``op`` node on input ``x`` plus constant ``weights`` (arrays,
    initializers), and compare it with onnxruntime (or onnx's reference evaluator, for what
    onnxruntime does not run)."""
    names = ["x"] + [f"w{i}" if w is not None else "" for i, w in enumerate(weights)]
    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights) if w is not None]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name="node", **(attrs or {}))
    x = sample(x_shape) if x is None else x
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    if oracle == "ort":
        expected = run_ort(model.SerializeToString(), x)
    else:
        expected = ReferenceEvaluator(model).run(None, {"x": x})
    got = ng.compile(ng.from_onnx(model), ng.Spec(x_shape), backend="interp")(x)
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert rel_err(g, e) < 1e-5


def _w(*shape, seed=1):
    return sample(shape, seed)


def _i(*values):
    return np.array(values, np.int64)


CONV_CASES = {
    "plain": ({}, (4, 3, 3, 3)),
    "pads_stride": ({"pads": [1, 2, 1, 2], "strides": [2, 1]}, (4, 3, 3, 3)),
    "uneven_pads": ({"pads": [0, 1, 2, 0]}, (4, 3, 3, 3)),
    "same_upper": ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (4, 3, 4, 4)),
    "same_lower": ({"auto_pad": "SAME_LOWER"}, (4, 3, 2, 2)),
    "valid": ({"auto_pad": "VALID"}, (4, 3, 3, 3)),
    "groups_dilation": ({"group": 3, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, (6, 1, 3, 3)),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(case):
    attrs, w_shape = CONV_CASES[case]
    _check("Conv", (2, 3, 9, 8), attrs, [_w(*w_shape), _w(w_shape[0], seed=2)])


def test_conv_1d():
    _check("Conv", (2, 3, 10), {"pads": [1, 1], "strides": [2]}, [_w(4, 3, 3)])


def test_conv_transpose():
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}
    _check("ConvTranspose", (2, 3, 5, 5), attrs, [_w(3, 4, 3, 3), _w(4, seed=2)])
    _check("ConvTranspose", (1, 2, 4, 4), {"pads": [0, 1, 1, 0]}, [_w(2, 3, 3, 3)])


POOL_CASES = {
    "MaxPool": [{"kernel_shape": [2, 2], "strides": [2, 2]},
                {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
                {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "ceil_mode": 1},
                {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
                {"kernel_shape": [2, 2], "dilations": [2, 2]}],
    "AveragePool": [{"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
                    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
                    {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 1],
                     "count_include_pad": 1}],
}  # fmt: skip


@pytest.mark.parametrize("op, attrs", [(op, a) for op, cases in POOL_CASES.items() for a in cases])
def test_pooling(op, attrs):
    _check(op, (2, 3, 9, 8), attrs)


@pytest.mark.parametrize(
    "op, attrs",
    [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}), ("Selu", {}),
     ("Sigmoid", {}), ("Tanh", {}), ("Softplus", {}), ("HardSigmoid", {}), ("HardSwish", {}),
     ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Exp", {}), ("Neg", {}), ("Abs", {}),
     ("Softmax", {"axis": 1}), ("LogSoftmax", {}), ("Identity", {}), ("Erf", {}),
     ("GlobalAveragePool", {}), ("LRN", {"size": 3}), ("Flatten", {"axis": 2}),
     ("Transpose", {"perm": [0, 2, 3, 1]}), ("Dropout", {})],
)  # fmt: skip
def test_unary(op, attrs):
    _check(op, (2, 3, 4, 5), attrs, opset=20 if op == "Gelu" else 18)


def test_sqrt_log_of_positive_input():
    x = np.abs(sample((2, 3))) + 0.5
    _check("Sqrt", (2, 3), x=x)
    _check("Log", (2, 3), x=x)
    _check("Pow", (2, 3), weights=[np.array(1.5, np.float32)], x=x)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
def test_binary_broadcasting(op):
    x = np.abs(sample((2, 3, 4))) + 0.5
    _check(op, (2, 3, 4), weights=[np.abs(_w(3, 1)) + 0.5], x=x)


def test_prelu_and_linear_algebra():
    _check("PRelu", (2, 3, 4, 4), weights=[_w(3, 1, 1)])
    _check("Gemm", (2, 5), {"transB": 1, "alpha": 0.5, "beta": 2.0}, [_w(4, 5), _w(4, seed=2)])
    _check("MatMul", (2, 3, 5), weights=[_w(5, 4)])
    _check("MatMul", (2, 3, 5), weights=[_w(2, 5, 4)])


def test_normalizations():
    stats = [_w(3), _w(3, seed=2), _w(3, seed=3), np.abs(_w(3, seed=4)) + 0.5]
    _check("BatchNormalization", (2, 3, 4, 4), {"epsilon": 1e-3}, stats)
    _check("LayerNormalization", (2, 3, 4), {"axis": -1}, [_w(4), _w(4, seed=2)])
    _check("LayerNormalization", (2, 3, 4), {"axis": 1}, [_w(3, 4)])


def test_shape_ops():
    _check("Reshape", (2, 3, 4), weights=[_i(0, -1)])
    _check("Squeeze", (2, 1, 4), weights=[_i(1)])
    _check("Squeeze", (2, 1, 4), {"axes": [1]}, opset=11)
    _check("Unsqueeze", (2, 4), weights=[_i(0, 3)])
    _check("Slice", (4, 6), weights=[_i(1, -4), _i(3, 100), _i(0, 1)])
    _check("Split", (4, 6), {"axis": 1}, [_i(2, 4)], n_out=2)
    _check("Split", (4, 6), {"axis": 1, "num_outputs": 3}, n_out=3)
    _check("Gather", (4, 6), {"axis": 1}, [_i(5, 0, 2)])
    _check("Gather", (4, 6), {"axis": 0}, [np.array(-1, np.int64)])
    _check("Expand", (3, 1), weights=[_i(2, 3, 4)])
    _check("Tile", (2, 3), weights=[_i(2, 1)])
    _check("Concat", (2, 3), {"axis": 1}, [_w(2, 2)])
    _check("ReduceMean", (2, 3, 4), weights=[_i(1, 2)])
    _check("ReduceSum", (2, 3, 4), {"keepdims": 0}, [_i(-1)])
    _check("ReduceMean", (2, 3, 4), {"axes": [1]}, opset=17)


def test_shape_arithmetic_folds_to_constants():
    """x.reshape(x.shape[0], -1) as the legacy exporter writes it: Shape, Gather, Unsqueeze,
    Concat, Reshape; only the Reshape reaches the graph."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in
             (("zero", _i(0)[0]), ("axes", _i(0)), ("minus1", _i(-1)))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    traced = ng.trace(ng.from_onnx(model), ng.Spec((2, 3, 4)))
    assert [n.op for n in traced.nodes if not n.is_leaf] == ["reshape"]
    x = sample((2, 3, 4))
    assert rel_err(ng.compile(ng.from_onnx(model), ng.Spec((2, 3, 4)), backend="interp")(x),
                   run_ort(model.SerializeToString(), x)[0]) < 1e-6  # fmt: skip


def test_lstm():
    hidden, size = 3, 4
    w, r, b = _w(1, 4 * hidden, size), _w(1, 4 * hidden, hidden, seed=2), _w(1, 8 * hidden, seed=3)
    _check("LSTM", (5, 2, size), {"hidden_size": hidden}, [w, r, b], n_out=3)
    h0, c0 = _w(2, 1, hidden, seed=4), _w(2, 1, hidden, seed=5)
    attrs = {"hidden_size": hidden, "layout": 1}
    # onnxruntime has no batch-first (layout=1) LSTM.
    _check("LSTM", (2, 5, size), attrs, [w, r, None, None, h0, c0], n_out=3, oracle="reference")


def test_resize_clip_and_global_max_pool():
    _check("Resize", (1, 2, 3, 4), {"mode": "nearest"}, [None, np.array([1, 1, 2, 2], np.float32)])
    attrs = {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}
    _check("Resize", (1, 2, 3, 4), attrs, [None, None, _i(1, 2, 9, 12)])
    _check("Clip", (2, 3), weights=[np.array(-0.5, np.float32), np.array(0.5, np.float32)])
    _check("Clip", (2, 3), weights=[None, np.array(6.0, np.float32)])
    _check("GlobalMaxPool", (2, 3, 4, 5))


def test_folding_and_selection_ops():
    """Shape arithmetic through Size, ConstantOfShape, Range, Equal, Where, Cast, CastLike,
    Mul, Div (folded), and on the traced input Sum, Mean, Greater, Where, Reciprocal, Sign."""
    make = helper.make_node
    nodes = [
        make("Shape", ["x"], ["s"]), make("Size", ["x"], ["n"]),
        make("Gather", ["s", "zero"], ["a"], axis=0), make("Unsqueeze", ["a", "axes"], ["u"]),
        make("ConstantOfShape", ["one"], ["c"], value=numpy_helper.from_array(_i(-1))),
        make("Concat", ["u", "c"], ["t0"], axis=0), make("Equal", ["t0", "c"], ["is_free"]),
        make("Where", ["is_free", "t0", "t0"], ["t1"]), make("Mul", ["t1", "one"], ["t2"]),
        make("Div", ["t2", "one"], ["t3"]), make("Cast", ["t3"], ["t4"], to=TensorProto.INT64),
        make("Range", ["a0", "a", "one0"], ["r"]), make("CastLike", ["r", "t4"], ["r1"]),
        make("ReduceSum", ["r1"], ["rs"], keepdims=1), make("Add", ["t4", "rs"], ["t5"]),
        make("Sub", ["t5", "rs"], ["t6"]), make("Reshape", ["x", "t6"], ["flat"]),
        make("Sum", ["flat", "flat", "flat"], ["tri"]), make("Mean", ["tri", "flat"], ["m"]),
        make("Greater", ["m", "zerof"], ["pos"]), make("Reciprocal", ["m"], ["inv"]),
        make("Sign", ["m"], ["sg"]), make("Where", ["pos", "inv", "sg"], ["y"]),
    ]  # fmt: skip
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("zero", np.array(0, np.int64)), ("axes", _i(0)), ("one", _i(1)),
        ("a0", np.array(0, np.int64)), ("one0", np.array(1, np.int64)),
        ("zerof", np.array(0.0, np.float32)))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = sample((2, 3, 4))
    got = ng.compile(ng.from_onnx(model), ng.Spec(x.shape), backend="interp")(x)
    assert rel_err(got, run_ort(model.SerializeToString(), x)[0]) < 1e-6
