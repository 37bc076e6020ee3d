"""The op VJP case tables: one or more cases per differentiable op, checked against finite
differences in test_ops_vjp_cases.py (which also checks that every registered op has a case).
Imported by name: tests/conftest.py puts this folder on sys.path."""

from __future__ import annotations

import _vjp_harness as _h  # a sibling helper (tests/conftest.py)

from numbagrad.graph import ops as O

Case, _conv = _h.Case, _h._conv

X4 = (2, 3, 5, 4)


def _c(id, op, operands, build):
    return Case(id, op, tuple((tuple(s), k) for s, k in operands), build)


ELEMENTWISE_CASES = [
    _c("add_same", "add", [((2, 3), "f"), ((2, 3), "f")], O.add),
    _c("add_bcast_314_21", "add", [((3, 1, 4), "f"), ((2, 1), "f")], O.add),
    _c("add_bcast_21_314", "add", [((2, 1), "f"), ((3, 1, 4), "f")], O.add),
    _c("add_scalar_param", "add", [((2, 3), "f"), ((), "f")], O.add),
    _c("add_python_scalar", "add", [((2, 3), "f")], lambda a: a + 2.5),
    _c("add_self", "add", [((2, 3), "f")], lambda a: a + a),
    _c("sub_bcast", "sub", [((3, 1, 4), "f"), ((2, 1), "f")], O.sub),
    _c("sub_bcast_first", "sub", [((4,), "f"), ((3, 4), "f")], O.sub),
    _c("sub_scalar_param", "sub", [((), "f"), ((2, 3), "f")], O.sub),
    _c("sub_rscalar", "sub", [((2, 3), "f")], lambda a: 1.5 - a),
    _c("mul_bcast", "mul", [((3, 1, 4), "f"), ((2, 1), "f")], O.mul),
    _c("mul_scalar_param", "mul", [((), "f"), ((2, 3), "f")], O.mul),
    _c("mul_python_scalar", "mul", [((2, 3), "f")], lambda a: a * -3.0),
    _c("mul_self", "mul", [((2, 3), "f")], lambda a: a * a),
    _c("div_bcast", "div", [((3, 1, 4), "f"), ((2, 1), "pos")], O.div),
    _c("div_bcast_first", "div", [((4,), "f"), ((3, 4), "pos")], O.div),
    _c("div_scalar_param", "div", [((2, 3), "f"), ((), "pos")], O.div),
    _c("div_rscalar", "div", [((2, 3), "pos")], lambda a: 1.0 / a),
    _c("neg", "neg", [(X4, "f")], O.neg),
    _c("exp", "exp", [(X4, "f")], O.exp),
    _c("exp_0d", "exp", [((), "f")], O.exp),
    _c("log", "log", [(X4, "pos")], O.log),
    _c("sqrt", "sqrt", [(X4, "pos")], O.sqrt),
    _c("abs", "abs", [(X4, "away")], O.abs),
    _c("sign", "sign", [(X4, "away")], O.sign),
    _c("relu", "relu", [(X4, "away")], O.relu),
    _c("relu_1d", "relu", [((7,), "away")], O.relu),
    _c("tanh", "tanh", [(X4, "f")], O.tanh),
    _c("sigmoid", "sigmoid", [(X4, "f")], O.sigmoid),
    _c("broadcast_31_234", "broadcast_to", [((3, 1), "f")], lambda a: O.broadcast_to(a, (2, 3, 4))),
    _c("broadcast_0d", "broadcast_to", [((), "f")], lambda a: O.broadcast_to(a, (2, 3))),
    _c("broadcast_4_34", "broadcast_to", [((4,), "f")], lambda a: O.broadcast_to(a, (3, 4))),
    _c(
        "fused_mul_add_tanh_bcast",
        "fused_elementwise",
        [(X4, "f"), ((3, 1, 1), "f"), ((4,), "f")],
        lambda x, w, b: x.builder.emit(
            "fused_elementwise",
            [x, w, b],
            body=(("mul", (0, 1), ()), ("add", (-1, 2), ()), ("tanh", (-2,), ())),
        ),
    ),
]

REDUCE_SHAPE_CASES = [
    _c("sum_all", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a)),
    _c("sum_02", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, (0, 2))),
    _c("sum_1_keep", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, 1, keepdims=True)),
    _c("sum_all_keep", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, None, keepdims=True)),
    _c("sum_neg_axis", "sum", [((2, 3, 4), "f")], lambda a: O.sum(a, -1)),
    _c("sum_12_keep", "sum", [(X4, "f")], lambda a: O.sum(a, (1, 2), keepdims=True)),
    _c("mean_all", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a)),
    _c("mean_02", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a, (0, 2))),
    _c("mean_1_keep", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a, 1, keepdims=True)),
    _c("mean_23_keep", "mean", [(X4, "f")], lambda a: O.mean(a, (2, 3), keepdims=True)),
    _c("mean_neg_axis", "mean", [((2, 3, 4), "f")], lambda a: O.mean(a, -2)),
    _c("reshape", "reshape", [((2, 3, 4), "f")], lambda a: O.reshape(a, (6, 4))),
    _c("reshape_infer", "reshape", [((2, 3, 4), "f")], lambda a: a.reshape(4, -1)),
    _c("reshape_flatten", "reshape", [(X4, "f")], lambda a: O.flatten(a, 1)),
    _c("transpose_201", "transpose", [((2, 3, 4), "f")], lambda a: O.transpose(a, (2, 0, 1))),
    _c("transpose_102", "transpose", [((2, 3, 4), "f")], lambda a: O.transpose(a, (1, 0, 2))),
    _c("transpose_2d_default", "transpose", [((3, 5), "f")], lambda a: O.transpose(a)),
    _c("transpose_nhwc", "transpose", [(X4, "f")], lambda a: O.transpose(a, (0, 2, 3, 1))),
]


def _matmul_cases():
    m, k, n = 3, 4, 5
    cases = []
    for batch in ((), (2,)):
        for ta in (False, True):
            for tb in (False, True):
                a = (*batch, k, m) if ta else (*batch, m, k)
                b = (*batch, n, k) if tb else (*batch, k, n)
                cases.append(
                    _c(
                        f"matmul_{len(batch) + 2}d_ta{int(ta)}_tb{int(tb)}",
                        "matmul",
                        [(a, "f"), (b, "f")],
                        lambda x, y, ta=ta, tb=tb: O.matmul(x, y, trans_a=ta, trans_b=tb),
                    )
                )
    cases.append(
        _c("matmul_self_gram", "matmul", [((3, 4), "f")], lambda x: O.matmul(x, x, False, True))
    )
    return cases


SOFTMAX_LOSS_CASES = [
    _c("softmax_last", "softmax", [((3, 5), "f")], lambda x: O.softmax(x, -1)),
    _c("softmax_axis0", "softmax", [((3, 5), "f")], lambda x: O.softmax(x, 0)),
    _c("softmax_3d_axis1", "softmax", [((2, 3, 4), "f")], lambda x: O.softmax(x, 1)),
    _c("log_softmax_last", "log_softmax", [((3, 5), "f")], lambda x: O.log_softmax(x, -1)),
    _c("log_softmax_axis0", "log_softmax", [((3, 5), "f")], lambda x: O.log_softmax(x, 0)),
    _c("log_softmax_3d_axis1", "log_softmax", [((2, 3, 4), "f")], lambda x: O.log_softmax(x, 1)),
    _c("cross_entropy", "cross_entropy", [((5, 7), "f"), ((5,), "cls7")], O.cross_entropy),
    _c("cross_entropy_n1", "cross_entropy", [((1, 3), "f"), ((1,), "cls3")], O.cross_entropy),
    _c("mse_loss", "mse_loss", [((3, 4), "f"), ((3, 4), "f")], O.mse_loss),
    _c("mse_loss_3d", "mse_loss", [((2, 3, 4), "f"), ((2, 3, 4), "f")], O.mse_loss),
]


CONV_CASES = [
    _c(
        "conv_basic_bias",
        "conv2d",
        [((2, 3, 6, 5), "f"), ((4, 3, 3, 2), "f"), ((4,), "f")],
        _conv(),
    ),
    _c("conv_basic_nobias", "conv2d", [((2, 3, 6, 5), "f"), ((4, 3, 3, 2), "f")], _conv()),
    _c("conv_1x1", "conv2d", [((2, 3, 4, 4), "f"), ((5, 3, 1, 1), "f"), ((5,), "f")], _conv()),
    _c(
        "conv_stride2_pad1",
        "conv2d",
        [((1, 2, 7, 6), "f"), ((3, 2, 3, 3), "f"), ((3,), "f")],
        _conv(stride=2, padding=1),
    ),
    _c(
        "conv_dilation2",
        "conv2d",
        [((1, 2, 7, 8), "f"), ((2, 2, 2, 3), "f")],
        _conv(dilation=2),
    ),
    _c(
        "conv_groups2_bias",
        "conv2d",
        [((2, 4, 5, 5), "f"), ((6, 2, 3, 3), "f"), ((6,), "f")],
        _conv(padding=(1, 0), groups=2),
    ),
    _c(
        "conv_groups2_nobias_stride2",
        "conv2d",
        [((1, 4, 7, 6), "f"), ((4, 2, 2, 3), "f")],
        _conv(stride=2, groups=2),
    ),
    _c(
        "conv_depthwise",
        "conv2d",
        [((1, 3, 5, 5), "f"), ((3, 1, 3, 3), "f"), ((3,), "f")],
        _conv(padding=1, groups=3),
    ),
    _c(
        "conv_nonsquare_all",
        "conv2d",
        [((1, 3, 8, 6), "f"), ((2, 3, 3, 2), "f"), ((2,), "f")],
        _conv(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    ),
    _c(
        "conv_s2_p2_d2",
        "conv2d",
        [((2, 2, 6, 7), "f"), ((2, 2, 3, 2), "f")],
        _conv(stride=2, padding=2, dilation=2),
    ),
]

POOL_CASES = [
    _c("max_2s2", "max_pool2d", [((2, 3, 6, 6), "distinct")], lambda x: O.max_pool2d(x, 2)),
    _c(
        "max_3s2_overlap",
        "max_pool2d",
        [((1, 2, 7, 7), "distinct")],
        lambda x: O.max_pool2d(x, 3, 2),
    ),
    _c(
        "max_3s2_pad1",
        "max_pool2d",
        [((1, 2, 6, 7), "distinct")],
        lambda x: O.max_pool2d(x, 3, 2, 1),
    ),
    _c(
        "max_3s1_pad1_dil2",
        "max_pool2d",
        [((1, 2, 7, 7), "distinct")],
        lambda x: O.max_pool2d(x, 3, 1, 1, dilation=2),
    ),
    _c(
        "max_nonsquare",
        "max_pool2d",
        [((2, 2, 5, 7), "distinct")],
        lambda x: O.max_pool2d(x, (2, 3), (1, 2), (1, 0), dilation=(2, 1)),
    ),
    _c("avg_2s2", "avg_pool2d", [((2, 3, 6, 6), "f")], lambda x: O.avg_pool2d(x, 2)),
    _c("avg_3s2_overlap", "avg_pool2d", [((1, 2, 7, 7), "f")], lambda x: O.avg_pool2d(x, 3, 2)),
    _c(
        "avg_3s2_pad1_include",
        "avg_pool2d",
        [((1, 2, 6, 7), "f")],
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=True),
    ),
    _c(
        "avg_3s2_pad1_exclude",
        "avg_pool2d",
        [((1, 2, 6, 7), "f")],
        lambda x: O.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    ),
    _c(
        "avg_nonsquare_exclude",
        "avg_pool2d",
        [((2, 2, 5, 6), "f")],
        lambda x: O.avg_pool2d(x, (3, 2), (2, 1), (1, 0), count_include_pad=False),
    ),
]

# The epilogue ops (graph/passes/epilogue.py) that have a VJP: a producer and its body.
EPILOGUE_CASES = [
    _c(
        "conv2d_epilogue_mul_tanh",
        "conv2d_epilogue",
        [((1, 2, 5, 5), "f"), ((2, 2, 3, 3), "f"), ((2,), "f"), ((1, 2, 5, 5), "f")],
        lambda x, w, b, r: x.builder.emit(
            "conv2d_epilogue",
            [x, w, b, r],
            padding=1,
            n_main=3,
            body=(("mul", (0, 1), ()), ("tanh", (-1,), ())),
        ),
    ),
    _c(
        "matmul_epilogue_view_sigmoid",
        "matmul_epilogue",
        [((3, 4), "f"), ((5, 4), "f"), ((3, 5, 1), "f")],
        lambda a, b, m: a.builder.emit(
            "matmul_epilogue",
            [a, b, m],
            trans_b=True,
            n_main=2,
            view=(3, 5, 1),
            body=(("mul", (0, 1), ()), ("sigmoid", (-1,), ())),
        ),
    ),
]


def _step(x, value=3.0):
    return x.builder.const(value, "float64")


# Activations, comparisons, losses and dropout (issue 4); torch comparisons of all of them are
# in tests/engine/test_activations.py, test_losses.py and test_dropout.py.
ACTIVATION_LOSS_CASES = [
    _c("maximum_bcast", "maximum", [((3, 1, 4), "f"), ((2, 1), "f")], O.maximum),
    _c("maximum_scalar", "maximum", [((2, 3), "f")], lambda a: O.maximum(a, 0.1)),
    _c("minimum_bcast", "minimum", [((4,), "f"), ((3, 4), "f")], O.minimum),
    _c(
        "select_bcast",
        "select",
        [((3, 1), "away"), ((3, 4), "f"), ((4,), "f")],
        O.select,
    ),
    _c("equal_float", "equal", [((2, 3), "f"), ((3,), "f")], O.equal),
    _c("pow_3", "pow", [(X4, "f")], lambda x: O.pow(x, 3)),
    _c("pow_2", "pow", [((2, 3), "f")], lambda x: O.pow(x, 2.0)),
    _c("pow_frac", "pow", [((2, 3), "pos")], lambda x: O.pow(x, -1.5)),
    _c("pow_0", "pow", [((2, 3), "f")], lambda x: O.pow(x, 0)),
    _c("xlogy", "xlogy", [((2, 3), "f"), ((2, 3), "pos")], O.xlogy),
    _c("xlogy_bcast", "xlogy", [((3,), "pos"), ((2, 3), "pos")], O.xlogy),
    _c("leaky_relu", "leaky_relu", [(X4, "away")], lambda x: O.leaky_relu(x, 0.2)),
    _c("prelu_channels", "prelu", [(X4, "away"), ((3, 1, 1), "f")], O.prelu),
    _c("prelu_single", "prelu", [((2, 5), "away"), ((1,), "f")], O.prelu),
    _c("elu", "elu", [(X4, "away")], lambda x: O.elu(x, 1.3)),
    _c("silu", "silu", [(X4, "f")], O.silu),
    _c("softplus", "softplus", [(X4, "f")], O.softplus),
    _c(
        "softplus_threshold",
        "softplus",
        [(X4, "f")],
        lambda x: O.softplus(x, beta=2.0, threshold=1.0),
    ),
    _c("scaled_tanh", "scaled_tanh", [(X4, "f")], O.scaled_tanh),
    _c("scaled_tanh_attrs", "scaled_tanh", [((2, 3), "f")], lambda x: O.scaled_tanh(x, 2.0, 0.5)),
    _c(
        "bce",
        "binary_cross_entropy",
        [((3, 4), "prob"), ((3, 4), "prob")],
        lambda p, y: O.binary_cross_entropy(p, y, reduction="none"),
    ),
    _c(
        "bce_with_logits",
        "binary_cross_entropy_with_logits",
        [((3, 4), "f"), ((3, 4), "prob")],
        lambda x, y: O.binary_cross_entropy_with_logits(x, y, reduction="none"),
    ),
    _c("dropout", "dropout", [(X4, "f")], lambda x: O.dropout(x, _step(x), p=0.4, seed=5)),
    _c("dropout_p0", "dropout", [((3, 4), "f")], lambda x: O.dropout(x, _step(x), p=0.0)),
]


# Concat, slice (each other's VJP), batch_norm and its statistics (graph/ops/join.py, norm.py,
# norm_stats.py).
JOIN_NORM_CASES = [
    _c(
        "concat_axis1",
        "concat",
        [(X4, "f"), ((2, 2, 5, 4), "f")],
        lambda a, b: O.concat([a, b], 1),
    ),
    _c(
        "concat_axis0_three",
        "concat",
        [((2, 3), "f"), ((1, 3), "f"), ((3, 3), "f")],
        lambda a, b, c: O.concat([a, b, c], 0),
    ),
    _c("concat_self_last", "concat", [((2, 3), "f")], lambda a: O.concat([a, a], -1)),
    _c("slice_middle", "slice", [(X4, "f")], lambda a: O.slice_(a, 1, 2, 1)),
    _c(
        "allreduce_two",
        "allreduce",
        [((2, 3), "f"), ((4,), "f")],
        lambda a, b: O.allreduce(a, b, average=False),
    ),
    _c("slice_start", "slice", [(X4, "f")], lambda a: O.slice_(a, 0, 3, 2)),
    _c("slice_end", "slice", [((4, 3), "f")], lambda a: O.slice_(a, 2, 4, 0)),
    _c(
        "batch_norm_4d",
        "batch_norm",
        [(X4, "f"), ((1, 3, 1, 1), "f"), ((1, 3, 1, 1), "pos")] + [((1, 3, 1, 1), "f")] * 2,
        O.batch_norm,
    ),
    _c(
        "batch_norm_2d_scalars",
        "batch_norm",
        [((4, 3), "f"), ((1, 3), "f"), ((), "pos"), ((3,), "f")],
        lambda x, m, s, g: O.batch_norm(x, m, s, g, 0.25),
    ),
    _c("batch_norm_stats_4d", "batch_norm_stats", [(X4, "f")], O.batch_norm_stats),
    _c("batch_norm_stats_3d", "batch_norm_stats", [((3, 2, 4), "f")], O.batch_norm_stats),
    _c("batch_norm_stats_2d", "batch_norm_stats", [((4, 3), "f")], O.batch_norm_stats),
    _c(
        "batch_norm_grad_stats_4d",
        "batch_norm_grad_stats",
        [(X4, "f"), (X4, "f"), ((1, 3, 1, 1), "f")],
        O.batch_norm_grad_stats,
    ),
    _c(
        "batch_norm_grad_stats_2d_scalar_mean",
        "batch_norm_grad_stats",
        [((4, 3), "f"), ((4, 3), "f"), ((), "f")],
        O.batch_norm_grad_stats,
    ),
]

# Transposed conv, unpooling, upsampling, LRN (graph/ops/spatial.py, graph/ops/lrn.py); their
# PyTorch comparisons are in tests/engine/test_spatial_layers.py. The unpooling indices
# (seed 0) hold no repeats, where torch's gather-gradient and the assigning scatter differ.
SPATIAL_CASES = [
    _c(
        "conv_transpose2d",
        "conv_transpose2d",
        [((2, 3, 3, 2), "f"), ((3, 2, 2, 3), "f")],
        O.conv_transpose2d,
    ),
    _c(
        "conv_transpose2d_s2_p1_op1_d2_groups",
        "conv_transpose2d",
        [((1, 4, 3, 2), "f"), ((4, 1, 2, 3), "f")],
        lambda x, w: O.conv_transpose2d(
            x, w, stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2)
        ),
    ),
    _c(
        "max_unpool2d",
        "max_unpool2d",
        [((1, 2, 2, 2), "f"), ((1, 2, 2, 2), "cls29")],
        lambda y, i: O.max_unpool2d(y, i, 3, 2, output_size=(5, 6)),
    ),
    _c("upsample_nearest", "upsample2d", [((1, 2, 2, 3), "f")], lambda x: O.upsample2d(x, (2, 3))),
    _c(
        "upsample_bilinear",
        "upsample2d",
        [((1, 2, 3, 2), "f")],
        lambda x: O.upsample2d(x, (3, 2), "bilinear"),
    ),
    _c(
        "local_response_norm",
        "local_response_norm",
        [((2, 6, 2, 2), "f")],
        lambda x: O.local_response_norm(x, 5, alpha=0.5, beta=0.75, k=1.0),
    ),
    _c(
        "local_response_norm_even_3d",
        "local_response_norm",
        [((2, 5, 3), "f")],
        lambda x: O.local_response_norm(x, 4, alpha=0.8, beta=0.6, k=2.0),
    ),
]

# Comparisons, casts, gradient stops, erf and cumsum (issue 13); their torch comparisons are in
# test_ops_torch_reference.py.
TENSOR_CASES = [
    _c("greater_bcast", "greater", [((3, 1, 4), "f"), ((2, 1), "f")], O.greater),
    _c("greater_equal", "greater_equal", [((2, 3), "f"), ((2, 3), "f")], O.greater_equal),
    _c("cast_to_int64", "cast", [((2, 3), "f")], lambda x: O.cast(x, "int64")),
    _c("erf", "erf", [(X4, "f")], O.erf),
    _c("cumsum_axis1", "cumsum", [(X4, "f")], lambda x: O.cumsum(x, 1)),
    _c("cumsum_reverse_last", "cumsum", [((3, 4), "f")], lambda x: O.cumsum(x, -1, True)),
]

CASES = (
    ELEMENTWISE_CASES
    + REDUCE_SHAPE_CASES
    + _matmul_cases()
    + SOFTMAX_LOSS_CASES
    + CONV_CASES
    + POOL_CASES
    + ACTIVATION_LOSS_CASES
    + EPILOGUE_CASES
    + JOIN_NORM_CASES
    + SPATIAL_CASES
    + TENSOR_CASES
)
