"""onnxruntime as the oracle of the ONNX tests, and their inputs and error measure (no torch:
tests without it keep its thread pool out of their process)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def run_ort(path, *arrays: np.ndarray) -> list[np.ndarray]:
    source = path if isinstance(path, bytes) else str(path)  # a file, or a serialized model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
    return session.run(None, feeds)


def sample(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel_err(got, expected) -> float:
    expected = np.asarray(expected)
    return float(np.abs(np.asarray(got) - expected).max() / max(np.abs(expected).max(), 1e-12))
