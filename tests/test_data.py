"""Tests of numbagrad.data: the IDX reader/writer, Fashion-MNIST loading, minibatches."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from numbagrad import data
from numbagrad.errors import DataError

PAD_VALUE = (0.0 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD


# ---------------------------------------------------------------- IDX round trip


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4), (2, 3, 5), (1, 2, 1, 3)])
def test_idx_round_trip(tmp_path, dtype, shape, gz):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        arr = (rng.standard_normal(shape) * 1e3).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    data.write_idx(path, arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    back = data.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, arr)
    back[...] = 0  # a writable copy, not a view of the file bytes


def test_idx_is_big_endian_and_gzip_detected_by_magic(tmp_path):
    arr = np.array([1, 256], dtype=np.int32)
    raw_path = tmp_path / "x.idx"
    data.write_idx(raw_path, arr)
    raw = raw_path.read_bytes()
    assert raw == bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 0])
    # gzipped content under a name without .gz is still read
    disguised = tmp_path / "disguised"
    disguised.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(data.read_idx(disguised), arr)


def test_write_idx_refuses_unknown_dtype(tmp_path):
    with pytest.raises(DataError, match="int64"):
        data.write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))


# ---------------------------------------------------------------- IDX errors


def _valid_bytes() -> bytes:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    return bytes([0, 0, 8, 3]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()


@pytest.mark.parametrize(
    "content, words",
    [
        (_valid_bytes()[:-1], "truncated"),
        (_valid_bytes()[:10], "truncated"),
        (_valid_bytes() + b"\0", "longer"),
        (b"\x01" + _valid_bytes()[1:], "bad magic"),
        (_valid_bytes()[:2] + b"\x0a" + _valid_bytes()[3:], "bad magic"),
        (_valid_bytes()[:2] + b"\x07" + _valid_bytes()[3:], "bad magic"),
        (b"\0\0", "too short"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_bad_files_raise_data_error(tmp_path, content, words, gz):
    path = tmp_path / "broken-file-idx3-ubyte"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError, match=words) as err:
        data.read_idx(path)
    assert "broken-file-idx3-ubyte" in str(err.value)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(_valid_bytes())[:-12])
    with pytest.raises(DataError, match="gzip") as err:
        data.read_idx(path)
    assert "cut.gz" in str(err.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        data.read_idx(tmp_path / "no-such-file.gz")
    assert "no-such-file.gz" in str(err.value)


# ---------------------------------------------------------------- data dirs


def _make_dir(root: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    """Synthetic Fashion-MNIST-shaped IDX files: image i is filled with the value 10*label."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.broadcast_to((labels * 10)[:, None, None], (n, 28, 28)).astype(np.uint8)
        img_name, lbl_name = data.FILES[split]
        suffix = ".gz" if gz else ""
        data.write_idx(root / (img_name + suffix), images)
        data.write_idx(root / (lbl_name + suffix), labels)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_explicit_data_dir_is_used(tmp_path, gz):
    d = _make_dir(tmp_path / "fm", gz=gz)
    assert data.find_data_dir(str(d)) == d
    assert str(d) in data.describe_source(d)
    for split, n in (("train", 20), ("test", 10)):
        x, y = data.load_fashion_mnist(split, str(d))
        assert x.shape == (n, 1, 32, 32) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_array_equal(y, np.arange(n) % 10)
        want = (y * 10 / 255.0 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
        np.testing.assert_allclose(
            x[:, 0, 2:30, 2:30],
            np.broadcast_to(want[:, None, None], (n, 28, 28)),
            rtol=1e-5,
            atol=1e-6,
        )


def test_data_dir_missing_a_file_is_refused(tmp_path):
    d = _make_dir(tmp_path / "fm")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        data.find_data_dir(d)
    assert "train-images" not in str(err.value)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.load_fashion_mnist("train", d)
    with pytest.raises(DataError, match="does not exist"):
        data.find_data_dir(tmp_path / "nowhere")


def test_mismatched_counts_and_bad_labels_are_refused(tmp_path):
    d = _make_dir(tmp_path / "fm")
    data.write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="20 images"):
        data.load_fashion_mnist("train", d)
    data.write_idx(d / "train-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(DataError, match="outside 0..9"):
        data.load_fashion_mnist("train", d)
    with pytest.raises(DataError, match="split"):
        data.load_fashion_mnist("valid", d)


def test_bundled_false_without_data_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_DIR", str(tmp_path / "absent"))
    assert data.find_data_dir(None) is None
    with pytest.raises(DataError, match="not found"):
        data.load_fashion_mnist("test", bundled=False)
    assert "bundled" in data.describe_source()  # None falls back to the subset
    x, _ = data.load_fashion_mnist("test")
    assert x.shape[0] == 1000


def test_debian_dir_is_found_when_present(monkeypatch, tmp_path):
    d = _make_dir(tmp_path / "deb", gz=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", str(d))
    assert data.find_data_dir(None) == d
    assert data.load_fashion_mnist("train")[0].shape == (20, 1, 32, 32)
    assert data.load_fashion_mnist("train", bundled=True)[0].shape == (6000, 1, 32, 32)


# ---------------------------------------------------------------- the bundled subset


@pytest.fixture(scope="module")
def bundled():
    return {s: data.load_fashion_mnist(s, bundled=True) for s in ("train", "test")}


def test_bundled_subset_shapes_and_normalization(bundled):
    assert len(data.FASHION_MNIST_CLASSES) == 10
    for split, n in (("train", 6000), ("test", 1000)):
        x, y = bundled[split]
        assert x.shape == (n, 1, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
        assert y.shape == (n,) and y.dtype == np.int64
        border = np.concatenate(
            [
                x[:, :, :2].ravel(),
                x[:, :, -2:].ravel(),
                x[:, :, :, :2].ravel(),
                x[:, :, :, -2:].ravel(),
            ]
        )
        np.testing.assert_allclose(border, PAD_VALUE, rtol=1e-6)
        lo, hi = PAD_VALUE, (1.0 - data.FASHION_MNIST_MEAN) / data.FASHION_MNIST_STD
        assert x.min() == pytest.approx(lo, rel=1e-6) and x.max() == pytest.approx(hi, rel=1e-6)
        # the inner pixels have roughly the Fashion-MNIST statistics
        inner = x[:, 0, 2:30, 2:30] * data.FASHION_MNIST_STD + data.FASHION_MNIST_MEAN
        assert abs(inner.mean() - data.FASHION_MNIST_MEAN) < 0.01
        assert abs(inner.std() - data.FASHION_MNIST_STD) < 0.01


def test_bundled_subset_is_stratified(bundled):
    np.testing.assert_array_equal(np.bincount(bundled["train"][1], minlength=10), [600] * 10)
    np.testing.assert_array_equal(np.bincount(bundled["test"][1], minlength=10), [100] * 10)


def test_bundled_subset_files_and_size():
    names = {p.name for p in data.BUNDLED_DIR.iterdir()}
    assert {n + ".gz" for n in data.REQUIRED_FILES} <= names
    assert {"LICENSE", "README.md"} <= names
    assert "Zalando SE" in (data.BUNDLED_DIR / "LICENSE").read_text()
    assert sum(p.stat().st_size for p in data.BUNDLED_DIR.iterdir()) < 4_000_000


@pytest.mark.skipif(
    data.find_data_dir(None) is None, reason=f"full Fashion-MNIST not in {data.DEBIAN_DIR}"
)
def test_full_fashion_mnist_row_counts():
    d = data.find_data_dir(None)
    assert "full" in data.describe_source()
    # read_idx only: normalizing 60000 images is needlessly slow for a row count
    counts = {name: len(data.read_idx(data.find_idx_file(d, name))) for name in data.REQUIRED_FILES}
    assert counts == {
        "train-images-idx3-ubyte": 60000,
        "train-labels-idx1-ubyte": 60000,
        "t10k-images-idx3-ubyte": 10000,
        "t10k-labels-idx1-ubyte": 10000,
    }
    _, y = data.load_fashion_mnist("test", bundled=False)
    assert y.shape == (10000,)


# ---------------------------------------------------------------- minibatches


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n, bs", [(10, 3), (12, 4), (5, 5), (7, 1)])
def test_minibatches_drop_last(n, bs, shuffle):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n)
    seen = []
    for xb, yb in data.iterate_minibatches(x, y, bs, shuffle=shuffle, rng=0):
        assert xb.shape == (bs, 2) and yb.shape == (bs,)
        assert xb.flags.c_contiguous and yb.flags.c_contiguous
        np.testing.assert_array_equal(xb[:, 0], yb * 2)  # rows stay paired
        seen.extend(yb.tolist())
    assert len(seen) == len(set(seen)) == (n // bs) * bs
    if not shuffle:
        assert seen == list(range(len(seen)))


@pytest.mark.parametrize("shuffle", [False, True])
def test_minibatches_keep_last(shuffle):
    x, y = np.zeros((10, 1, 2, 2), np.float32), np.arange(10)
    batches = list(data.iterate_minibatches(x, y, 4, shuffle=shuffle, drop_last=False, rng=3))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == list(range(10))


def test_minibatches_shuffle_is_seeded_and_varies_per_epoch():
    x, y = np.zeros((64, 1)), np.arange(64)

    def epoch(rng):
        return np.concatenate([yb for _, yb in data.iterate_minibatches(x, y, 8, rng=rng)])

    np.testing.assert_array_equal(epoch(5), epoch(5))
    g = np.random.default_rng(5)
    assert not np.array_equal(epoch(g), epoch(g))
    assert not np.array_equal(epoch(5), np.arange(64))


def test_minibatches_errors():
    x, y = np.zeros((4, 2)), np.zeros(5)
    with pytest.raises(DataError, match="4 inputs but 5"):
        data.iterate_minibatches(x, y, 2)  # checked at the call, not at the first next()
    with pytest.raises(DataError, match="batch_size"):
        data.iterate_minibatches(x, y[:4], 0)
    with pytest.raises(DataError, match="no full batch"):
        data.iterate_minibatches(x, y[:4], 8)


def _shifted_and_mirrored(image: np.ndarray, p: int, fill: float | None) -> list[np.ndarray]:
    """Every crop of ``image`` (C, H, W) padded by ``p`` (edge or ``fill``), and its mirror."""
    pad = ((0, 0), (p, p), (p, p))
    padded = (
        np.pad(image, pad, mode="edge")
        if fill is None
        else np.pad(image, pad, constant_values=fill)
    )
    h, w = image.shape[1:]
    crops = [padded[:, i : i + h, j : j + w] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    return crops + [c[:, :, ::-1] for c in crops]


@pytest.mark.parametrize("fill", [None, -7.0])
def test_augment_gives_each_image_one_of_its_crops_or_their_mirrors(fill):
    x = np.random.default_rng(0).standard_normal((40, 2, 6, 5)).astype(np.float32)
    out = data.augment(x, np.random.default_rng(1), crop_padding=2, fill=fill)
    assert out.shape == x.shape and out.dtype == x.dtype
    mirrored = 0
    for image, result in zip(x, out):
        candidates = _shifted_and_mirrored(image, 2, fill)
        matches = [k for k, c in enumerate(candidates) if np.array_equal(c, result)]
        assert matches, "not a crop of the padded image nor its mirror"
        mirrored += min(matches) >= 25
    assert 5 < mirrored < 35  # about half are flipped
    assert not np.array_equal(out, x)


def test_augment_is_seeded_and_leaves_its_input_alone():
    x = np.random.default_rng(0).standard_normal((8, 1, 32, 32)).astype(np.float32)
    before = x.copy()
    a = data.augment(x, np.random.default_rng(5))
    b = data.augment(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, before)
    assert not np.array_equal(a, data.augment(x, np.random.default_rng(6)))


def test_augment_without_crop_or_flip_is_the_identity():
    x = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
    out = data.augment(x, np.random.default_rng(0), crop_padding=0, flip=False)
    np.testing.assert_array_equal(out, x)
    flipped = data.augment(x, np.random.default_rng(0), crop_padding=0)
    for image, result in zip(x, flipped):
        assert np.array_equal(result, image) or np.array_equal(result, image[:, :, ::-1])


def test_augment_refuses_a_batch_that_is_not_nchw():
    with pytest.raises(DataError, match=r"\(N, C, H, W\) batch, got shape \(4, 32, 32\)"):
        data.augment(np.zeros((4, 32, 32), np.float32), np.random.default_rng(0))
