"""Built-in layers. Each is a Module whose forward() uses the public op API only."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ...graph.ops.common import pair
from .. import functional as F
from ..trace import layer_path
from .init import default_init_
from .lenet_layers import connection_table, expand_connected, pack_connected
from .module import Module, Parameter
from .pooling import max_pool2d_ceil


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: the channel, group and kernel attributes, a
    weight (``weight_channels``, kh, kw) and a bias (out,) with PyTorch's default init, the
    input check and the repr."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        dtype, transposed: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ShapeError(
                f"{type(self).__name__}: in_channels={in_channels} and "
                f"out_channels={out_channels} must both be divisible by groups={groups}"
            )
        kh, kw = pair(kernel_size, "kernel_size", 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, groups
        if transposed:  # torch's layout: (in, out/groups, kh, kw)
            channels = (in_channels, out_channels // groups)
        else:
            channels = (out_channels, in_channels // groups)
        self.weight = Parameter(np.zeros((*channels, kh, kw), dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        default_init_(self.weight, self.bias)  # PyTorch's: fans from the weight's dims 1, 2.., 0

    def _check_input(self, x) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"{type(self).__name__} layer '{layer_path()}' expects input "
                f"(N, {self.in_channels}, H, W), got shape {x.shape}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class Conv2d(_ConvNd):
    """2-d convolution; weight (out, in/groups, kh, kw) and bias (out,), as PyTorch.

    ``connections``: a boolean (out_channels, in_channels) connection table (LeNet-5's
    S2->C3): output map o sees input map i only where ``connections[o, i]``. Only connected
    kernels are parameters: ``weight`` is then packed, (n_connections, kh, kw) in the
    table's row-major order (see ``lenet_layers.pack_connected``).

    ``padding``: an int, a pair, ``"valid"`` (none) or ``"same"`` (output as large as the
    input; stride 1 and an even total padding ``dilation*(k-1)`` per axis, i.e. odd kernels,
    since the op pads symmetrically)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        dtype: str = "float32",
        connections=None,
    ) -> None:
        padding = _string_padding(padding, kernel_size, stride, dilation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            dtype, transposed=False,
        )  # fmt: skip
        self.connections = None
        if connections is not None:  # keep only the connected kernels (init as if full)
            if groups != 1:
                raise ShapeError("Conv2d: a connection table needs groups=1")
            self.connections = connection_table(connections, out_channels, in_channels)
            self.weight = Parameter(pack_connected(self.weight.data, self.connections))

    def forward(self, x):
        self._check_input(x)
        weight = self.weight
        if self.connections is not None:
            weight = expand_connected(weight, self.connections)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _string_padding(padding, kernel_size, stride, dilation):
    """Conv2d's ``"valid"``/``"same"`` padding as a pair (anything else passes through)."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        raise ShapeError(
            f"Conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    if pair(stride, "stride", 1) != (1, 1):
        raise ShapeError(f"Conv2d: padding='same' needs stride 1, got stride={stride}")
    kernel, dil = pair(kernel_size, "kernel_size", 1), pair(dilation, "dilation", 1)
    totals = [d * (k - 1) for k, d in zip(kernel, dil)]
    if any(t % 2 for t in totals):
        raise ShapeError(
            f"Conv2d: padding='same' with kernel_size={kernel_size}, dilation={dilation} needs "
            f"uneven padding {totals}, which conv2d (symmetric padding) does not do; pad explicitly"
        )
    return tuple(t // 2 for t in totals)


class Linear(Module):
    """y = x W^T + b; weight (out, in) and bias (out,), as PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype="float32"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None
        default_init_(self.weight, self.bias)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(
                f"Linear layer '{layer_path()}' expects input (N, {self.in_features}), "
                f"got shape {x.shape}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MaxPool2d(Module):
    """Max pooling; ``ceil_mode=True`` rounds the output size up, as PyTorch (GoogLeNet).
    ``return_indices=True`` returns ``(output, indices)``, the int64 flat (H*W) index of each
    window's maximum, for MaxUnpool2d."""

    def __init__(
        self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode
        self.return_indices = return_indices
        if return_indices and ceil_mode:
            raise ShapeError("MaxPool2d: return_indices with ceil_mode=True is not supported")

    def forward(self, x):
        pool = max_pool2d_ceil if self.ceil_mode else F.max_pool2d
        args = (self.kernel_size, self.stride, self.padding, self.dilation)
        if self.return_indices:
            return pool(x, *args), F.max_pool2d_indices(x, *args)
        return pool(x, *args)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.count_include_pad = padding, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Flatten(Module):
    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)


class Sequential(Module):
    """Layers applied in order; children are named ``0``, ``1``, ... as in PyTorch."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __getitem__(self, i: int) -> Module:
        return self.children()[i]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x
