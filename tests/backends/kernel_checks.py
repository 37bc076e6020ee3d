"""Shared by the CPU kernel tests: dtypes, tolerances, seeded generators and the comparison
with a reference."""

from __future__ import annotations

import numpy as np

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def assert_close(got, ref, dtype):
    ref = np.asarray(ref)
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * scale)


def seeded_rng(seed=0):
    return np.random.default_rng(seed)
