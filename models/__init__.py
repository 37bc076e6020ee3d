"""The model zoo, built only from the public API."""

from .lenet import lenet5
from .mlp import mlp

__all__ = ["lenet5", "mlp"]
