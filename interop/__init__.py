"""ONNX interchange: ``from_onnx`` imports an ONNX model as an ``nn.Module``; ``to_onnx``
exports a traced forward graph. Needs the ``onnx`` extra (``pip install numbagrad[onnx]``)."""

from .onnx_export import to_onnx
from .onnx_module import OnnxModel, from_onnx

__all__ = ["OnnxModel", "from_onnx", "to_onnx"]
