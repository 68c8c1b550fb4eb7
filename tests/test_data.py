"""fnn.data: loading MNIST (and same-layout datasets) through `datasets` and Pillow.

Ground truth comes from outside the loader: the README's published checks of the shipped
MNIST copy, images decoded directly from the parquet files with pyarrow + Pillow, and
PNGs encoded by hand here with every PNG row filter.
"""

import hashlib
import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from fnn import arraycache
from fnn.data import DEFAULT_MNIST_DIR, Dataset, load_mnist, needs_decoding

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "data" / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------------------------------
# Helpers


def png(pixels: np.ndarray, filters=(0,), *, idat_parts: int = 1, text: bytes = b"") -> bytes:
    """Encode 8-bit grayscale pixels as PNG by hand, row r with filters[r % len]."""
    h, w = pixels.shape
    p = pixels.astype(int)
    raw = bytearray()
    for r in range(h):
        ft = filters[r % len(filters)]
        raw.append(ft)
        for c in range(w):
            a = p[r, c - 1] if c else 0
            b = p[r - 1, c] if r else 0
            cc = p[r - 1, c - 1] if r and c else 0
            if ft == 0:
                pred = 0
            elif ft == 1:
                pred = a
            elif ft == 2:
                pred = b
            elif ft == 3:
                pred = (a + b) // 2
            else:  # Paeth, as written in the PNG spec
                est = a + b - cc
                pa_, pb_, pc_ = abs(est - a), abs(est - b), abs(est - cc)
                pred = a if pa_ <= pb_ and pa_ <= pc_ else (b if pb_ <= pc_ else cc)
            raw.append((p[r, c] - pred) % 256)
    data = zlib.compress(bytes(raw))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    cut = np.linspace(0, len(data), idat_parts + 1).astype(int)
    idats = b"".join(chunk(b"IDAT", data[i:j]) for i, j in zip(cut[:-1], cut[1:]))
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    extra = chunk(b"tEXt", text) if text else b""  # an ancillary chunk before the data
    return b"\x89PNG\r\n\x1a\n" + ihdr + extra + idats + chunk(b"IEND", b"")


def pil_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_folder(
    root: Path,
    splits: dict,
    *,
    image_column: str = "image",
    label_column: str = "label",
    label_feature=None,
) -> Path:
    """A dataset folder in the hub layout: <root>/data/<split>-00000-of-00001.parquet.

    splits: {name: (list of PNG bytes, list of labels)}.
    """
    features = datasets.Features(
        {
            image_column: datasets.Image(),
            label_column: label_feature or datasets.ClassLabel(num_classes=10),
        }
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, (blobs, labels) in splits.items():
        ds = datasets.Dataset.from_dict(
            {image_column: [{"bytes": b, "path": None} for b in blobs], label_column: labels},
            features=features,
        )
        ds.to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
    return root


def random_images(seed: int, n: int, h: int = 5, w: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "hf-cache"


@pytest.fixture
def small(tmp_path):
    """5x7 images (non-square, so H and W cannot be swapped unnoticed), custom columns."""
    pix = random_images(1, 13)
    test_pix = random_images(2, 4)
    folder = write_folder(
        tmp_path / "fashion",
        {
            "train": ([png(p, (0, 1, 2, 3, 4)) for p in pix], [i % 10 for i in range(13)]),
            "test": ([png(p, (4, 3)) for p in test_pix], [9, 8, 7, 6]),
        },
        image_column="img",
        label_column="target",
    )
    return folder, pix, test_pix


# ---------------------------------------------------------------------------------------
# The shipped MNIST


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist-hf-cache")


@pytest.fixture(scope="module")
def mnist(mnist_cache):
    return load_mnist(cache_dir=mnist_cache)


def test_shipped_copy_is_the_published_one():
    readme = (MNIST / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme or "cc-by-sa-3.0" in readme
    assert DEFAULT_MNIST_DIR == MNIST
    for name in ("train", "test"):
        path = MNIST / "mnist" / f"{name}-00000-of-00001.parquet"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  mnist/{path.name}" in readme


def test_mnist_shapes_dtypes_range(mnist):
    assert isinstance(mnist, Dataset)
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    for x in (x_train, x_test):
        assert x.flags.c_contiguous and x.flags.writeable
        assert x.min() == 0.0 and x.max() == 1.0


def test_mnist_labels_and_statistics(mnist):
    assert np.bincount(mnist.y_train).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == TEST_COUNTS
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # In float64, a block at a time: a whole-array float64 temporary is slow to allocate.
    total = squares = 0.0
    for block in np.array_split(mnist.x_train, 12):
        b = block.astype(np.float64)
        total += b.sum()
        squares += np.einsum("ij,ij->", b, b)
    mean = total / mnist.x_train.size
    std = np.sqrt(squares / mnist.x_train.size - mean**2)
    assert mean == pytest.approx(0.1307, abs=5e-5)
    assert std == pytest.approx(0.3081, abs=5e-5)


@pytest.mark.parametrize(
    ("split", "rows"), [("train", [0, 1, 12345, 59999]), ("test", [0, 4321, 9999])]
)
def test_mnist_pixels_equal_pillow_decoding(mnist, split, rows):
    # Independent of datasets: pyarrow reads the parquet file, Pillow decodes the PNG.
    table = pq.read_table(MNIST / "mnist" / f"{split}-00000-of-00001.parquet")
    x = mnist.x_train if split == "train" else mnist.x_test
    y = mnist.y_train if split == "train" else mnist.y_test
    for i in rows:
        cell = table.column("image")[i].as_py()
        ref = np.asarray(Image.open(io.BytesIO(cell["bytes"])), dtype=np.float32) / 255
        assert ref.shape == (28, 28)
        np.testing.assert_array_equal(x[i], ref.reshape(784))
        assert y[i] == table.column("label")[i].as_py()


# sha256 of the uint8 pixels (n, 28, 28) of each split, as decoded by fnn's earlier
# hand-written PNG decoder (commit 4274175), which agreed with Pillow image by image.
MNIST_PIXEL_SHA = {
    "train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
}


def test_mnist_every_pixel_matches_the_recorded_decoding(mnist):
    for split, x in (("train", mnist.x_train), ("test", mnist.x_test)):
        pixels = np.rint(x * 255).astype(np.uint8)  # exact: x holds k / 255
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == MNIST_PIXEL_SHA[split], split


def test_mnist_float64(mnist, mnist_cache):
    d64 = load_mnist(cache_dir=mnist_cache, dtype=np.float64)
    assert d64.x_train.dtype == d64.x_test.dtype == np.float64
    assert d64.x_train.shape == (60000, 784) and d64.x_test.shape == (10000, 784)
    # (The test split only: comparing 47M floats with assert_array_equal takes seconds.)
    assert np.array_equal(d64.x_test.astype(np.float32), mnist.x_test)
    assert np.array_equal(d64.y_train, mnist.y_train)
    for split, x, i in (("test", d64.x_test, 7), ("train", d64.x_train, 59999)):
        table = pq.read_table(MNIST / "mnist" / f"{split}-00000-of-00001.parquet")
        blob = table.column("image")[i].as_py()["bytes"]
        ref = np.asarray(Image.open(io.BytesIO(blob)), dtype=np.float64) / 255
        np.testing.assert_array_equal(x[i], ref.reshape(784))


def test_mnist_calls_return_fresh_arrays(mnist, mnist_cache):
    again = load_mnist(cache_dir=mnist_cache)
    for a, b in zip(mnist, again):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)
    again.x_train[0] = 7.0  # the caller's to change; the next call is unaffected
    assert load_mnist(cache_dir=mnist_cache).x_train[0].max() == 1.0


# ---------------------------------------------------------------------------------------
# Other datasets in the same layout


def test_custom_columns_and_non_square_images(small, cache_dir):
    folder, pix, test_pix = small
    d = load_mnist(folder, image_column="img", label_column="target", cache_dir=cache_dir)
    assert d.x_train.shape == (13, 35) and d.x_test.shape == (4, 35)
    np.testing.assert_array_equal(d.x_train, pix.reshape(13, 35).astype(np.float32) / 255)
    np.testing.assert_array_equal(d.x_test, test_pix.reshape(4, 35).astype(np.float32) / 255)
    assert d.y_train.tolist() == [i % 10 for i in range(13)]
    assert d.y_test.tolist() == [9, 8, 7, 6]
    grid = load_mnist(
        folder,
        image_column="img",
        label_column="target",
        flatten=False,
        dtype=np.float64,
        cache_dir=cache_dir,
    )
    assert grid.x_train.shape == (13, 5, 7) and grid.x_train.dtype == np.float64
    np.testing.assert_array_equal(grid.x_train, pix / 255)


def test_every_png_filter_and_layout_decodes_to_the_encoded_pixels(tmp_path, cache_dir):
    rng = np.random.default_rng(3)
    pix = rng.integers(0, 256, (12, 9, 6), dtype=np.uint8)
    pix[5] = np.linspace(0, 255, 54).reshape(9, 6)  # smooth: filters predict well
    blobs = []
    for i, p in enumerate(pix):
        if i < 5:
            blobs.append(png(p, (i,)))  # one filter type for every row
        elif i < 8:
            blobs.append(png(p, (4, 3, 2, 1, 0)))
        elif i == 8:
            blobs.append(png(p, (3,), idat_parts=3))  # several IDAT chunks
        elif i == 9:
            blobs.append(png(p, (4,), text=b"Comment\x00hi"))
        elif i == 10:
            blobs.append(pil_png(Image.fromarray(p)))  # what Pillow writes
        else:
            blobs.append(pil_png(Image.fromarray(p > 127)))  # mode "1": 0 or 255
    pix[11] = np.where(pix[11] > 127, 255, 0)
    for b, p in zip(blobs[:10], pix):  # the hand-made PNGs are valid: Pillow agrees
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(b))), p)
    folder = write_folder(
        tmp_path / "filters", {"train": (blobs, [1] * 12), "test": (blobs[:1], [2])}
    )
    d = load_mnist(folder, cache_dir=cache_dir, cache=False)
    np.testing.assert_array_equal(d.x_train, pix.reshape(12, 54).astype(np.float32) / 255)


def test_binary_column_without_hf_metadata(tmp_path, cache_dir):
    # Plain parquet from another tool: the image column is just encoded bytes.
    pix = random_images(4, 3, 4, 4)
    (tmp_path / "plain" / "data").mkdir(parents=True)
    for name in ("train", "test"):
        table = pa.table({"image": [png(p, (1, 2)) for p in pix], "label": [3, 1, 2]})
        pq.write_table(table, tmp_path / "plain" / "data" / f"{name}-00000-of-00001.parquet")
    d = load_mnist(tmp_path / "plain", cache_dir=cache_dir)
    np.testing.assert_array_equal(d.x_test, pix.reshape(3, 16).astype(np.float32) / 255)
    assert d.y_train.tolist() == [3, 1, 2]


def test_source_from_environment(small, cache_dir, monkeypatch):
    folder, _, _ = small
    monkeypatch.setenv("FNN_DATA_DIR", str(folder))
    d = load_mnist(image_column="img", label_column="target", cache_dir=cache_dir)
    assert d.x_train.shape == (13, 35)
    monkeypatch.setenv("FNN_DATA_DIR", str(folder / "nope"))
    with pytest.raises(FileNotFoundError, match="FNN_DATA_DIR"):
        load_mnist(cache_dir=cache_dir)


def test_hub_id_goes_to_load_dataset(small, cache_dir, monkeypatch):
    # No hub here: a stand-in load_dataset serves the id from a local folder.
    folder, pix, _ = small
    real_load = datasets.load_dataset
    calls = []

    def fake_load(path, **kwargs):
        calls.append((path, kwargs.get("revision")))
        assert path == "acme/digits"
        return real_load(str(folder), cache_dir=kwargs["cache_dir"])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    kw = {"image_column": "img", "label_column": "target", "cache_dir": cache_dir}
    d = load_mnist("acme/digits", revision="v1.0", **kw)
    np.testing.assert_array_equal(d.x_train, pix.reshape(13, 35).astype(np.float32) / 255)
    assert calls == [("acme/digits", "v1.0")]
    assert len(entries(cache_dir)) == 2  # keyed on the HF cache files of the hub data
    again = load_mnist("acme/digits", revision="v1.0", **kw)
    np.testing.assert_array_equal(again.x_test, d.x_test)


# ---------------------------------------------------------------------------------------
# The cache


def entries(cache_dir: Path) -> list[Path]:
    root = cache_dir / "fnn-arrays"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_disk_cache_is_used_and_skips_datasets(small, cache_dir, monkeypatch):
    import fnn.data as fdata

    folder, _, _ = small
    kw = {"image_column": "img", "label_column": "target", "cache_dir": cache_dir}
    first = load_mnist(folder, **kw)
    assert len(entries(cache_dir)) == 2  # one per split
    arraycache.clear_memory()  # as in a new process

    def no_datasets(*args, **kwargs):
        raise AssertionError("a warm load must not go through datasets")

    monkeypatch.setattr(fdata, "_load_dataset_dict", no_datasets)
    second = load_mnist(folder, **kw)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # A damaged entry is dropped and rebuilt, not trusted.
    monkeypatch.undo()
    arraycache.clear_memory()
    for entry in entries(cache_dir):
        (entry / "x.npy").write_bytes(b"garbage")
    third = load_mnist(folder, **kw)
    np.testing.assert_array_equal(third.x_train, first.x_train)


def test_cache_follows_source_changes(small, cache_dir):
    folder, _, test_pix = small
    kw = {"image_column": "img", "label_column": "target", "cache_dir": cache_dir}
    before = load_mnist(folder, **kw)
    names = {p.name.split("-")[0] for p in entries(cache_dir)}
    write_folder(
        folder,
        {"test": ([png(p) for p in test_pix[::-1]], [1, 2, 3, 4])},
        image_column="img",
        label_column="target",
    )
    after = load_mnist(folder, **kw)
    assert after.y_test.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(after.x_test, before.x_test[::-1])
    np.testing.assert_array_equal(after.x_train, before.x_train)
    # The new state replaced the old entries of the same source and split.
    assert {p.name.split("-")[0] for p in entries(cache_dir)} == names
    assert len(entries(cache_dir)) == 2


def test_needs_decoding_says_whether_a_load_would_decode(small, cache_dir, tmp_path,
                                                       monkeypatch):
    import fnn.data as fdata

    folder, _, test_pix = small
    kw = {"image_column": "img", "label_column": "target", "cache_dir": cache_dir}
    assert needs_decoding(folder, **kw)
    load_mnist(folder, **kw)
    arraycache.clear_memory()  # as in a new process: the entries on disk answer
    reads = []
    monkeypatch.setattr(fdata.arraycache, "get", lambda *a: reads.append(a))
    assert not needs_decoding(folder, **kw)
    assert reads == []  # it reads no array
    monkeypatch.undo()
    # Another column, another split, another cache: not decoded yet.
    assert needs_decoding(folder, **{**kw, "image_column": "other"})
    assert needs_decoding(folder, **kw, train_split="test", test_split="extra")
    assert needs_decoding(folder, **{**kw, "cache_dir": tmp_path / "elsewhere"})
    assert not needs_decoding(folder, **kw, train_split="test", test_split="test")
    # A changed file is a new state: the next load decodes again.
    write_folder(folder, {"test": ([png(p) for p in test_pix[::-1]], [1, 2, 3, 4])},
                 image_column="img", label_column="target")
    assert needs_decoding(folder, **kw)
    load_mnist(folder, **kw)
    assert not needs_decoding(folder, **kw)
    # Sources it cannot judge without datasets, or that do not load: False.
    assert not needs_decoding("someone/some_dataset", cache_dir=cache_dir)
    assert not needs_decoding(tmp_path / "missing", cache_dir=cache_dir)
    assert not needs_decoding(3, cache_dir=cache_dir)


def test_no_cache_writes_nothing_and_source_untouched(small, cache_dir):
    folder, _, _ = small
    state = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    d = load_mnist(
        folder, image_column="img", label_column="target", cache=False, cache_dir=cache_dir
    )
    assert d.x_train.shape == (13, 35)
    assert entries(cache_dir) == []
    load_mnist(folder, image_column="img", label_column="target", cache_dir=cache_dir)
    assert sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*")) == state


# ---------------------------------------------------------------------------------------
# Errors


def test_missing_and_empty_sources(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match=r"no folder .*missing"):
        load_mnist(tmp_path / "missing", cache_dir=cache_dir)
    with pytest.raises(FileNotFoundError, match=r"no folder .*snapshot_download"):
        load_mnist(str(tmp_path / "a" / "b" / "c"), cache_dir=cache_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no data files.*hub layout"):
        load_mnist(tmp_path / "empty", cache_dir=cache_dir)
    (tmp_path / "file.parquet").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"file\.parquet"):
        load_mnist(tmp_path / "file.parquet", cache_dir=cache_dir)
    with pytest.raises(TypeError, match="source"):
        load_mnist(42, cache_dir=cache_dir)


def test_corrupt_parquet(small, cache_dir):
    folder, _, _ = small
    path = folder / "data" / "test-00000-of-00001.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="could not read the data files"):
        load_mnist(folder, image_column="img", label_column="target", cache_dir=cache_dir)


def test_missing_columns_and_splits(small, cache_dir):
    folder, _, _ = small
    with pytest.raises(ValueError, match=r"image_column='image'.*\['img', 'target'\]"):
        load_mnist(folder, cache_dir=cache_dir)
    with pytest.raises(ValueError, match=r"label_column='label'.*\['img', 'target'\]"):
        load_mnist(folder, image_column="img", cache_dir=cache_dir)
    with pytest.raises(ValueError, match=r"split 'validation'.*\['train', 'test'\]"):
        load_mnist(
            folder,
            image_column="img",
            label_column="target",
            test_split="validation",
            cache_dir=cache_dir,
        )
    with pytest.raises(TypeError, match="image_column='target' must hold images"):
        load_mnist(folder, image_column="target", label_column="img", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="must differ"):
        load_mnist(folder, image_column="img", label_column="img", cache_dir=cache_dir)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: [pil_png(Image.new("RGB", (4, 4)))] * 2, "mode 'RGB'.*8-bit grayscale"),
        (
            lambda: [png(np.zeros((4, 4), np.uint8)), png(np.zeros((4, 3), np.uint8))],
            "one size.*4x4.*image 1 is 4x3",
        ),
        (lambda: [pil_png(Image.new("L", (4, 4))), pil_png(Image.new("L", (5, 4)))], "one size"),
        (
            lambda: [png(np.zeros((4, 4), np.uint8)), b"not an image at all"],
            "image 1 of split 'train' could not be decoded",
        ),
        (
            lambda: [png(np.zeros((4, 4), np.uint8))[:-20] + b"\0" * 20] * 2,
            "image 0 of split 'train' could not be decoded",
        ),
    ],
    ids=["rgb", "sizes", "sizes-pillow", "not-an-image", "corrupt-png"],
)
def test_bad_images(tmp_path, cache_dir, make, message):
    blobs = make()
    folder = write_folder(
        tmp_path / "bad",
        {"train": (blobs, [0] * len(blobs)), "test": ([png(np.zeros((4, 4), np.uint8))], [0])},
    )
    with pytest.raises(ValueError, match=message):
        load_mnist(folder, cache_dir=cache_dir)


def test_first_bad_image_is_reported_whatever_the_threads_do(tmp_path, cache_dir):
    # Bad images in several of the decoding threads' runs: the first in row order wins.
    blobs = [png(p) for p in random_images(5, 60, 3, 3)]
    for i in (41, 17, 58):
        blobs[i] = b"broken"
    folder = write_folder(tmp_path / "bad", {"train": (blobs, [0] * 60), "test": (blobs[:1], [0])})
    for _ in range(3):
        with pytest.raises(ValueError, match="image 17 of split 'train' could not be decoded"):
            load_mnist(folder, cache_dir=cache_dir)


def test_bad_labels(tmp_path, cache_dir):
    blobs = [png(np.zeros((2, 2), np.uint8))] * 2
    folder = write_folder(
        tmp_path / "floats",
        {"train": (blobs, [0.0, 1.5]), "test": (blobs, [1.0, 2.0])},
        label_feature=datasets.Value("float32"),
    )
    with pytest.raises(TypeError, match="label_column='label' must hold integer"):
        load_mnist(folder, cache_dir=cache_dir)
    folder = write_folder(
        tmp_path / "strings",
        {"train": (blobs, ["a", "b"]), "test": (blobs, ["a", "b"])},
        label_feature=datasets.Value("string"),
    )
    with pytest.raises(TypeError, match="integer class labels, got string"):
        load_mnist(folder, cache_dir=cache_dir)
    folder = write_folder(
        tmp_path / "negative",
        {"train": (blobs, [0, -1]), "test": (blobs, [0, 1])},
        label_feature=datasets.Value("int64"),
    )
    with pytest.raises(ValueError, match="class indices >= 0, found -1 at row 1"):
        load_mnist(folder, cache_dir=cache_dir)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "uint8", "nonsense", np.complex64])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        load_mnist(dtype=dtype)


def test_bad_argument_types():
    with pytest.raises(TypeError, match="image_column: expected a non-empty str, got None"):
        load_mnist(image_column=None)
    with pytest.raises(TypeError, match="test_split"):
        load_mnist(test_split="")
    with pytest.raises(ValueError, match=r"revision.*hub ids only"):
        load_mnist(revision="main")


def run_isolated(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FNN_"))}
    full_env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(ROOT), **env)
    prelude = textwrap.dedent(
        """
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("network blocked by the test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.getaddrinfo = refuse
        from fnn.data import load_mnist
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_local_folder_never_touches_the_network(small, tmp_path):
    folder, _, _ = small
    code = f"""
        d = load_mnist({str(folder)!r}, image_column="img", label_column="target")
        assert d.x_train.shape == (13, 35), d.x_train.shape
        assert not attempts, attempts
        print("ok")
    """
    result = run_isolated(code, tmp_path)  # not even told to be offline
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_hub_id_offline_explains_how_to_get_a_local_copy(small, tmp_path):
    folder, _, _ = small
    code = f"""
        d = load_mnist({str(folder)!r}, image_column="img", label_column="target")
        try:
            load_mnist("ylecun/mnist")
        except ConnectionError as e:
            print("MESSAGE", e)
        assert not attempts, attempts
    """
    result = run_isolated(code, tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "MESSAGE" in message and "'ylecun/mnist'" in message
    assert "snapshot_download" in message and "FNN_DATA_DIR" in message
