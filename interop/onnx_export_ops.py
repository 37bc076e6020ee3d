"""numbagrad ops as standard ONNX operators (opset 18), for ``to_onnx``. Each writer takes the
Emitter, the node's op attributes and the ONNX names of its inputs, and returns the ONNX name
of its output. Fused nodes (``fused_elementwise``, ``*_epilogue``) expand back into their
steps, so an optimized graph exports as plainly as a traced one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

WRITERS: dict[str, Callable] = {}

_SIMPLE = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "neg": "Neg", "exp": "Exp",
    "log": "Log", "sqrt": "Sqrt", "abs": "Abs", "relu": "Relu", "tanh": "Tanh",
    "sigmoid": "Sigmoid", "erf": "Erf", "sign": "Sign", "maximum": "Max", "minimum": "Min",
    "select": "Where", "greater": "Greater", "greater_equal": "GreaterOrEqual",
    "equal": "Equal", "stop_gradient": "Identity",
}  # fmt: skip


def writes(*ops: str):
    def register(fn):
        for op in ops:
            WRITERS[op] = fn
        return fn

    return register


def _simple(onnx_op: str):
    return lambda em, attrs, ins: em.node(onnx_op, ins)


for _op, _onnx_op in _SIMPLE.items():
    WRITERS[_op] = _simple(_onnx_op)


@writes("pow")
def _pow(em, attrs, ins):
    return em.node("Pow", [ins[0], em.scalar(attrs["exponent"])])


@writes("leaky_relu")
def _leaky_relu(em, attrs, ins):
    return em.node("LeakyRelu", ins, alpha=float(attrs["negative_slope"]))


@writes("elu")
def _elu(em, attrs, ins):
    return em.node("Elu", ins, alpha=float(attrs["alpha"]))


@writes("softplus")
def _softplus(em, attrs, ins):
    beta = float(attrs.get("beta", 1.0))
    if beta == 1.0:
        return em.node("Softplus", ins)
    scaled = em.node("Softplus", [em.node("Mul", [ins[0], em.scalar(beta)])])
    return em.node("Div", [scaled, em.scalar(beta)])


@writes("silu")
def _silu(em, attrs, ins):
    return em.node("Mul", [ins[0], em.node("Sigmoid", ins)])


@writes("prelu")
def _prelu(em, attrs, ins):
    return em.node("PRelu", ins)


@writes("scaled_tanh")
def _scaled_tanh(em, attrs, ins):
    inner = em.node("Tanh", [em.node("Mul", [ins[0], em.scalar(attrs["slope"])])])
    return em.node("Mul", [inner, em.scalar(attrs["amplitude"])])


@writes("cast")
def _cast(em, attrs, ins):
    from onnx import helper

    return em.node("Cast", ins, to=helper.np_dtype_to_tensor_dtype(np.dtype(attrs["dtype"])))


@writes("conv2d")
def _conv(em, attrs, ins):
    (ph, pw) = attrs["padding"]
    return em.node("Conv", ins, strides=list(attrs["stride"]), pads=[ph, pw, ph, pw],
                   dilations=list(attrs["dilation"]), group=int(attrs["groups"]))  # fmt: skip


@writes("conv_transpose2d")
def _conv_transpose(em, attrs, ins):
    (ph, pw) = attrs["padding"]
    return em.node("ConvTranspose", ins, strides=list(attrs["stride"]), pads=[ph, pw, ph, pw],
                   dilations=list(attrs["dilation"]), group=int(attrs["groups"]),
                   output_padding=list(attrs["output_padding"]))  # fmt: skip


@writes("max_pool2d")
def _max_pool(em, attrs, ins):
    (ph, pw) = attrs["padding"]
    return em.node("MaxPool", ins, kernel_shape=list(attrs["kernel"]),
                   strides=list(attrs["stride"]), pads=[ph, pw, ph, pw],
                   dilations=list(attrs["dilation"]))  # fmt: skip


@writes("avg_pool2d")
def _avg_pool(em, attrs, ins):
    (ph, pw) = attrs["padding"]
    return em.node("AveragePool", ins, kernel_shape=list(attrs["kernel"]),
                   strides=list(attrs["stride"]), pads=[ph, pw, ph, pw],
                   count_include_pad=int(attrs["count_include_pad"]))  # fmt: skip


@writes("matmul")
def _matmul(em, attrs, ins):
    a, b = ins
    if em.rank(a) == 2:
        return em.node("Gemm", ins, transA=int(attrs["trans_a"]), transB=int(attrs["trans_b"]))
    a = em.node("Transpose", [a], perm=[0, 2, 1]) if attrs["trans_a"] else a
    b = em.node("Transpose", [b], perm=[0, 2, 1]) if attrs["trans_b"] else b
    return em.node("MatMul", [a, b])


@writes("batch_norm")
def _batch_norm(em, attrs, ins):
    x, mean, inv_std, gamma, beta = ins
    scaled = em.node("Mul", [em.node("Sub", [x, mean]), inv_std])
    return em.node("Add", [em.node("Mul", [scaled, gamma]), beta])


@writes("reshape")
def _reshape(em, attrs, ins, shape=None):
    shape = list(shape or em.out_shape)
    if shape and em.shapes.get(ins[0], ())[:1] == (shape[0],):
        shape[0] = 0  # "as the input's": a leading batch axis stays free for other batch sizes
    return em.node("Reshape", [ins[0], em.ints(shape)])


@writes("transpose")
def _transpose(em, attrs, ins):
    return em.node("Transpose", ins, perm=list(attrs["perm"]))


@writes("broadcast_to")
def _broadcast_to(em, attrs, ins):
    return em.node("Expand", [ins[0], em.ints(attrs["shape"])])


@writes("concat")
def _concat(em, attrs, ins):
    return em.node("Concat", ins, axis=int(attrs["axis"]))


@writes("slice")
def _slice(em, attrs, ins):
    bounds = [em.ints([attrs[k]]) for k in ("start", "stop", "axis")]
    return em.node("Slice", [ins[0], *bounds])


@writes("sum", "mean")
def _reduce(em, attrs, ins):
    op = "ReduceSum" if em.op == "sum" else "ReduceMean"
    return em.node(op, [ins[0], em.ints(attrs["axes"])], keepdims=int(attrs["keepdims"]))


@writes("softmax", "log_softmax")
def _softmax(em, attrs, ins):
    return em.node("Softmax" if em.op == "softmax" else "LogSoftmax", ins, axis=int(attrs["axis"]))


@writes("local_response_norm")
def _lrn(em, attrs, ins):
    return em.node("LRN", ins, size=int(attrs["size"]), alpha=float(attrs["alpha"]),
                   beta=float(attrs["beta"]), bias=float(attrs["k"]))  # fmt: skip


@writes("upsample2d")
def _upsample(em, attrs, ins):
    scale = [1.0, 1.0, *(float(s) for s in attrs["scale"])]
    scales = em.constant(np.array(scale, np.float32))
    if attrs["mode"] == "nearest":
        how = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
               "nearest_mode": "floor"}  # fmt: skip
    else:  # bilinear, PyTorch's align_corners=False
        how = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    return em.node("Resize", [ins[0], "", scales], **how)


def write_body(em, body, operands: list[str]) -> str:
    """A fused body's steps (graph/passes/fuse.py's format) as ONNX nodes over ``operands``."""
    results: list[str] = []
    for op, refs, attrs in body:
        ins = [operands[r] if r >= 0 else results[~r] for r in refs]
        with em.as_op(op):
            results.append(WRITERS[op](em, dict(attrs), ins))
    return results[-1]


@writes("fused_elementwise")
def _fused(em, attrs, ins):
    return write_body(em, attrs["body"], ins)


def _epilogue(producer: str):
    def write(em, attrs, ins):
        from ..graph.passes.epilogue import producer_attrs

        n_main = attrs["n_main"]
        with em.as_op(producer):
            y = WRITERS[producer](em, producer_attrs(attrs), ins[:n_main])
        if attrs["view"] is not None:
            y = _reshape(em, {}, [y], shape=attrs["view"])
        return write_body(em, attrs["body"], [y, *ins[n_main:]])

    return write


for _producer in ("conv2d", "matmul"):
    WRITERS[f"{_producer}_epilogue"] = _epilogue(_producer)
