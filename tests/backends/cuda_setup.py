"""Imported first by the CUDA test modules (tests/conftest.py makes it importable by name):
the CUDA simulator unless NUMBAGRAD_TEST_REAL_GPU=1, and a skip where the backend cannot run.

NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, which is why this
happens at import. It is left set on purpose: numba.cuda stays the simulator for the whole
process anyway, and @cuda.jit reads the variable again (via Numba's config reload) each time
it compiles; CPU Numba ignores it."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

REAL_GPU = os.environ.get("NUMBAGRAD_TEST_REAL_GPU") == "1"
if not REAL_GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def require_cuda_backend() -> ModuleType:
    """The cuda backend, or a skip of the calling test module (no numba-cuda, no device)."""
    pytest.importorskip("numba_cuda")
    from numbagrad.backends import get_backend
    from numbagrad.errors import BackendError

    try:
        return get_backend("cuda")
    except BackendError as e:  # pragma: no cover - depends on the machine
        pytest.skip(str(e), allow_module_level=True)
