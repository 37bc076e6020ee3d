"""Layers an imported ONNX model is built from: a node with weights whose initializers are named
like a PyTorch layer's (``layer1.0.conv1.weight``, ``...bias``) becomes a module at that path
holding them, so ``state_dict`` keys are PyTorch's and ``ng.summary`` lists the layer.
BatchNormalization becomes a real BatchNorm layer: batch statistics and running-average
updates while training (fine-tuning), running statistics in eval mode."""

from __future__ import annotations

import math
from dataclasses import replace

from ..engine.nn.module import Module, Parameter
from ..engine.nn.norm import _BatchNorm
from .onnx_ops import CONVERTERS, OnnxNode

# Per op: the state_dict names of inputs 1, 2, ... (input 0 is the data).
SLOTS: dict[str, tuple[str, ...]] = {
    "Conv": ("weight", "bias"),
    "ConvTranspose": ("weight", "bias"),
    "Gemm": ("weight", "bias"),
    "PRelu": ("weight",),
    "LayerNormalization": ("weight", "bias"),
    "BatchNormalization": ("weight", "bias", "running_mean", "running_var"),
}


class OnnxLayer(Module):
    """One ONNX node with its weights as parameters; ``forward(x)`` runs the node's converter."""

    def __init__(self, node: OnnxNode, weights: dict[str, Parameter]) -> None:
        super().__init__()
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "slots", tuple(weights))  # (a free parameter may join it)
        for slot, param in weights.items():
            setattr(self, slot, param)

    def forward(self, x):
        node = replace(self.node, training=self.training)
        args = [x] + [getattr(self, s) if s in self.slots else None for s in SLOTS[node.op]]
        return CONVERTERS[node.op](node, args)[0]

    def extra_repr(self) -> str:
        return self.node.name

    def summary_info(self, in_shape, out_shape):
        """For ``ng.summary``: a multiply-add per output element and weight it reads."""
        return None, None, None, math.prod(out_shape)


class OnnxConv(OnnxLayer):
    def summary_info(self, in_shape, out_shape):
        w = self.weight.data
        per_unit = math.prod(w.shape[1:]) + ("bias" in self.slots)
        kernel = tuple(w.shape[2:]) if w.ndim == 4 else None
        stride = tuple(self.node.attr("strides", [1] * (w.ndim - 2)))
        return w.shape[0], kernel, stride, per_unit * math.prod(out_shape)


class OnnxConvTranspose(OnnxLayer):
    pass


class OnnxGemm(OnnxLayer):
    def summary_info(self, in_shape, out_shape):
        inner = in_shape[-1] if not self.node.attr("transA", 0) else in_shape[0]
        return None, None, None, (inner + ("bias" in self.slots)) * math.prod(out_shape)


class OnnxPRelu(OnnxLayer):
    pass


class OnnxLayerNorm(OnnxLayer):
    pass


LAYER_CLASSES = {"Conv": OnnxConv, "ConvTranspose": OnnxConvTranspose, "Gemm": OnnxGemm,
                 "PRelu": OnnxPRelu, "LayerNormalization": OnnxLayerNorm}  # fmt: skip


class OnnxBatchNorm(_BatchNorm):
    """ONNX BatchNormalization over (N, C, ...) inputs as numbagrad's BatchNorm (ONNX's momentum
    m weighs the old running value, PyTorch's 1 - m the new one)."""

    ranks = (2, 3, 4, 5)
    expects = "(N, C, ...)"

    def __init__(self, node: OnnxNode, weights: dict[str, Parameter]) -> None:
        channels = weights["weight"].shape[0]
        dtype = weights["weight"].dtype
        momentum = 1.0 - float(node.attr("momentum", 0.9))
        super().__init__(channels, float(node.attr("epsilon", 1e-5)), momentum, dtype=dtype)
        for slot, param in weights.items():
            getattr(self, slot).data[...] = param.data.reshape(channels)


def make_layer(node: OnnxNode, weights: dict[str, Parameter]) -> Module:
    """The layer module of ``node`` using ``weights`` (slot name -> Parameter)."""
    if node.op == "BatchNormalization":
        return OnnxBatchNorm(node, weights)
    return LAYER_CLASSES[node.op](node, weights)
