"""Checkpoints: a whole `TrainState` in one .npz file, without pickle.

Layout (format version 1), every entry a plain NumPy array (.npy in a zip):

    params.{l}.w, params.{l}.b        the network, layer l = 0, 1, ...
    opt.{field}.{l}.w, ...{l}.b       each per-layer field of the optimizer state
    history.{field}                   the History arrays
    meta                              uint8: UTF-8 JSON with "format", "version",
                                      "sizes", "dtype", "config", "step", "epoch",
                                      "batch", "rng_state", "elapsed", "data_fingerprint",
                                      "opt_state" {"type", "count", "fields"}, "test"
                                      [loss, accuracy] (null for nan), "extra"
    checksum                          uint8 (32,): SHA-256 over every other entry's
                                      name, dtype, shape and bytes, in name order

Writing is atomic (a temporary file in the target's folder, fsync, then `os.replace`),
so a crash or Ctrl-C mid-write leaves the previous checkpoint intact; a temporary file
left by a killed writer (its process gone) is removed by the next write. A path that
is a symlink is written through: its target is replaced and the link kept. A state is
checked before it is written (`fnn.train.check_train_state`), and then against the
loader's own checks, so a save never replaces a good file with one `load_checkpoint`
refuses.

Loading treats the file as untrusted. The checksum guards against accidents, not
against a crafted file, so everything is checked, and checked before it is read: the
zip directory first (only stored or deflated entries, with exactly the expected
names; a deflated entry may expand at most MAX_EXPANSION times), then the metadata
(at most MAX_META_BYTES; exact keys, each of its type and range; the config a valid
TrainConfig), then each entry's .npy header against the dtype and shape that the
architecture and the step count imply, before its data is read. Memory stays bounded
by what the metadata's architecture needs; pickled (object) arrays are never loaded.
Any failure raises `CheckpointError` (a ValueError) saying which check failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from .hyperparams import INT_MAX
from .monitor import MONITORS, best_eval
from .optim import STATE_TYPES, empty_slots
from .params import Layer, Params, check_parameter_count, freeze
from .train import (
    Callback,
    Event,
    History,
    TrainConfig,
    TrainState,
    check_config,
    check_train_state,
    make_optimizer,
    on_events,
    rng_from_state,
    steps_per_epoch,
)
from .validate import check_dtype, check_params, describe

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_EXPANSION",
    "MAX_EXTRA_BYTES",
    "MAX_META_BYTES",
    "Checkpoint",
    "CheckpointError",
    "atomic_write",
    "best_checkpoint_callback",
    "checkpoint_callback",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "fnn.checkpoint"
FORMAT_VERSION = 1
#: The caller's `extra` metadata, as JSON, is at most this many bytes (4 MiB).
MAX_EXTRA_BYTES: int = 4 * 2**20
#: The whole metadata entry is at most this many bytes (8 MiB: extra and the rest).
MAX_META_BYTES: int = 8 * 2**20
#: A deflated entry may decompress to at most this many times its stored size (plus a
#: KiB): real float data shrinks far less, a zip bomb far more (deflate reaches 1032x).
MAX_EXPANSION: int = 64
_META_KEYS = ("format", "version", "sizes", "dtype", "config", "step", "epoch", "batch",
              "rng_state", "elapsed", "data_fingerprint", "opt_state", "extra", "test")
#: Keys a checkpoint written before they existed lacks ("test": before test metrics).
_META_OPTIONAL = ("test",)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, corrupted, of another format version or
    of another architecture than expected."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the TrainState and the caller's `extra` JSON metadata."""

    state: TrainState
    extra: dict


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Create or replace `path` with what `write(file)` writes, all or nothing.

    The bytes go to a temporary file `.{name}.{pid}.*.tmp` in the same folder, are
    flushed to disk, and the file is renamed over `path`; on any error (Ctrl-C too) the
    temporary file is removed and `path` is untouched. A symlink `path` is written
    through (its target is replaced, the link stays). After a write, temporary siblings
    older than it whose writing process is gone (killed mid-write) are removed.
    Returns `path`.
    """
    path = Path(path)
    target = _check_target(path)
    prefix = f".{target.name}."
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{prefix}{os.getpid()}.",
                               suffix=".tmp")
    started = os.stat(tmp).st_mtime_ns
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(target.parent, prefix, started)
    try:  # make the rename itself durable; not every platform can open a folder
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def _check_target(path: Path) -> Path:
    """The file `atomic_write` replaces (a symlink's target): a regular file or a new
    name, in an existing folder. Anything else raises ValueError: a folder fails the
    rename, and a FIFO or device would be replaced by a regular file."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.exists() and not target.is_file():
        kind = "a folder" if target.is_dir() else "not a regular file"
        raise ValueError(f"path: expected a regular file (or a new one) to write, got {path} "
                         f"({kind})")
    if not target.parent.is_dir():
        raise ValueError(f"path: expected a file in an existing folder, got {path} (no "
                         f"folder {target.parent})")
    return target


def _remove_stale_temporaries(folder: Path, prefix: str, before_ns: int) -> None:
    """Remove `{prefix}{pid}.*.tmp` files not newer than `before_ns` whose pid is not a live
    process: what a writer killed mid-write (SIGKILL) left. A live writer's file stays."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.[^/]*\.tmp\Z")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m:
            continue
        try:
            # Strictly newer only: file times are coarse (a clock tick of some ms), so a
            # file a writer killed just now can carry this write's very timestamp.
            if entry.stat(follow_symlinks=False).st_mtime_ns > before_ns or _alive(int(m[1])):
                continue
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove
            continue


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's live process (or unknowable): keep its file
    return True


def _checksum(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _layer_arrays(prefix: str, layers: Params) -> dict[str, np.ndarray]:
    out = {}
    for l, layer in enumerate(layers):
        out[f"{prefix}.{l}.w"] = layer.w
        out[f"{prefix}.{l}.b"] = layer.b
    return out


def _encode(state: TrainState, extra: Mapping[str, Any]) -> dict[str, np.ndarray]:
    state = check_train_state(state)  # (plain ints and floats too: JSON takes no NumPy's)
    params = state.params
    for l, layer in enumerate(params):
        for field, a in zip(Layer._fields, layer):
            if not np.isfinite(a).all():
                raise CheckpointError(
                    f"state.params[{l}].{field}: not finite; refusing to overwrite a good "
                    "checkpoint with a diverged network"
                )
    opt = state.opt_state
    if type(opt).__name__ not in STATE_TYPES:
        raise TypeError(
            f"state.opt_state: expected one of {sorted(STATE_TYPES)}, got {type(opt).__name__}"
        )
    arrays = _layer_arrays("params", params)
    slot_lengths = {}
    for field in opt._fields[1:]:
        slot = getattr(opt, field)
        slot_lengths[field] = len(slot)
        arrays.update(_layer_arrays(f"opt.{field}", slot))
    for field, a in zip(History._fields, state.history):
        arrays[f"history.{field}"] = np.asarray(a)
    config = state.config._asdict()
    config["sizes"] = list(config["sizes"])
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sizes": [params[0].w.shape[0], *(p.w.shape[1] for p in params)],
        "dtype": params[0].w.dtype.name,
        "config": config,
        "step": state.step,
        "epoch": state.epoch,
        "batch": state.batch,
        "rng_state": state.rng_state,
        "elapsed": state.elapsed,
        "data_fingerprint": state.data_fingerprint,
        "opt_state": {"type": type(opt).__name__, "count": opt.count, "fields": slot_lengths},
        "test": [None if np.isnan(v) else float(v) for v in (state.test_loss,
                                                             state.test_accuracy)],
        "extra": _check_extra(extra),
    }
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:  # e.g. an MT19937 rng_state's ndarray key
        raise TypeError(f"state: expected JSON-able metadata (rng_state, config), got an "
                        f"error: {exc}") from None
    arrays["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
    arrays["checksum"] = _checksum(arrays)
    return arrays


def _check_extra(extra: Any) -> dict:
    """`extra` as save_checkpoint stores it: a dict with str keys, JSON-able (no NaN),
    at most MAX_EXTRA_BYTES as JSON."""
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra: expected a dict of JSON-able values, got {describe(extra)}")
    extra = dict(extra)
    bad = [k for k in extra if not isinstance(k, str)]
    if bad:
        raise TypeError(f"extra: expected str keys (JSON's), got {describe(bad[0])} {bad[0]!r}")
    try:
        text = json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"extra: expected JSON-able values, got an error: {exc}") from None
    if len(text.encode()) > MAX_EXTRA_BYTES:
        raise ValueError(f"extra: expected at most {MAX_EXTRA_BYTES} bytes as JSON "
                         f"(fnn.checkpoint.MAX_EXTRA_BYTES), got {len(text.encode())}")
    return extra


def save_checkpoint(
    path: str | os.PathLike, state: TrainState, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write `state` (and JSON-able `extra` metadata) to the .npz file `path`, atomically.

    Refuses (CheckpointError) a state whose params are not finite, so a diverged run
    never overwrites its last good checkpoint; a state that is not one (TypeError or
    ValueError naming state.field, `fnn.train.check_train_state`) or that
    `load_checkpoint` would refuse (CheckpointError naming `state`), and leaves the old
    file as it was. Returns the path.
    """
    arrays = _encode(state, extra or {})
    _check_readable(arrays)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _check_readable(arrays: dict[str, np.ndarray]) -> None:
    """Run the loader's checks on the entries about to be written, so that a state it
    would refuse (a batch past the epoch's end, a history of the wrong dtype) never
    replaces a checkpoint that loads: raises CheckpointError naming `state`."""
    try:
        meta = _parse_meta(arrays["meta"])
        config, sizes, dtype, state_type, lengths = _check_meta(meta)
        expected = _expected_entries(meta, sizes, dtype, lengths)
        if set(arrays) != {*expected, "meta"}:
            raise CheckpointError(f"entries: expected {sorted(expected)}, got "
                                  f"{sorted(set(arrays) - {'meta'})}")
        for name, entry in expected.items():
            _check_header(name, arrays[name].dtype, arrays[name].shape, entry)
        _decode(arrays, meta, config, state_type, lengths)
    except CheckpointError as exc:
        raise CheckpointError(f"state: expected a state that load_checkpoint reads back, "
                              f"got one it refuses ({exc})") from None


class _Entry(NamedTuple):
    """What an entry must be: its dtype, and its shape or a test of it."""

    dtype: np.dtype
    shape: tuple[int, ...] | Callable[[tuple[int, ...]], bool]


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file (a run saves its first checkpoint at its "
            f"first epoch end, or at Ctrl-C once training has started; one stopped before "
            f"that has none: start it again without --resume)")
    try:
        z = zipfile.ZipFile(path)
    except Exception as exc:  # the file is untrusted: any failure to parse is a bad file
        raise CheckpointError(f"{path}: unreadable, truncated or corrupted checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    try:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError(f"{path}: corrupted checkpoint (a repeated entry name)")
        file_size = path.stat().st_size
        for info in infos:
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise CheckpointError(f"{path}: entry {info.filename!r} uses compression "
                                      f"method {info.compress_type}; expected stored (0) or "
                                      f"deflated (8)")
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{path}: entry {info.filename!r} is encrypted")
            stored = info.compress_size if info.compress_type else info.file_size
            limit = (info.compress_size * MAX_EXPANSION + 1024
                     if info.compress_type else info.compress_size)
            if info.file_size > limit or stored > file_size:
                raise CheckpointError(
                    f"{path}: entry {info.filename!r} declares {info.file_size} bytes from "
                    f"{info.compress_size} stored in a file of {file_size}: corrupted or a "
                    f"zip bomb (at most fnn.checkpoint.MAX_EXPANSION={MAX_EXPANSION} times)")
    except BaseException:
        z.close()
        raise
    return z


def _read_entry(z: zipfile.ZipFile, name: str, expected: _Entry) -> np.ndarray:
    """The array in entry `name`.npy, its header checked against `expected` before a byte
    of its data is read; never more than the header's nbytes."""
    info = z.getinfo(f"{name}.npy")
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"entry {name!r}: .npy format version {version}")
        _check_header(name, dtype, shape, expected)
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != f.tell() + nbytes:
            raise CheckpointError(f"entry {name!r}: its header says {nbytes} bytes of data, "
                                  f"the entry holds {info.file_size - f.tell()}")
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):  # reading to the end also checks the CRC
            raise CheckpointError(f"entry {name!r}: truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _check_header(name: str, dtype: np.dtype, shape: tuple[int, ...],
                  expected: _Entry) -> None:
    if dtype != expected.dtype:  # an object (pickle) dtype never matches
        raise CheckpointError(f"entry {name!r}: expected dtype {expected.dtype}, got {dtype}")
    ok = shape == expected.shape if isinstance(expected.shape, tuple) else (
        len(shape) == 1 and expected.shape(shape))
    if not ok:
        want = expected.shape if isinstance(expected.shape, tuple) else "another"
        raise CheckpointError(f"entry {name!r}: expected shape {want}, got {shape}")


def _fail(name: str, expected: str, value: Any) -> CheckpointError:
    shown = repr(value)
    return CheckpointError(f"meta.{name}: expected {expected}, got "
                           f"{shown if len(shown) <= 80 else shown[:80] + '...'}")


def _meta_int(meta: dict, name: str, where: str = "") -> int:
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
        raise _fail(where + name, f"an int in [0, {INT_MAX}]", value)
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_meta(raw: np.ndarray) -> dict:
    """The metadata dict, its format and version checked (first: a file of another
    version is named as such), then exactly the keys of this version."""
    try:
        meta = json.loads(raw.tobytes().decode(), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"corrupted metadata ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise _fail("", "a JSON object", type(meta).__name__)
    fmt, version = meta.get("format"), meta.get("version")
    if fmt != FORMAT:
        raise CheckpointError(f"not an fnn checkpoint (format {fmt!r})")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"meta.version: expected the int {FORMAT_VERSION}, got "
                              f"{type(version).__name__} {version!r}")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format version {version}; this fnn reads version "
                              f"{FORMAT_VERSION}")
    if not set(_META_KEYS) - set(_META_OPTIONAL) <= set(meta) <= set(_META_KEYS):
        missing = sorted(set(_META_KEYS) - set(_META_OPTIONAL) - set(meta))
        extra = sorted(set(meta) - set(_META_KEYS))
        raise CheckpointError(f"meta: expected the keys {list(_META_KEYS)}, got "
                              f"{'missing ' + str(missing) if missing else ''}"
                              f"{' and ' if missing and extra else ''}"
                              f"{'unknown ' + str(extra) if extra else ''}")
    return meta


def _meta_config(meta: dict) -> TrainConfig:
    fields = meta["config"]
    if not isinstance(fields, dict):
        raise _fail("config", "a JSON object of TrainConfig fields", fields)
    unknown = sorted(set(fields) - set(TrainConfig._fields))
    if unknown:
        raise CheckpointError(f"meta.config: expected TrainConfig fields, got unknown "
                              f"{unknown}")
    # JSON has no tuples: the tuple-valued fields come back as lists. A checkpoint from
    # before validation splits trained on all of its data: val_fraction 0, not 1/12.
    fields = {"val_fraction": 0.0,
              **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}}
    try:  # a field missing (a checkpoint from before it existed) takes its default
        return check_config(TrainConfig(**fields))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"meta.{exc}") from None


_FINGERPRINT = re.compile(r"n=(\d{1,19}) d=(\d{1,19}) ")


def _check_meta(meta: dict) -> tuple[TrainConfig, list[int], np.dtype, type, dict]:
    """Every metadata field's type and range; returns (config, sizes, dtype, the
    optimizer state type, its slot lengths)."""
    sizes = meta["sizes"]
    if (not isinstance(sizes, list) or len(sizes) < 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= INT_MAX
            for s in sizes)):
        raise _fail("sizes", "a list of at least two positive ints", sizes)
    try:
        check_parameter_count(sizes, "meta.sizes")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if meta["dtype"] not in ("float32", "float64"):
        raise _fail("dtype", "'float32' or 'float64'", meta["dtype"])
    config = _meta_config(meta)
    if list(config.sizes) != sizes or config.dtype != meta["dtype"]:
        raise CheckpointError(f"meta.config: sizes {list(config.sizes)} and dtype "
                              f"{config.dtype} do not match meta.sizes {sizes} and meta.dtype "
                              f"{meta['dtype']}")
    epoch, batch = _meta_int(meta, "epoch"), _meta_int(meta, "batch")
    _meta_int(meta, "step")
    fingerprint = meta["data_fingerprint"]
    if not isinstance(fingerprint, str) or len(fingerprint) > 1000:
        raise _fail("data_fingerprint", "a str (of at most 1000 characters)", fingerprint)
    m = _FINGERPRINT.match(fingerprint)
    if m:  # fit writes "n=... d=... ...": the position must be one an epoch of n reaches
        n, d = int(m[1]), int(m[2])
        n_train = n - round(n * config.val_fraction)  # fit trains on the rest of n
        per_epoch = steps_per_epoch(n_train, config.batch_size, config.drop_last)
        if d != sizes[0] or per_epoch < 1:
            raise _fail("data_fingerprint", f"data of {sizes[0]} features and at least one "
                        f"batch", fingerprint)
        if batch >= per_epoch:
            raise _fail("batch", f"a batch in [0, {per_epoch - 1}] ({per_epoch} per epoch)",
                        batch)
    if epoch > config.epochs:
        raise _fail("epoch", f"at most config.epochs={config.epochs} epochs done", epoch)
    elapsed = meta["elapsed"]
    if (isinstance(elapsed, bool) or not isinstance(elapsed, (int, float))
            or not 0 <= elapsed < math.inf):
        raise _fail("elapsed", "seconds, a finite number >= 0", elapsed)
    try:
        rng_from_state(meta["rng_state"])
    except Exception as exc:  # NumPy's own checks of a state dict raise many types
        raise _fail("rng_state", f"a NumPy bit generator's state ({type(exc).__name__}: "
                    f"{exc})", meta["rng_state"]) from None
    if not isinstance(meta["extra"], dict):
        raise _fail("extra", "a JSON object", meta["extra"])
    test = meta.setdefault("test", [None, None])
    if not isinstance(test, list) or len(test) != 2 or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))
            for v in test):
        raise _fail("test", "[loss, accuracy], each a number or null", test)
    opt = meta["opt_state"]
    if not isinstance(opt, dict) or set(opt) != {"type", "count", "fields"}:
        raise _fail("opt_state", "an object with keys type, count, fields", opt)
    # The state the config's optimizer makes: its type and which slots it keeps.
    tiny = tuple(Layer(freeze(np.zeros((1, 1))), freeze(np.zeros(1))) for _ in sizes[1:])
    template = make_optimizer(config._replace(schedule="constant"), 1)[0].init(tiny)
    state_type = type(template)
    if opt["type"] != state_type.__name__:
        raise _fail("opt_state.type", f"{state_type.__name__!r} (optimizer "
                    f"{config.optimizer!r})", opt["type"])
    _meta_int(opt, "count", "opt_state.")
    empty = empty_slots(template)
    lengths = {f: 0 if f in empty else len(sizes) - 1 for f in state_type._fields[1:]}
    if opt["fields"] != lengths:
        raise _fail("opt_state.fields", str(lengths), opt["fields"])
    return config, sizes, np.dtype(meta["dtype"]), state_type, lengths


def _expected_entries(meta: dict, sizes: list[int], dtype: np.dtype,
                      lengths: dict[str, int]) -> dict[str, _Entry]:
    def layers(prefix: str, n: int) -> dict[str, _Entry]:
        out = {}
        for l in range(n):
            out[f"{prefix}.{l}.w"] = _Entry(dtype, (sizes[l], sizes[l + 1]))
            out[f"{prefix}.{l}.b"] = _Entry(dtype, (sizes[l + 1],))
        return out

    step = meta["step"]
    f64, i64, u8 = np.dtype("<f8"), np.dtype("<i8"), np.dtype("u1")
    entries = layers("params", len(sizes) - 1)
    for field, n in lengths.items():
        entries.update(layers(f"opt.{field}", n))

    def evals(shape: tuple[int, ...]) -> bool:
        return shape[0] <= step + 1  # at most one evaluation per step count

    for field in History._fields:
        kind = {"loss": f64, "lr": f64, "eval_step": i64}.get(field, f64)
        entries[f"history.{field}"] = _Entry(kind, (step,) if field in ("loss", "lr")
                                             else evals)
    entries["checksum"] = _Entry(u8, (32,))
    return entries


def read_checkpoint(
    path: str | os.PathLike,
    *,
    sizes: tuple[int, ...] | list[int] | None = None,
    dtype: str | np.dtype | type | None = None,
) -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint`: Checkpoint(state, extra).

    sizes, dtype: the architecture expected; a checkpoint of another raises
    CheckpointError naming both. Every check is described in the module docstring;
    any failure is a CheckpointError naming the file and what failed.
    """
    if sizes is not None:
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (list, tuple)) or any(
                isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in sizes):
            raise TypeError(f"sizes: expected a list of ints such as [784, 64, 10], got "
                            f"{describe(sizes)} {sizes!r}")
        sizes = [int(s) for s in sizes]
    expected_dtype = None if dtype is None else check_dtype(dtype).name
    path = Path(path)
    try:
        with _open_zip(path) as z:
            return _read(z, sizes, expected_dtype)
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(f"{path}:")
                              else f"{path}: {message}") from None
    except Exception as exc:  # zlib, struct, NumPy header parsing: the file is bad
        raise CheckpointError(f"{path}: unreadable, truncated or corrupted checkpoint "
                              f"({type(exc).__name__}: {exc})") from None


def _read(z: zipfile.ZipFile, sizes: list[int] | None, dtype: str | None) -> Checkpoint:
    names = set(z.namelist())
    if "meta.npy" not in names or "checksum.npy" not in names:
        raise CheckpointError("not an fnn checkpoint (no 'meta' or 'checksum' entry)")
    raw = _read_entry(z, "meta", _Entry(np.dtype("u1"), lambda s: s[0] <= MAX_META_BYTES))
    meta = _parse_meta(raw)
    config, meta_sizes, meta_dtype, state_type, lengths = _check_meta(meta)
    if sizes is not None and sizes != meta_sizes:
        raise CheckpointError(f"architecture {meta_sizes} does not match the expected {sizes}")
    if dtype is not None and dtype != meta_dtype.name:
        raise CheckpointError(f"dtype {meta_dtype.name} does not match the expected {dtype}")
    expected = _expected_entries(meta, meta_sizes, meta_dtype, lengths)
    want = {f"{k}.npy" for k in expected} | {"meta.npy"}
    if names != want:
        missing, unknown = sorted(want - names), sorted(names - want)
        raise CheckpointError(f"entries: expected those of {meta_sizes} with "
                              f"{state_type.__name__}, got "
                              + (f"missing {missing[:3]}" if missing else "")
                              + (" and " if missing and unknown else "")
                              + (f"unknown {unknown[:3]}" if unknown else ""))
    arrays = {name: _read_entry(z, name, entry) for name, entry in expected.items()}
    arrays["meta"] = raw
    stored = arrays.pop("checksum")
    if not np.array_equal(stored, _checksum(arrays)):
        raise CheckpointError("checksum mismatch, the file is corrupted")
    return _decode(arrays, meta, config, state_type, lengths)


def _layers(arrays: Mapping[str, np.ndarray], prefix: str, n: int) -> Params:
    # The arrays are read-only views of the bytes read (np.frombuffer): params as they are.
    return tuple(Layer(arrays[f"{prefix}.{l}.w"], arrays[f"{prefix}.{l}.b"])
                 for l in range(n))


def _decode(arrays: Mapping[str, np.ndarray], meta: dict, config: TrainConfig,
            state_type: type, lengths: dict[str, int]) -> Checkpoint:
    """Rebuild the state from checked, checksum-verified arrays and metadata."""
    params = _layers(arrays, "params", len(meta["sizes"]) - 1)
    try:
        check_params(params)  # finite too: a NaN weight is refused
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    slots = [_layers(arrays, f"opt.{f}", n) for f, n in lengths.items()]
    history = History(*(arrays[f"history.{f}"] for f in History._fields))
    n_evals = {a.shape[0] for a in history[2:]}
    if len(n_evals) != 1:
        raise CheckpointError(f"history: expected eval arrays of one length, got "
                              f"{sorted(n_evals)}")
    steps = history.eval_step
    if steps.size and (steps.min() < 0 or steps.max() > meta["step"]
                       or (np.diff(steps) <= 0).any()):
        raise CheckpointError(f"history.eval_step: expected increasing steps in [0, "
                              f"{meta['step']}], got {steps[:5].tolist()}...")
    state = TrainState(
        params=params,
        opt_state=state_type(meta["opt_state"]["count"], *slots),
        rng_state=meta["rng_state"],
        step=meta["step"],
        epoch=meta["epoch"],
        batch=meta["batch"],
        config=config,
        history=history,
        elapsed=float(meta["elapsed"]),
        data_fingerprint=meta["data_fingerprint"],
        # (absent from checkpoints written before test metrics were kept)
        test_loss=_nan_for_none(meta["test"][0]),
        test_accuracy=_nan_for_none(meta["test"][1]),
    )
    return Checkpoint(state, meta["extra"])


def _nan_for_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def load_checkpoint(
    path: str | os.PathLike,
    *,
    sizes: tuple[int, ...] | list[int] | None = None,
    dtype: str | np.dtype | type | None = None,
) -> TrainState:
    """The TrainState in a checkpoint file; see `read_checkpoint`."""
    return read_checkpoint(path, sizes=sizes, dtype=dtype).state


def checkpoint_callback(
    path: str | os.PathLike, *, every: int = 0, extra: Mapping[str, Any] | None = None
) -> Callback:
    """A `fit` callback that saves the run to `path` at each epoch end, at the end (with
    the test metrics), and every `every` steps when every > 0 (fit ends its compiled
    chunks there, so the steps saved are the same on either path)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"every: expected an int >= 0, got {every!r}")
    saved = [-1]  # the step last saved, so an epoch end that is also the end saves once

    @on_events(*(("chunk",) if every else ()), "epoch", "end", every=every)
    def callback(event: Event) -> None:
        due = event.kind in ("epoch", "end") or (
            event.kind == "chunk" and every and event.step % every == 0)
        if event.kind == "epoch" and event.step == event.total_steps:
            return  # the end follows at this step, and its state has the test metrics
        if not due:
            return
        state = event.state()
        # An early stop at an epoch end was saved there, without the test metrics.
        if event.step != saved[0] or (event.kind == "end" and not math.isnan(state.test_loss)):
            save_checkpoint(path, state, extra=extra)
            saved[0] = event.step

    return callback


def best_checkpoint_callback(
    path: str | os.PathLike, *, monitor: str = "val_loss",
    extra: Mapping[str, Any] | None = None
) -> Callback:
    """A `fit` callback that saves the run to `path` at each evaluation that is the best
    so far by `monitor` ("val_loss" or "val_accuracy"; a strict improvement, as early
    stopping counts it), the step-0 evaluation included. A resumed run takes its best
    from the history, so it only replaces the file with a better evaluation."""
    if monitor not in MONITORS:
        raise ValueError(f"monitor: expected one of {tuple(MONITORS)}, got {monitor!r}")
    field, sign = MONITORS[monitor]
    best = [math.nan]

    @on_events("start", "eval")
    def callback(event: Event) -> None:
        if event.kind == "start":
            state = event.state()
            values = getattr(state.history, field).tolist()
            i = best_eval(values, monitor)
            if i is None:
                return
            best[0] = values[i]
            if state.history.eval_step[i] == state.step:  # a fresh run's step-0 evaluation
                save_checkpoint(path, state, extra=extra)
        elif event.kind == "eval":
            value = event.eval_loss if field == "eval_loss" else event.eval_accuracy
            if not math.isnan(value) and (math.isnan(best[0]) or sign * value > sign * best[0]):
                best[0] = value
                save_checkpoint(path, event.state(), extra=extra)

    return callback
