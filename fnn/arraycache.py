"""The array cache behind `fnn.load_mnist`: decoded images, kept so they are decoded once.

Entries are one split's uint8 images (n, H, W) and int64 labels (n,). They are kept in
this process (a small LRU, read-only arrays shared by every caller) and on disk as two
``.npy`` files in a folder per entry, written atomically (a directory rename), so a
reader sees a whole entry or none and a damaged one is dropped and rebuilt. An entry's
name is a digest of what identifies the data (source, split, columns) followed by a
digest of the source's state (sizes and mtimes of its files, the reader's version): a new
state gets a new name, and replaces the entries of the old one.

Kept apart from `fnn.data` because it knows nothing of datasets or images: NumPy and the
file system only, so a warm load imports neither `datasets` nor Pillow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["clear_memory", "entry_key", "files_state", "folder_state", "get", "has", "put"]

# Bump when the cached arrays' meaning or file format changes, so old entries are ignored.
_CACHE_FORMAT = 1
_MEMORY_CACHE_SIZE = 8  # entries are one split's uint8 images + labels (MNIST: 47 + 8 MB)

Arrays = tuple[np.ndarray, np.ndarray]
_memory: OrderedDict[str, Arrays] = OrderedDict()
_memory_lock = threading.Lock()


def folder_state(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every non-hidden file, as datasets sees them."""
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        paths += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return files_state(paths, folder)


def files_state(paths: Sequence[str], folder: Path | None = None) -> list[tuple[str, int, int]]:
    """(path, relative to `folder` if given, size, mtime_ns) of each file."""
    stats = [os.stat(p) for p in paths]
    names = [os.path.relpath(p, folder) for p in paths] if folder else list(paths)
    return [(n, st.st_size, st.st_mtime_ns) for n, st in zip(names, stats)]


def entry_key(identity: object, state: object, version: str) -> tuple[str, str]:
    """(entry prefix, full entry name) of JSON-able `identity` and `state`: the prefix
    names the data (source, split, columns), so a new state of it (or a new `version` of
    the reader) replaces the old entry instead of piling up."""
    prefix = _digest([_CACHE_FORMAT, identity])
    return prefix, f"{prefix}-{_digest([state, version])}"


def get(root: Path, name: str) -> Arrays | None:
    """The entry `name` from memory, else from the folder `root` (then kept in memory)."""
    with _memory_lock:
        hit = _memory.get(name)
        if hit is not None:
            _memory.move_to_end(name)
            return hit
    hit = _disk_get(root, name)
    if hit is not None:
        _memory_put(name, hit)
    return hit


def has(root: Path, name: str) -> bool:
    """Whether the entry `name` is in memory or under `root`, without reading it."""
    with _memory_lock:
        if name in _memory:
            return True
    return (root / name).is_dir()


def put(root: Path, key: tuple[str, str], arrays: Arrays) -> None:
    """Keep `arrays` (made read-only) as the entry `key` in memory and under `root`,
    replacing the entries of the same prefix. A disk that cannot be written is a
    warning, not an error: the caller has its arrays."""
    prefix, name = key
    _memory_put(name, arrays)
    _disk_put(root, prefix, name, *arrays)


def clear_memory() -> None:
    """Forget the in-process entries (as a new process would start)."""
    with _memory_lock:
        _memory.clear()


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def _memory_put(key: str, arrays: Arrays) -> None:
    # Read-only, since every caller shares them; callers get scaled copies.
    for a in arrays:
        a.setflags(write=False)
    with _memory_lock:
        _memory[key] = arrays
        _memory.move_to_end(key)
        while len(_memory) > _MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)


def _disk_get(root: Path, name: str) -> Arrays | None:
    entry = root / name
    if not entry.is_dir():
        return None
    try:
        x = np.load(entry / "x.npy", allow_pickle=False)
        y = np.load(entry / "y.npy", allow_pickle=False)
        ok = (x.dtype, x.ndim, y.dtype, y.ndim) == (np.uint8, 3, np.int64, 1)
        ok = ok and len(x) == len(y)
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
            stacklevel=5,  # load_mnist's caller
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
