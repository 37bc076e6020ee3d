"""Datasets: an IDX (MNIST format) reader and writer, and Fashion-MNIST loading.

Fashion-MNIST comes from, in order: an explicit ``data_dir``, the Debian package
``dataset-fashion-mnist`` (:data:`DEBIAN_DIR`), or the stratified subset bundled with
numbagrad (6000 train / 1000 test images, see ``datasets/fashion-mnist-subset/README.md``).
Images are returned as float32 NCHW ``(N, 1, 32, 32)``, labels as int64 ``(N,)``.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import numba
import numpy as np

from .errors import DataError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
BUNDLED_DIR = Path(__file__).parent / "datasets" / "fashion-mnist-subset"
# Mean and std of the Fashion-MNIST training pixels after scaling to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
PAD = 2  # 28x28 -> 32x32, the input size LeNet-5 expects

FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
REQUIRED_FILES: tuple[str, ...] = FILES["train"] + FILES["test"]

# IDX dtype codes -> big-endian numpy dtypes (0x0A is unassigned in the format).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): c for c, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped (detected by its magic bytes) or raw.

    Returns an array in native byte order whose shape is the file's dims, e.g. ``(N, 28, 28)``
    uint8 for an image file and ``(N,)`` uint8 for a label file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist.") from None
    except OSError as e:
        raise DataError(f"IDX file {path} cannot be read: {e}.") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"IDX file {path} is a corrupt or truncated gzip stream: {e}."
            ) from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is too short ({len(raw)} bytes) to hold an IDX header.")
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in _IDX_DTYPES:
        raise DataError(
            f"IDX file {path} has a bad magic number {raw[:4].hex()} "
            "(expected 0000 then a dtype code 08, 09, 0b, 0c, 0d or 0e and ndim)."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header of {ndim} dims.")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: dims {dims} of {dtype.name} need {expected} payload "
            f"bytes, found {got}."
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # native order, a writable copy


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8/int8/int16/int32/float32/float64, any shape) as an IDX file,
    gzipped when the path ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"Cannot write {path}: IDX has no code for dtype {array.dtype}.")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise DataError(f"Cannot write {path}: shape {array.shape} does not fit an IDX header.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    data = header + payload
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)  # mtime=0: reproducible bytes
    path.write_bytes(data)


def find_idx_file(directory: str | Path, name: str) -> Path | None:
    """The file ``name`` (raw, preferred) or ``name.gz`` in ``directory``, or None."""
    directory = Path(directory)
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory: Path) -> list[str]:
    return [n for n in REQUIRED_FILES if find_idx_file(directory, n) is None]


def find_data_dir(data_dir: str | Path | None) -> Path | None:
    """The directory holding the four Fashion-MNIST IDX files (raw or ``.gz``).

    An explicit ``data_dir`` must hold all four, else :class:`DataError`. With None, returns
    :data:`DEBIAN_DIR` when it holds them, else None (meaning: use the bundled subset).
    """
    if data_dir is None:
        debian = Path(DEBIAN_DIR)
        return debian if debian.is_dir() and not _missing(debian) else None
    directory = Path(data_dir)
    if not directory.is_dir():
        raise DataError(f"Fashion-MNIST data directory {directory} does not exist.")
    missing = _missing(directory)
    if missing:
        raise DataError(
            f"Fashion-MNIST data directory {directory} lacks {', '.join(missing)} "
            "(each may also be gzipped, with .gz)."
        )
    return directory


def _resolve(data_dir: str | Path | None, bundled: bool | None) -> tuple[Path, bool]:
    """(directory, is_bundled) for the arguments of :func:`load_fashion_mnist`."""
    if bundled:
        if data_dir is not None:
            raise DataError("Give either data_dir or bundled=True, not both.")
        return BUNDLED_DIR, True
    found = find_data_dir(data_dir)
    if found is not None:
        return found, False
    if bundled is False:
        raise DataError(
            f"Full Fashion-MNIST not found: no data_dir given and {DEBIAN_DIR} lacks the IDX "
            "files (install the Debian package dataset-fashion-mnist, pass data_dir, "
            "or allow the bundled subset)."
        )
    return BUNDLED_DIR, True


def describe_source(data_dir: str | Path | None = None, bundled: bool | None = None) -> str:
    """One line saying which Fashion-MNIST :func:`load_fashion_mnist` would read, for a CLI."""
    directory, is_bundled = _resolve(data_dir, bundled)
    if is_bundled:
        return f"bundled Fashion-MNIST subset (6000 train / 1000 test images) in {directory}"
    return f"full Fashion-MNIST in {directory}"


def load_fashion_mnist(
    split: str = "train", data_dir: str | Path | None = None, *, bundled: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split (``"train"`` or ``"test"``).

    Returns ``(images, labels)``: images float32 ``(N, 1, 32, 32)``, the 28x28 pictures
    zero-padded by 2 pixels per side, scaled to [0, 1] and normalized with
    :data:`FASHION_MNIST_MEAN` / :data:`FASHION_MNIST_STD`; labels int64 ``(N,)`` in 0..9.
    ``bundled=True`` forces the bundled subset, ``False`` requires the full data, None takes the
    full data when :func:`find_data_dir` finds it and the subset otherwise.
    """
    if split not in FILES:
        raise DataError(f"Unknown Fashion-MNIST split {split!r}; use 'train' or 'test'.")
    directory, _ = _resolve(data_dir, bundled)
    img_name, lbl_name = FILES[split]
    img_path, lbl_path = find_idx_file(directory, img_name), find_idx_file(directory, lbl_name)
    if img_path is None or lbl_path is None:
        raise DataError(f"Fashion-MNIST directory {directory} lacks {img_name} or {lbl_name}.")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{img_path} holds {images.dtype} {images.shape}, not uint8 (N, 28, 28) images."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{lbl_path} holds {labels.dtype} {labels.shape}, not integer (N,) labels.")
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lbl_path} {len(labels)} labels.")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{lbl_path} has labels outside 0..9 (min {labels.min()}, max {labels.max()})."
        )
    mean, inv_std = np.float32(FASHION_MNIST_MEAN), np.float32(1.0 / FASHION_MNIST_STD)
    out = np.empty((len(images), 1, 28 + 2 * PAD, 28 + 2 * PAD), dtype=np.float32)
    out[...] = (np.float32(0.0) - mean) * inv_std  # the zero padding, normalized
    inner = out[:, 0, PAD : PAD + 28, PAD : PAD + 28]
    np.multiply(images, np.float32(1.0 / 255.0), out=inner, dtype=np.float32)
    inner -= mean
    inner *= inv_std
    return out, labels


def iterate_minibatches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    rng: np.random.Generator | int | None = None,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield one epoch of contiguous ``(xb, yb)`` batches: ``xb`` is ``(B, *x.shape[1:])``,
    ``yb`` is ``(B, *y.shape[1:])``. Each row appears at most once. With ``drop_last`` every
    batch has exactly ``batch_size`` rows (a compiled step has a static batch size); ``rng``
    is a Generator or a seed for the shuffle.

    Data-parallel (``world_size`` processes): the epoch is cut into global batches of
    ``batch_size * world_size`` rows and process ``rank`` gets rows ``[rank * B, (rank + 1) *
    B)`` of each, so the shards are disjoint and together are the global batch, provided
    every process passes the same ``rng`` seed (the same shuffle). Every process takes the
    same number of steps: ``drop_last`` is required."""
    if not 0 <= rank < world_size:
        raise DataError(
            f"iterate_minibatches needs 0 <= rank < world_size, got {rank} of {world_size}."
        )
    if world_size > 1 and not drop_last:
        raise DataError(
            "iterate_minibatches with world_size > 1 needs drop_last=True: every process "
            "must take the same number of steps."
        )
    n = len(x)
    if len(y) != n:
        raise DataError(f"iterate_minibatches got {n} inputs but {len(y)} targets.")
    if batch_size < 1:
        raise DataError(f"iterate_minibatches needs batch_size >= 1, got {batch_size}.")
    batch = batch_size * world_size  # the global batch
    if drop_last and n < batch:
        raise DataError(
            f"iterate_minibatches: {n} rows make no full batch of {batch} (drop_last=True)."
        )
    order = np.random.default_rng(rng).permutation(n) if shuffle else None
    stop = n - n % batch if drop_last else n
    return _batches(x, y, batch_size, order, stop, world_size, rank)


def _batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: np.ndarray | None,
    stop: int,
    world_size: int,
    rank: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    # A separate generator so that iterate_minibatches checks its arguments when called.
    for first in range(0, stop, batch_size * world_size):
        start = first + rank * batch_size
        end = min(start + batch_size, len(x))
        if order is None:
            yield np.ascontiguousarray(x[start:end]), np.ascontiguousarray(y[start:end])
        else:
            idx = order[start:end]
            yield np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_padding: int = 2,
    flip: bool = True,
    fill: float | None = None,
) -> np.ndarray:
    """A randomly cropped and flipped copy of a batch ``x`` of shape ``(N, C, H, W)``.

    Each image is shifted by up to ``crop_padding`` pixels along each axis (a random crop of
    the image padded by ``crop_padding`` on every side) and, with ``flip``, mirrored left to
    right with probability 1/2; every channel moves together. The uncovered border takes
    ``fill``, or with None the nearest edge pixel (for Fashion-MNIST as loaded here, whose
    2-pixel border is background, that is the background). The draws come from ``rng``, so a
    seeded generator repeats them; one compiled loop moves the pixels (about 0.06 ms for 64
    images of 28x28 here, against ~6 ms for a LeNet-5 training step at that batch)."""
    if x.ndim != 4:
        raise DataError(f"augment expects a (N, C, H, W) batch, got shape {x.shape}.")
    if crop_padding < 0:
        raise DataError(f"augment needs crop_padding >= 0, got {crop_padding}.")
    n = len(x)
    shift = rng.integers(-crop_padding, crop_padding + 1, size=(2, n))
    mirrored = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    out = np.empty_like(x)
    value = x.dtype.type(0 if fill is None else fill)
    _shift_and_mirror(x, shift[0], shift[1], mirrored, value, fill is not None, out)
    return out


@numba.njit(cache=True)
def _shift_and_mirror(x, dy, dx, mirrored, fill, use_fill, out):
    """``out[b, :, i, j] = x[b, :, i + dy[b], j' + dx[b]]`` with ``j'`` the mirrored column
    where ``mirrored[b]``; outside the image, ``fill`` or (without ``use_fill``) the edge."""
    n, c, h, w = x.shape
    for b in range(n):
        for k in range(c):  # channels outside the pixels: the inner loop writes a row in order
            for i in range(h):
                si = i + dy[b]
                row_inside = 0 <= si < h
                si = min(max(si, 0), h - 1)
                for j in range(w):
                    sj = (w - 1 - j if mirrored[b] else j) + dx[b]
                    inside = row_inside and 0 <= sj < w
                    sj = min(max(sj, 0), w - 1)
                    out[b, k, i, j] = x[b, k, si, sj] if inside or not use_fill else fill
