"""Loading image-classification data (MNIST and look-alikes) as NumPy arrays.

`load_mnist` reads a dataset in the Hugging Face hub layout (a folder of parquet files
with an image column and a label column, as `datasets.load_dataset` reads it) and returns
NumPy arrays ready for an MLP: ``x`` of shape ``(n, H*W)`` in [0, 1], ``y`` int64. By
default it reads the full MNIST shipped in the repository (``data/mnist``).

Pillow decodes the images in a thread pool (it releases the GIL while decoding), once
per machine: `fnn.arraycache` keeps the uint8 arrays, and a warm load imports neither
`datasets`, `pyarrow` nor Pillow (all imported lazily, so `import fnn` stays cheap).
"""

import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from . import arraycache
from .validate import check_dtype

__all__ = ["DEFAULT_MNIST_DIR", "Dataset", "load_mnist", "needs_decoding"]

#: The full MNIST shipped with the repository, in the Hugging Face hub layout.
DEFAULT_MNIST_DIR: Path = Path(__file__).resolve().parent.parent / "data" / "mnist"

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

    The array cache (`fnn.arraycache`, in ``<cache_dir>/fnn-arrays``, never in the source
    folder) is keyed on the folder's resolved path, the size and mtime of every file
    under it, the column and split names and the ``datasets`` version: any change to the
    source reads it afresh. A hit skips ``datasets``; scaling to floats is per call.
    """
    dtype = check_dtype(dtype)
    names = {"image_column": image_column, "label_column": label_column,
             "train_split": train_split, "test_split": test_split}
    for name, value in names.items():
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name}: expected a non-empty str, got {value!r}")
    if image_column == label_column:
        raise ValueError(f"label_column: expected a column other than image_column, "
                         f"got {label_column!r} for both (they must differ)")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision: expected a str or None, got {revision!r}")

    (x_train, y_train), (x_test, y_test) = _load_uint8(
        source, (train_split, test_split), image_column, label_column,
        cache=bool(cache), cache_dir=cache_dir, revision=revision,
    )
    return Dataset(
        _to_float(x_train, dtype, flatten), y_train.copy(),
        _to_float(x_test, dtype, flatten), y_test.copy(),
    )


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


def _arrays_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where `fnn.arraycache` keeps the decoded arrays: never in the source folder."""
    return _hf_cache_root(cache_dir) / "fnn-arrays"


def _datasets_version() -> str:
    # Part of the key: a new datasets may map files to splits differently.
    try:
        return metadata.version("datasets")
    except metadata.PackageNotFoundError:
        return "none"


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
    root = _arrays_root(cache_dir)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    keys: dict[str, tuple[str, str]] = {}

    def lookup(split: str, state: object) -> bool:
        keys[split] = _entry_key(kind, where, revision, split, image_column, label_column,
                                 state)
        hit = arraycache.get(root, keys[split][1])
        if hit is not None:
            found[split] = hit
        return hit is not None

    if cache and kind == "local":
        state = arraycache.folder_state(where)
        for split in splits:
            lookup(split, state)

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
            # A hub dataset's state is that of its files in the HF cache.
            if cache and kind == "hub" and ds.cache_files and lookup(
                split, arraycache.files_state([f["filename"] for f in ds.cache_files])
            ):
                continue
            arrays = _extract(ds, split, image_column, label_column)
            if split in keys:
                arraycache.put(root, keys[split], arrays)
            found[split] = arrays
    return [found[s] for s in splits]


def _entry_key(kind: str, where: Any, revision: str | None, split: str, image_column: str,
               label_column: str, state: object) -> tuple[str, str]:
    """The array cache's key of one split (see `fnn.arraycache.entry_key`)."""
    identity = [kind, str(where), revision or "", split, image_column, label_column]
    return arraycache.entry_key(identity, state, _datasets_version())


def needs_decoding(
    source: str | os.PathLike[str] | None = None,
    *,
    image_column: str = "image",
    label_column: str = "label",
    train_split: str = "train",
    test_split: str = "test",
    cache_dir: str | os.PathLike[str] | None = None,
) -> bool:
    """Whether `load_mnist` with these arguments would decode images: True when it reads
    a local folder and a split of it is not in the array cache. Reads no array: it looks
    at the folder's file sizes and mtimes, and whether the cache entries exist.

    False for a hub id (its state is that of its files in the Hugging Face cache, which
    only `datasets` can find) and for a source that does not resolve (`load_mnist` raises).
    """
    try:
        kind, where = _resolve_source(source)
    except (OSError, TypeError):
        return False
    if kind != "local":
        return False
    root = _arrays_root(cache_dir)
    state = arraycache.folder_state(where)
    return not all(
        arraycache.has(root, _entry_key(kind, where, None, split, image_column, label_column,
                                        state)[1])
        for split in dict.fromkeys((train_split, test_split))
    )


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
        are = "label is" if labels.null_count == 1 else "labels are"
        raise ValueError(f"label_column={label_column!r}: {labels.null_count} {are} null")
    y = labels.to_numpy().astype(np.int64, copy=False)
    if len(y) and y.min() < 0:
        raise ValueError(
            f"label_column={label_column!r}: labels must be class indices >= 0, found "
            f"{y.min()} at row {int(np.argmin(y))} (hub datasets mark unlabeled rows -1)"
        )
    blobs = _image_blobs(table.column(image_column), image_column, split)
    return _decode_images(blobs, image_column, split), y


def _image_blobs(column: Any, name: str, split: str) -> list[bytes]:
    """Each row's encoded image, from a binary column or a datasets.Image struct column
    (whose images may be stored by path, e.g. an image folder, rather than inline)."""
    blobs: list[bytes] = []
    for chunk in column.chunks:
        for cell in chunk.to_pylist():
            blob, path = (cell["bytes"], cell["path"]) if isinstance(cell, dict) else (cell, None)
            if blob is None and path is None:
                i = len(blobs)
                raise ValueError(f"image_column={name!r}: image {i} of split {split!r} is null")
            blobs.append(blob if blob is not None else Path(path).read_bytes())
    return blobs


# ---------------------------------------------------------------------------------------
# Decoding


def _decode_images(blobs: list[bytes], column: str, split: str) -> np.ndarray:
    """uint8 (n, H, W) from encoded 8-bit grayscale images, all of one size.

    Threads decode contiguous runs of rows, awaited in row order, so the error raised is
    that of the first bad image whatever the timing (later runs are then cancelled).
    """
    if not blobs:
        return np.empty((0, 0, 0), dtype=np.uint8)
    first = _pil_decode(blobs[0], 0, column, split)
    x = np.empty((len(blobs), *first.shape), dtype=np.uint8)
    x[0] = first

    def decode(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            img = _pil_decode(blobs[i], i, column, split)
            if img.shape != first.shape:
                raise ValueError(
                    f"image_column={column!r}: images of split {split!r} must all have one "
                    f"size; image 0 is {first.shape[0]}x{first.shape[1]} (HxW) but image {i} "
                    f"is {img.shape[0]}x{img.shape[1]}"
                )
            x[i] = img

    workers = min(os.cpu_count() or 1, 8)
    bounds = np.linspace(1, len(blobs), 4 * workers + 1).astype(int).tolist()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="fnn-decode")
    try:
        for run in [pool.submit(decode, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
            run.result()
    finally:
        pool.shutdown(cancel_futures=True)
    return x


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
