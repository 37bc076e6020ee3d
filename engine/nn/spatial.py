"""Decoder layers: ConvTranspose2d and MaxUnpool2d, as PyTorch's (same arguments, weight
layouts and ``state_dict`` keys). Upsample and LocalResponseNorm are in ``pooling.py``; the
pooling indices MaxUnpool2d needs come from ``MaxPool2d(..., return_indices=True)``."""

from __future__ import annotations

from ...errors import ShapeError
from ...graph.ops import conv_transpose2d, max_unpool2d
from ...graph.ops.common import pair
from ..trace import layer_path
from .layers import _ConvNd
from .module import Module


class ConvTranspose2d(_ConvNd):
    """Transposed 2-d convolution ("deconvolution"): weight (in, out/groups, kh, kw) and bias
    (out,), as ``torch.nn.ConvTranspose2d``. The output is ``(H - 1) * stride - 2 * padding +
    dilation * (kernel - 1) + output_padding + 1`` per axis; ``forward(x, output_size=...)``
    picks ``output_padding`` from a wanted size, as PyTorch does."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        dtype: str = "float32",
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            dtype, transposed=True,
        )  # fmt: skip
        self.output_padding = output_padding

    def _output_padding(self, x, output_size) -> tuple[int, int]:
        if output_size is None:
            return pair(self.output_padding, "output_padding", 0)
        s, p = pair(self.stride, "stride", 1), pair(self.padding, "padding", 0)
        d = pair(self.dilation, "dilation", 1)
        wanted = tuple(output_size)[-2:]
        extra = []
        for i in range(2):
            smallest = (x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (self.kernel_size[i] - 1)
            extra.append(wanted[i] - smallest - 1)
            if not 0 <= extra[i] < s[i]:
                raise ShapeError(
                    f"ConvTranspose2d layer '{layer_path()}': output_size {wanted} is not "
                    f"reachable from input {x.shape} (sizes {smallest + 1}..{smallest + s[i]})"
                )
        return extra[0], extra[1]

    def forward(self, x, output_size=None):
        self._check_input(x)
        return conv_transpose2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(x, output_size),
            self.groups,
            self.dilation,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, output_padding={self.output_padding}"


class MaxUnpool2d(Module):
    """Partial inverse of MaxPool2d: ``forward(x, indices, output_size=None)`` puts each value
    at its pooling index (from ``MaxPool2d(..., return_indices=True)``), zeros elsewhere."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x, indices, output_size=None):
        return max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"
