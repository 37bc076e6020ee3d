"""One-node ONNX models built with onnx.helper, imported and compared with onnxruntime (or
onnx's reference evaluator, for what onnxruntime does not run): the harness of the operator
tests (test_onnx_ops*.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_oracle import rel_err, run_ort, sample

import numbagrad as ng


def one_node_model(op, x_shape, attrs=None, weights=(), opset=18, n_out=1, dtype=np.float32,
                   out_shape=None):  # fmt: skip
    """A model of one ``op`` node on input ``x`` plus constant ``weights`` (arrays, stored as
    initializers; None for an omitted optional input). ``out_shape``: the output's, for
    operators that onnx's shape inference does not know."""
    names = ["x"] + [f"w{i}" if w is not None else "" for i, w in enumerate(weights)]
    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights) if w is not None]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name="node", **(attrs or {}))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    out_elem = onnx.TensorProto.INT64 if op in ("ArgMax", "ArgMin") else elem
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", elem, list(x_shape))],
        [helper.make_tensor_value_info(o, out_elem, out_shape) for o in outs],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def check(op, x_shape, attrs=None, weights=(), opset=18, n_out=1, x=None, oracle="ort",
          backends=("interp",), out_shape=None):  # fmt: skip
    """Import a one-node model and compare it with the oracle on each of ``backends``."""
    model = one_node_model(op, x_shape, attrs, weights, opset, n_out, out_shape=out_shape)
    x = sample(x_shape) if x is None else x
    if oracle == "ort":
        expected = run_ort(model.SerializeToString(), x)
    else:
        expected = ReferenceEvaluator(model).run(None, {"x": x})
    for backend in backends:
        got = ng.compile(ng.from_onnx(model), ng.Spec(x_shape), backend=backend)(x)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and g.dtype == e.dtype, backend
            assert rel_err(g, e) < 1e-5, backend


def gradcheck(op, x_shape, attrs=None, weights=(), opset=18, n_out=1, out_shape=None) -> bool:
    """ng.gradcheck of the imported one-node model in float64: reverse mode against finite
    differences, for the input and every float initializer (each a parameter)."""
    weights = [None if w is None else _as_float64(w) for w in weights]
    model = one_node_model(op, x_shape, attrs, weights, opset, n_out, np.float64, out_shape)
    x = np.random.default_rng(3).standard_normal(x_shape)
    return ng.gradcheck(ng.from_onnx(model), x)


def _as_float64(w: np.ndarray) -> np.ndarray:
    return w.astype(np.float64) if np.issubdtype(w.dtype, np.floating) else w


def rand(*shape, seed=1):
    return sample(shape, seed)


def i64(*values):
    return np.array(values, np.int64)
