"""Loading image-classification data (MNIST and look-alikes) and batching it.

`load_mnist` reads a dataset in the Hugging Face hub layout (a folder of parquet files
with an image column and a label column, as `datasets.load_dataset` reads it) and returns
NumPy arrays ready for an MLP: ``x`` of shape ``(n, H*W)`` in [0, 1], ``y`` int64. By
default it reads the full MNIST shipped in the repository (``data/mnist``).

`batch_indices` / `iterate_batches` give one epoch's mini-batches, shuffled from an
explicit seed or Generator (never NumPy's global random state).

`datasets`, `pyarrow` and Pillow are imported lazily: importing `fnn` stays cheap, and a
warm load from the array cache does not import `datasets` at all.
"""

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from .validate import check_dtype, check_int

__all__ = [
    "DEFAULT_MNIST_DIR",
    "Dataset",
    "batch_indices",
    "iterate_batches",
    "load_mnist",
]

#: The full MNIST shipped with the repository, in the Hugging Face hub layout.
DEFAULT_MNIST_DIR: Path = Path(__file__).resolve().parent.parent / "data" / "mnist"

# Bump when the cached arrays' meaning or file format changes, so old entries are ignored.
_CACHE_FORMAT = 1
_MEMORY_CACHE_SIZE = 8  # entries are one split's uint8 images + labels (MNIST: 47 + 8 MB)

_PNG_SIGNATURE = np.frombuffer(b"\x89PNG\r\n\x1a\n", dtype=np.uint8)
# A hub id: "name" or "owner/name"; anything else that does not exist is a missing path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class Dataset(NamedTuple):
    """Train and test arrays of an image-classification dataset.

    ``x_*``: float32 or float64, shape ``(n, H*W)`` (or ``(n, H, W)`` with
    ``flatten=False``), pixel values scaled to [0, 1]. ``y_*``: int64, shape ``(n,)``,
    class indices >= 0. Rows keep the source order.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_mnist(
    source: str | os.PathLike[str] | None = None,
    *,
    dtype: DTypeLike = np.float32,
    image_column: str = "image",
    label_column: str = "label",
    train_split: str = "train",
    test_split: str = "test",
    flatten: bool = True,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> Dataset:
    """Load the train and test splits of MNIST (or any same-layout image dataset).

    Args:
        source: a local folder in the Hugging Face hub layout (what
            ``datasets.load_dataset(folder)`` reads: parquet files named by split, or a
            README with ``configs``), or a hub id such as ``"ylecun/mnist"`` or
            ``"zalando-datasets/fashion_mnist"`` (needs the network, or the HF cache with
            ``HF_HUB_OFFLINE=1``). Default: ``$FNN_DATA_DIR`` if set, else the copy shipped
            in the repository, `DEFAULT_MNIST_DIR`. A `Path` is always a local folder.
        dtype: float32 (default) or float64, the dtype of ``x``.
        image_column: the column of 8-bit grayscale images (a ``datasets.Image`` or
            binary column of encoded images, e.g. PNG), all of one size H x W.
        label_column: the column of integer class labels (``ClassLabel`` or integers).
        train_split, test_split: the split names to load as train and test.
        flatten: ``x`` of shape ``(n, H*W)`` if true, else ``(n, H, W)``.
        cache: reuse decoded images: in this process, and for local folders across
            processes through ``.npy`` files (see below). False decodes afresh through
            ``datasets`` and writes no cache.
        cache_dir: the Hugging Face datasets cache to use (passed to ``load_dataset``);
            the array cache lives in its ``fnn-arrays`` subfolder. Default:
            ``$HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else
            ``~/.cache/huggingface/datasets``.
        revision: the hub revision (branch, tag or commit) to pin; hub ids only.

    Returns:
        `Dataset(x_train, y_train, x_test, y_test)`: fresh, writable arrays on every call.
        For the shipped MNIST: x_train (60000, 784), x_test (10000, 784), labels 0..9.

    Raises:
        TypeError: a bad argument type, an unsupported dtype, a non-image image column,
            non-integer labels.
        FileNotFoundError: the folder does not exist or holds no data files; an unknown
            hub id. NotADirectoryError: ``source`` is a file.
        ConnectionError: a hub id while the hub cannot be reached (the message says how
            to get a local copy).
        ValueError: unreadable/corrupt files, a missing split or column (the message lists
            those present), images that are not grayscale or not all one size, null or
            negative labels.

    The array cache: decoded images are kept as uint8 (n, H, W) plus int64 labels, keyed
    on the folder's resolved path, the size and mtime of every file under it, the column
    and split names and the ``datasets`` version, so any change to the source reads it
    afresh. On disk the entries sit in ``<cache_dir>/fnn-arrays`` (never in the source
    folder), are written atomically, and replace older entries of the same source and
    split. A disk hit skips ``datasets`` altogether; scaling to floats is done per call.
    """
    dtype = check_dtype(dtype)
    for name, value in (
        ("image_column", image_column),
        ("label_column", label_column),
        ("train_split", train_split),
        ("test_split", test_split),
    ):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty str, got {value!r}")
    if image_column == label_column:
        raise ValueError(f"image_column and label_column must differ, both are {image_column!r}")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision must be a str or None, got {revision!r}")

    (x_train, y_train), (x_test, y_test) = _load_uint8(
        source,
        (train_split, test_split),
        image_column,
        label_column,
        cache=bool(cache),
        cache_dir=cache_dir,
        revision=revision,
    )
    return Dataset(
        _to_float(x_train, dtype, flatten),
        y_train.copy(),
        _to_float(x_test, dtype, flatten),
        y_test.copy(),
    )


def batch_indices(
    n: int,
    batch_size: int,
    rng: np.random.Generator | int | Sequence[int] | None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """One epoch's mini-batches, as index arrays into the ``n`` examples.

    Every index in ``range(n)`` appears exactly once (with ``drop_last`` at most once), in
    batches of ``batch_size``; the last batch holds the remainder ``n % batch_size``
    unless ``drop_last`` drops it.

    Args:
        n: the number of examples, an int >= 0.
        batch_size: an int >= 1.
        rng: where the shuffle comes from; never NumPy's global state.
            A ``np.random.Generator`` is advanced, so calling again with the same
            Generator gives the next epoch's (different) order: create it once per run,
            ``rng = np.random.default_rng(seed)``, and pass it every epoch.
            An int seed or a sequence of ints (e.g. ``(seed, epoch)``) gives the order
            as a pure function of those numbers: the same value, the same order, so a run
            can resume at any epoch. May be None only with ``shuffle=False``.
        shuffle: False keeps the order 0..n-1 (``rng`` is then not used).
        drop_last: drop a last batch smaller than ``batch_size``.

    Returns:
        A list of int64 arrays, each of shape ``(batch_size,)`` except possibly the last.

    Typical training loop::

        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            for idx in batch_indices(len(x), 128, rng):
                params = step(params, x[idx], y[idx])
    """
    n = check_int(n, "n", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    if shuffle:
        order = _generator(rng).permutation(n)
    else:
        order = np.arange(n, dtype=np.int64)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | int | Sequence[int] | None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield one epoch's ``(x[idx], y[idx])`` mini-batches; see `batch_indices`.

    ``x``: shape ``(n, ...)``; ``y``: shape ``(n, ...)`` with the same ``n``. Batches are
    copies (fancy indexing), of shapes ``(b, ...)`` and dtypes those of ``x`` and ``y``.
    The order is drawn when the generator starts, from ``rng`` as in `batch_indices`.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(
            "x and y must be arrays with the same first dimension, "
            f"got shapes {x.shape} and {y.shape}"
        )
    for idx in batch_indices(len(x), batch_size, rng, shuffle=shuffle, drop_last=drop_last):
        yield x[idx], y[idx]


# ---------------------------------------------------------------------------------------
# Argument checks


def _generator(rng: np.random.Generator | int | Sequence[int] | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise ValueError(
            "rng is None but shuffle=True: pass a np.random.Generator, an int seed or a "
            "sequence of ints such as (seed, epoch); the global NumPy state is never used"
        )
    if isinstance(rng, np.random.RandomState):
        raise TypeError("rng must be a np.random.Generator, not a legacy RandomState")
    expected = "rng must be a np.random.Generator, an int seed >= 0 or a sequence of such ints"
    try:
        return np.random.default_rng(rng)
    except TypeError as e:
        raise TypeError(f"{expected}, got {rng!r}") from e
    except ValueError as e:
        raise ValueError(f"{expected}, got {rng!r}") from e


# ---------------------------------------------------------------------------------------
# Finding the data


def _resolve_source(source: str | os.PathLike[str] | None) -> tuple[str, Any]:
    """("local", resolved Path) or ("hub", id)."""
    if source is None:
        env = os.environ.get("FNN_DATA_DIR")
        if env:
            path = Path(env).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(
                    f"FNN_DATA_DIR={env!r} is not a folder; point it at a dataset folder in "
                    "the Hugging Face hub layout (such as the repository's data/mnist), or "
                    "unset it to use the copy shipped in the repository"
                )
            return "local", path.resolve()
        if not DEFAULT_MNIST_DIR.is_dir():
            raise FileNotFoundError(
                f"the bundled MNIST copy is missing: no folder {DEFAULT_MNIST_DIR}. "
                "Install fnn from a repository checkout (pip install -e .), or pass "
                "source=<folder> / set FNN_DATA_DIR to a local copy. " + _LOCAL_COPY_HINT
            )
        return "local", DEFAULT_MNIST_DIR
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "source must be a folder path (str or os.PathLike), a hub id str or None, "
            f"got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return "local", path.resolve()
    if path.exists():
        raise NotADirectoryError(
            f"source must be a dataset folder in the Hugging Face hub layout, got the file "
            f"{path}; pass the folder holding it"
        )
    if isinstance(source, str) and _HUB_ID.fullmatch(source) and ".." not in source:
        return "hub", source
    raise FileNotFoundError(
        f"source: no folder {path.resolve()} (and {str(source)!r} is not a hub id). "
        + _LOCAL_COPY_HINT
    )


_LOCAL_COPY_HINT = (
    "To get a local copy of a hub dataset, on a machine with internet run "
    '`python -c "from huggingface_hub import snapshot_download; '
    "snapshot_download('ylecun/mnist', repo_type='dataset', local_dir='mnist')\"` "
    "(any hub id instead of ylecun/mnist), copy that folder here and pass it as "
    "source=<folder> or set FNN_DATA_DIR=<folder>."
)


def _hf_cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    # The same resolution as datasets.config, without importing datasets (0.5 s).
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(hf_home).expanduser() / "datasets"


def _folder_state(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every non-hidden file, as datasets sees them."""
    state = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = os.path.join(root, name)
            st = os.stat(full)
            state.append((os.path.relpath(full, folder), st.st_size, st.st_mtime_ns))
    return state


def _files_state(paths: Sequence[str]) -> list[tuple[str, int, int]]:
    state = []
    for p in paths:
        st = os.stat(p)
        state.append((p, st.st_size, st.st_mtime_ns))
    return state


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def _cache_key(identity: object, state: object) -> tuple[str, str]:
    """(entry prefix, full entry name): the prefix names source+split+columns, so a new
    state of the same source replaces the old entry instead of piling up."""
    prefix = _digest([_CACHE_FORMAT, identity])
    return prefix, f"{prefix}-{_digest([state, _datasets_version()])}"


def _datasets_version() -> str:
    # Part of the key: a new datasets may map files to splits differently.
    try:
        return metadata.version("datasets")
    except metadata.PackageNotFoundError:
        return "none"


# ---------------------------------------------------------------------------------------
# The array cache


_memory: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_memory_lock = threading.Lock()


def _memory_get(key: str) -> tuple[np.ndarray, np.ndarray] | None:
    with _memory_lock:
        hit = _memory.get(key)
        if hit is not None:
            _memory.move_to_end(key)
        return hit


def _memory_put(key: str, arrays: tuple[np.ndarray, np.ndarray]) -> None:
    # Read-only, since every caller shares them; callers get scaled copies.
    for a in arrays:
        a.setflags(write=False)
    with _memory_lock:
        _memory[key] = arrays
        _memory.move_to_end(key)
        while len(_memory) > _MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)


def _disk_get(root: Path, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    entry = root / name
    if not entry.is_dir():
        return None
    try:
        x = np.load(entry / "x.npy", allow_pickle=False)
        y = np.load(entry / "y.npy", allow_pickle=False)
        ok = (
            x.dtype == np.uint8
            and x.ndim == 3
            and y.dtype == np.int64
            and y.ndim == 1
            and len(x) == len(y)
        )
    except (OSError, ValueError, EOFError):
        ok = False
    if not ok:
        # Damaged (e.g. a disk filled up mid-write): drop it, it is rebuilt from source.
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return x, y


def _disk_put(root: Path, prefix: str, name: str, x: np.ndarray, y: np.ndarray) -> None:
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        np.save(tmp / "x.npy", x, allow_pickle=False)
        np.save(tmp / "y.npy", y, allow_pickle=False)
        # A directory rename is atomic: readers see a whole entry or none.
        try:
            os.rename(tmp, root / name)
            tmp = None
        except OSError:
            if not (root / name).is_dir():  # not just a concurrent writer that won
                raise
        for old in root.glob(f"{prefix}-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        warnings.warn(
            f"fnn.load_mnist: could not write the array cache under {root} ({e}); "
            "loading works, but the next process decodes the images again",
            RuntimeWarning,
            stacklevel=4,
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Loading through datasets


def _load_uint8(
    source: str | os.PathLike[str] | None,
    splits: tuple[str, ...],
    image_column: str,
    label_column: str,
    *,
    cache: bool,
    cache_dir: str | os.PathLike[str] | None,
    revision: str | None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each split's images as uint8 (n, H, W) and labels int64 (n,), read-only."""
    kind, where = _resolve_source(source)
    if revision is not None and kind == "local":
        raise ValueError(f"revision={revision!r} applies to hub ids only, not to {where}")
    root = _hf_cache_root(cache_dir) / "fnn-arrays"
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def identity(split: str) -> list[str]:
        return [kind, str(where), revision or "", split, image_column, label_column]

    keys: dict[str, tuple[str, str]] = {}
    if cache and kind == "local":
        state = _folder_state(where)
        for split in splits:
            keys[split] = _cache_key(identity(split), state)
            hit = _cached(root, keys[split])
            if hit is not None:
                found[split] = hit

    missing = [s for s in dict.fromkeys(splits) if s not in found]
    if missing:
        dd = _load_dataset_dict(kind, where, cache_dir, revision)
        absent = [s for s in missing if s not in dd]
        if absent:
            raise ValueError(
                f"split {absent[0]!r} not found in {where}: it has splits {list(dd)}; "
                "pass train_split= / test_split= to choose"
            )
        for split in missing:
            ds = dd[split]
            if cache and kind == "hub" and ds.cache_files:
                # A hub dataset's state is that of its files in the HF cache.
                state = _files_state([f["filename"] for f in ds.cache_files])
                keys[split] = _cache_key(identity(split), state)
                hit = _cached(root, keys[split])
                if hit is not None:
                    found[split] = hit
                    continue
            arrays = _extract(ds, split, image_column, label_column)
            if split in keys:
                prefix, name = keys[split]
                _memory_put(name, arrays)
                _disk_put(root, prefix, name, *arrays)
            found[split] = arrays
    return [found[s] for s in splits]


def _cached(root: Path, key: tuple[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
    name = key[1]
    hit = _memory_get(name)
    if hit is None:
        hit = _disk_get(root, name)
        if hit is not None:
            _memory_put(name, hit)
    return hit


def _load_dataset_dict(
    kind: str, where: Any, cache_dir: str | os.PathLike[str] | None, revision: str | None
) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "loading data needs the Hugging Face `datasets` package: pip install 'fnn[data]'"
        ) from e

    kwargs: dict[str, Any] = {}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(Path(cache_dir).expanduser())
    if kind == "local":
        try:
            return datasets.load_dataset(str(where), **kwargs)
        except FileNotFoundError as e:  # datasets' EmptyDatasetError is one
            raise FileNotFoundError(
                f"source: no data files found in {where} ({e}); expected a folder in the "
                "Hugging Face hub layout, e.g. <folder>/data/train-00000-of-00001.parquet "
                "and .../test-00000-of-00001.parquet, or a README.md with `configs`"
            ) from e
        except Exception as e:
            raise ValueError(
                f"source: could not read the data files in {where}: "
                f"{type(e).__name__}: {e}{_cause(e)}"
            ) from e

    if revision is not None:
        kwargs["revision"] = revision
    try:
        return datasets.load_dataset(where, **kwargs)
    except ConnectionError as e:
        raise ConnectionError(
            f"source: could not reach the Hugging Face hub for {where!r} ({e}); no local "
            f"folder of that name exists either. {_LOCAL_COPY_HINT} Offline, a hub id "
            "loads only if it is already in the HF cache and HF_HUB_OFFLINE=1 is set."
        ) from e
    except FileNotFoundError as e:  # DatasetNotFoundError is one
        raise FileNotFoundError(
            f"source: {where!r} is neither a local folder nor a dataset on the hub ({e}). "
            + _LOCAL_COPY_HINT
        ) from e


def _cause(e: BaseException) -> str:
    inner = e.__cause__ or e.__context__
    return f" (caused by {type(inner).__name__}: {inner})" if inner is not None else ""


def _extract(
    ds: Any, split: str, image_column: str, label_column: str
) -> tuple[np.ndarray, np.ndarray]:
    import datasets
    import pyarrow as pa

    columns = list(ds.column_names)
    for arg, col in (("image_column", image_column), ("label_column", label_column)):
        if col not in columns:
            raise ValueError(
                f"{arg}={col!r}: no such column in split {split!r}; its columns are {columns}"
            )
    feature = ds.features[image_column]
    if not (
        isinstance(feature, datasets.Image)
        or (isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary"))
    ):
        raise TypeError(
            f"image_column={image_column!r} must hold images (a datasets.Image feature or "
            f"encoded image bytes), got {feature}"
        )
    # The arrow format hands over the stored bytes without building a PIL image per row.
    table = ds.with_format("arrow", columns=[image_column, label_column])[:]

    labels = table.column(label_column)
    if not pa.types.is_integer(labels.type):
        raise TypeError(
            f"label_column={label_column!r} must hold integer class labels, got "
            f"{labels.type} ({ds.features[label_column]})"
        )
    if labels.null_count:
        raise ValueError(f"label_column={label_column!r}: {labels.null_count} labels are null")
    y = labels.to_numpy().astype(np.int64, copy=False)
    if len(y) and y.min() < 0:
        raise ValueError(
            f"label_column={label_column!r}: labels must be class indices >= 0, found "
            f"{y.min()} at row {int(np.argmin(y))} (hub datasets mark unlabeled rows -1)"
        )
    chunks = [_image_bytes(c, image_column, split) for c in table.column(image_column).chunks]
    x = _decode_images(chunks, image_column, split)
    return x, y


def _image_bytes(chunk: Any, column: str, split: str) -> Any:
    """A pyarrow binary array of encoded images from an Image struct or binary chunk."""
    import pyarrow as pa

    if pa.types.is_struct(chunk.type):
        data = chunk.field("bytes")
        if data.null_count:
            # Images stored by path (e.g. an image folder) rather than inline.
            paths = chunk.field("path").to_pylist()
            blobs = data.to_pylist()
            for i, (blob, path) in enumerate(zip(blobs, paths)):
                if blob is None:
                    if path is None:
                        raise ValueError(
                            f"image_column={column!r}: image {i} of split {split!r} is null"
                        )
                    blobs[i] = Path(path).read_bytes()
            data = pa.array(blobs, pa.binary())
    else:
        data = chunk
        if data.null_count:
            raise ValueError(
                f"image_column={column!r}: {data.null_count} images of split {split!r} are null"
            )
    if pa.types.is_large_binary(data.type):
        return data
    return data.cast(pa.binary())


# ---------------------------------------------------------------------------------------
# Decoding


def _decode_images(chunks: list[Any], column: str, split: str) -> np.ndarray:
    """uint8 (n, H, W) from pyarrow binary arrays of encoded grayscale images.

    8-bit grayscale PNGs in one IDAT chunk (MNIST, and what Pillow writes for small
    images) take a fast path: zlib per image, then the PNG row filters undone for all
    images at once in NumPy: 3-4x faster than Pillow. Anything else goes through Pillow.
    """
    import pyarrow as pa

    n = sum(len(c) for c in chunks)
    fast_raw: list[bytes] = []  # zlib-inflated, still filtered, rows
    fast_rows: list[np.ndarray] = []  # their positions in the split
    fast_size: tuple[int, int] | None = None
    slow: list[tuple[int, memoryview | None]] = []
    base = 0
    for chunk in chunks:
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1].astype(np.int64)
        data_buf = chunk.buffers()[2]
        view = memoryview(data_buf) if data_buf is not None else memoryview(b"")
        data = np.frombuffer(view, dtype=np.uint8)
        starts, ends = offsets[:-1], offsets[1:]
        simple, sizes, lengths = _simple_pngs(data, starts, ends)
        fast = np.flatnonzero(simple)
        if fast_size is None and len(fast):
            fast_size = (int(sizes[fast[0], 0]), int(sizes[fast[0], 1]))
        if len(fast):
            # Other sizes go to Pillow, and from there to the size error.
            fast = fast[(sizes[fast, 0] == fast_size[0]) & (sizes[fast, 1] == fast_size[1])]
            expect = fast_size[0] * (fast_size[1] + 1)
            a = (starts[fast] + 41).tolist()
            b = (starts[fast] + 41 + lengths[fast]).tolist()
            inflated, bad = _inflate(view, a, b, expect)
            if bad:  # corrupt deflate data: Pillow will say so
                bad_set = set(bad)
                inflated = [r for k, r in enumerate(inflated) if k not in bad_set]
                fast = np.delete(fast, bad)
            fast_raw.extend(inflated)
            fast_rows.append(base + fast)
        others = np.setdiff1d(np.arange(len(chunk)), fast, assume_unique=True)
        slow.extend((base + i, view[starts[i] : ends[i]]) for i in others.tolist())
        base += len(chunk)

    rows = np.concatenate(fast_rows) if fast_rows else np.empty(0, dtype=np.int64)
    size = fast_size
    pixels = None
    if len(rows):
        h, w = size
        filtered = np.frombuffer(b"".join(fast_raw), dtype=np.uint8).reshape(len(rows), h, w + 1)
        pixels, bad = _unfilter(filtered)
        if bad.any():  # an invalid filter type byte: let Pillow say what is wrong
            slow.extend((int(i), None) for i in rows[bad])
            rows, pixels = rows[~bad], pixels[~bad]

    decoded: list[tuple[int, np.ndarray]] = []
    for i, blob in sorted(slow, key=lambda t: t[0]):
        if blob is None:
            blob = _blob_at(chunks, i)
        img = _pil_decode(bytes(blob), i, column, split)
        if size is None:
            size = img.shape
        elif img.shape != size:
            first = int(rows[0]) if len(rows) else decoded[0][0]
            raise ValueError(
                f"image_column={column!r}: images of split {split!r} must all have one size; "
                f"image {first} is {size[0]}x{size[1]} (HxW) but image {i} is "
                f"{img.shape[0]}x{img.shape[1]}"
            )
        decoded.append((i, img))

    if size is None:  # an empty split
        return np.empty((0, 0, 0), dtype=np.uint8)
    x = np.empty((n, *size), dtype=np.uint8)
    if len(rows):
        x[rows] = pixels
    for i, img in decoded:
        x[i] = img
    return x


def _blob_at(chunks: list[Any], i: int) -> bytes:
    for chunk in chunks:
        if i < len(chunk):
            return chunk[i].as_py()
        i -= len(chunk)
    raise IndexError(i)


def _simple_pngs(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which blobs are 8-bit grayscale, non-interlaced PNGs laid out as signature, IHDR,
    one IDAT, IEND (their (H, W) and IDAT length too), read from all headers at once."""
    n = len(starts)
    simple = np.zeros(n, dtype=bool)
    sizes = np.zeros((n, 2), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    cand = np.flatnonzero(ends - starts >= 57)  # the smallest such PNG
    if not len(cand):
        return simple, sizes, lengths
    head = data[starts[cand, None] + np.arange(41)]

    def be32(col: int) -> np.ndarray:
        b = head[:, col : col + 4].astype(np.int64)
        return (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]

    idat_len = be32(33)
    ok = (
        (head[:, :8] == _PNG_SIGNATURE).all(axis=1)
        & (be32(8) == 13)
        & (head[:, 12:16] == np.frombuffer(b"IHDR", np.uint8)).all(axis=1)
        & (head[:, 24] == 8)  # bit depth
        & (head[:, 25] == 0)  # colour type grayscale
        & (head[:, 26] == 0)  # deflate
        & (head[:, 27] == 0)  # adaptive filtering
        & (head[:, 28] == 0)  # not interlaced
        & (head[:, 37:41] == np.frombuffer(b"IDAT", np.uint8)).all(axis=1)
        & (starts[cand] + 33 + 12 + idat_len + 12 == ends[cand])
        & (be32(16) > 0)
        & (be32(20) > 0)
        # Pillow guards against decompression bombs; leave huge claimed sizes to it.
        & (be32(16) * be32(20) <= 1 << 24)
    )
    # The trailing chunk must be IEND.
    tail = data[ends[cand, None] - 8 + np.arange(4)]
    ok &= (tail == np.frombuffer(b"IEND", np.uint8)).all(axis=1)
    simple[cand] = ok
    sizes[cand, 0] = be32(20)
    sizes[cand, 1] = be32(16)
    lengths[cand] = idat_len
    return simple, sizes, lengths


def _inflate(view: memoryview, a: list[int], b: list[int], expect: int) -> tuple[list, list]:
    """zlib-inflate view[a:b] for each pair; (results, indices that failed)."""
    decompress = zlib.decompress
    try:
        out = [decompress(view[i:j], 15, expect) for i, j in zip(a, b)]
    except zlib.error:
        out = []
        for i, j in zip(a, b):
            try:
                out.append(decompress(view[i:j], 15, expect))
            except zlib.error:
                out.append(b"")
    bad = [k for k, r in enumerate(out) if len(r) != expect]
    return out, bad


def _unfilter(filtered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo PNG row filters (1 byte per pixel) for k images at once.

    filtered: uint8 (k, H, W+1), each row's filter type byte first. Returns the uint8
    (k, H, W) pixels and a (k,) mask of images with an invalid filter type.
    uint8 arithmetic wraps modulo 256, as the PNG filters are defined.
    """
    k, h, w1 = filtered.shape
    w = w1 - 1
    # Row-major over images: each step below works on one contiguous (k, W+1) block.
    rows = np.ascontiguousarray(filtered.transpose(1, 0, 2))
    types = rows[:, :, 0]
    bad = (types > 4).any(axis=0)
    out = np.empty((h, k, w), dtype=np.uint8)
    prev = np.zeros((k, w), dtype=np.uint8)
    for r in range(h):
        row = rows[r, :, 1:]
        t = types[r]
        cur = out[r]
        np.copyto(cur, row)  # type 0, None
        idx = np.flatnonzero(t == 1)  # Sub: left + x, a running sum along the row
        if len(idx):
            cur[idx] = np.cumsum(row[idx], axis=1, dtype=np.uint8)
        idx = np.flatnonzero(t == 2)  # Up
        if len(idx):
            cur[idx] += prev[idx]
        for ftype in (3, 4):  # Average, Paeth: each pixel needs its left neighbour done
            idx = np.flatnonzero(t == ftype)
            if len(idx):
                cur[idx] = _sequential_row(row[idx], prev[idx], ftype)
        prev = cur
    return out.transpose(1, 0, 2).copy(), bad


def _sequential_row(raw: np.ndarray, up: np.ndarray, ftype: int) -> np.ndarray:
    # Column by column, vectorized over the images (k, W); int16 holds sums and
    # differences of two bytes.
    raw = raw.astype(np.int16)
    up = up.astype(np.int16)
    res = np.empty_like(raw)
    left = np.zeros(len(raw), dtype=np.int16)
    upleft = np.zeros(len(raw), dtype=np.int16)
    for j in range(raw.shape[1]):
        b = up[:, j]
        if ftype == 3:
            pred = (left + b) >> 1
        else:
            pa = np.abs(b - upleft)
            pb = np.abs(left - upleft)
            pc = np.abs(left + b - 2 * upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, b, upleft))
        left = (raw[:, j] + pred) & 0xFF
        res[:, j] = left
        upleft = b
    return res.astype(np.uint8)


def _pil_decode(blob: bytes, i: int, column: str, split: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as img:
            img.load()
            mode = img.mode
            if mode == "1":
                img = img.convert("L")
            arr = np.asarray(img) if mode in ("L", "1") else None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ValueError(
            f"image_column={column!r}: image {i} of split {split!r} could not be decoded: "
            f"{type(e).__name__}: {e}"
        ) from e
    if arr is None:
        raise ValueError(
            f"image_column={column!r}: image {i} of split {split!r} has mode {mode!r}; "
            "expected 8-bit grayscale (mode 'L'). Convert the images first, e.g. "
            f"ds.map(lambda e: {{{column!r}: e[{column!r}].convert('L')}})"
        )
    return arr


def _to_float(x: np.ndarray, dtype: np.dtype, flatten: bool) -> np.ndarray:
    n, h, w = x.shape
    src = x.reshape(n, h * w) if flatten else x
    # Division (not * (1/255)) so values equal the usual `pixels / 255` bit for bit.
    return np.divide(src, dtype.type(255), dtype=dtype)
