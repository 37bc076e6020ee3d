"""Build the stratified Fashion-MNIST subset bundled with numbagrad.

    python bench/make_fashion_subset.py --src /usr/share/datasets/fashion-mnist \
        --out datasets/fashion-mnist-subset

Picks, with a fixed seed, ``--train-per-class`` training and ``--test-per-class`` test images
of every class, keeps them in their original order, and writes the four standard IDX file
names with ``.gz`` to ``--out``. The same seed and source give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

try:
    from numbagrad import data
except ImportError:
    # Not installed: expose the checkout (the repository root is the package) without running
    # its __init__, which this script does not need.
    pkg = types.ModuleType("numbagrad")
    pkg.__path__ = [str(ROOT)]
    sys.modules["numbagrad"] = pkg
    from numbagrad import data


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` rows of each label 0..9, drawn without replacement."""
    picked = []
    for c in range(len(data.FASHION_MNIST_CLASSES)):
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise SystemExit(f"class {c} has only {len(rows)} rows, {per_class} asked for")
        picked.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(picked))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default=data.DEBIAN_DIR, help="directory with the full IDX files")
    p.add_argument("--out", default=str(data.BUNDLED_DIR), help="where to write the subset")
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    src = data.find_data_dir(args.src)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    total = 0
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        img_name, lbl_name = data.FILES[split]
        images = data.read_idx(data.find_idx_file(src, img_name))
        labels = data.read_idx(data.find_idx_file(src, lbl_name))
        idx = stratified_indices(labels, per_class, rng)
        for name, arr in ((img_name, images[idx]), (lbl_name, labels[idx])):
            path = out / (name + ".gz")
            data.write_idx(path, arr)
            size = path.stat().st_size
            total += size
            print(f"{path}: shape {arr.shape}, {size} bytes")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
