"""Each ONNX operator numbagrad imports, on one-node models built with onnx.helper, against
onnxruntime (interp backend): the attribute cases exporters write (auto_pad, uneven pads,
ceil_mode, groups, dilation, opset differences) and constant folding of shape arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_one_node import check, i64, rand  # noqa: E402
from onnx_oracle import rel_err, run_ort, sample  # noqa: E402

import numbagrad as ng  # noqa: E402

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
    check("Conv", (2, 3, 9, 8), attrs, [rand(*w_shape), rand(w_shape[0], seed=2)])


def test_conv_1d():
    check("Conv", (2, 3, 10), {"pads": [1, 1], "strides": [2]}, [rand(4, 3, 3)])


def test_conv_transpose():
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}
    check("ConvTranspose", (2, 3, 5, 5), attrs, [rand(3, 4, 3, 3), rand(4, seed=2)])
    check("ConvTranspose", (1, 2, 4, 4), {"pads": [0, 1, 1, 0]}, [rand(2, 3, 3, 3)])


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
    check(op, (2, 3, 9, 8), attrs)


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
    check(op, (2, 3, 4, 5), attrs, opset=20 if op == "Gelu" else 18)


def test_sqrt_log_of_positive_input():
    x = np.abs(sample((2, 3))) + 0.5
    check("Sqrt", (2, 3), x=x)
    check("Log", (2, 3), x=x)
    check("Pow", (2, 3), weights=[np.array(1.5, np.float32)], x=x)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
def test_binary_broadcasting(op):
    x = np.abs(sample((2, 3, 4))) + 0.5
    check(op, (2, 3, 4), weights=[np.abs(rand(3, 1)) + 0.5], x=x)


def test_prelu_and_linear_algebra():
    check("PRelu", (2, 3, 4, 4), weights=[rand(3, 1, 1)])
    check("Gemm", (2, 5), {"transB": 1, "alpha": 0.5, "beta": 2.0}, [rand(4, 5), rand(4, seed=2)])
    check("MatMul", (2, 3, 5), weights=[rand(5, 4)])
    check("MatMul", (2, 3, 5), weights=[rand(2, 5, 4)])


def test_normalizations():
    stats = [rand(3), rand(3, seed=2), rand(3, seed=3), np.abs(rand(3, seed=4)) + 0.5]
    check("BatchNormalization", (2, 3, 4, 4), {"epsilon": 1e-3}, stats)
    check("LayerNormalization", (2, 3, 4), {"axis": -1}, [rand(4), rand(4, seed=2)])
    check("LayerNormalization", (2, 3, 4), {"axis": 1}, [rand(3, 4)])


def test_shape_ops():
    check("Reshape", (2, 3, 4), weights=[i64(0, -1)])
    check("Squeeze", (2, 1, 4), weights=[i64(1)])
    check("Squeeze", (2, 1, 4), {"axes": [1]}, opset=11)
    check("Unsqueeze", (2, 4), weights=[i64(0, 3)])
    check("Slice", (4, 6), weights=[i64(1, -4), i64(3, 100), i64(0, 1)])
    check("Split", (4, 6), {"axis": 1}, [i64(2, 4)], n_out=2)
    check("Split", (4, 6), {"axis": 1, "num_outputs": 3}, n_out=3)
    check("Gather", (4, 6), {"axis": 1}, [i64(5, 0, 2)])
    check("Gather", (4, 6), {"axis": 0}, [np.array(-1, np.int64)])
    check("Expand", (3, 1), weights=[i64(2, 3, 4)])
    check("Tile", (2, 3), weights=[i64(2, 1)])
    check("Concat", (2, 3), {"axis": 1}, [rand(2, 2)])
    check("ReduceMean", (2, 3, 4), weights=[i64(1, 2)])
    check("ReduceSum", (2, 3, 4), {"keepdims": 0}, [i64(-1)])
    check("ReduceMean", (2, 3, 4), {"axes": [1]}, opset=17)


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
             (("zero", i64(0)[0]), ("axes", i64(0)), ("minus1", i64(-1)))]  # fmt: skip
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


def test_resize_clip_and_global_max_pool():
    check("Resize", (1, 2, 3, 4), {"mode": "nearest"}, [None, np.array([1, 1, 2, 2], np.float32)])
    attrs = {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}
    check("Resize", (1, 2, 3, 4), attrs, [None, None, i64(1, 2, 9, 12)])
    check("Clip", (2, 3), weights=[np.array(-0.5, np.float32), np.array(0.5, np.float32)])
    check("Clip", (2, 3), weights=[None, np.array(6.0, np.float32)])
    check("GlobalMaxPool", (2, 3, 4, 5))


def test_folding_and_selection_ops():
    """Shape arithmetic through Size, ConstantOfShape, Range, Equal, Where, Cast, CastLike,
    Mul, Div (folded), and on the traced input Sum, Mean, Greater, Where, Reciprocal, Sign."""
    make = helper.make_node
    nodes = [
        make("Shape", ["x"], ["s"]), make("Size", ["x"], ["n"]),
        make("Gather", ["s", "zero"], ["a"], axis=0), make("Unsqueeze", ["a", "axes"], ["u"]),
        make("ConstantOfShape", ["one"], ["c"], value=numpy_helper.from_array(i64(-1))),
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
        ("zero", np.array(0, np.int64)), ("axes", i64(0)), ("one", i64(1)),
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
